"""Computing the chosen label-free signals on a batch of finished runs, and what they cost.

Called by the rollout function after the trajectories are collected (so the model calls of
``self_judge`` are batched like any other generation, and the values reach the reward functions as
per-row fields) and by ``anchorloop audit``. Writes ``Trajectory.signals`` in place.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field

from training.belief import BeliefScorer, belief_gain
from training.judge import GroupJudgement, SelfJudge
from training.signals import (
    FIRST,
    NEEDS_MODEL,
    annotate_cheap,
    check_signals,
    final_answer,
    first_answer,
    groups_of,
    key_of,
)
from training.trajectory import Trajectory


class SignalCost(BaseModel):
    """Extra model calls (judge generations, belief forward passes) and wall seconds one signal took."""

    calls: int = 0
    seconds: float = 0.0


class Annotation(BaseModel):
    costs: dict[str, SignalCost] = Field(default_factory=dict)
    judgements: list[GroupJudgement] = Field(default_factory=list)


async def annotate(trajectories: Sequence[Trajectory], env: Any, signals: Sequence[str], *, policy: Any = None,
                   first_answers: bool = True, group_size: int | None = None) -> Annotation:
    """Write each of ``signals`` into every run's ``signals`` (and, with ``first_answers``, its value for
    the first answer under ``NAME_first``). ``self_judge`` generates with ``policy``; ``belief`` runs
    ``policy.model`` (an in-process model: ``HFPolicy``). Groups: ``group_size`` consecutive rows, or
    (``None``) all the runs of a task."""
    names = check_signals(signals)
    out = Annotation()
    for name in (n for n in names if n not in NEEDS_MODEL):
        started = time.perf_counter()
        annotate_cheap(trajectories, env, [name], group_size)
        out.costs[name] = SignalCost(seconds=time.perf_counter() - started)
    if "self_judge" in names:
        judge = SelfJudge(_need(policy, "self_judge"), key=key_of(env))
        out.judgements = await _judge(judge, trajectories, first_answers, group_size)
        out.costs["self_judge"] = SignalCost(calls=judge.calls, seconds=judge.seconds)
    if "belief" in names:
        model = getattr(_need(policy, "belief"), "model", None)
        if model is None:
            raise ValueError("The belief signal reads log-probabilities from the model's weights in this process; "
                             f"{type(policy).__name__} has none (use HFPolicy, not a model server), or drop belief.")
        scorer = BeliefScorer(model, policy.tokenizer)
        for traj in trajectories:
            _belief(scorer, traj, first_answers)
        out.costs["belief"] = SignalCost(calls=scorer.forward_passes, seconds=scorer.seconds)
    return out


def _need(policy: Any, name: str) -> Any:
    if policy is None:
        raise ValueError(f"The {name} signal calls the model: pass the policy.")
    return policy


async def _judge(judge: SelfJudge, trajectories: Sequence[Trajectory], first_answers: bool,
                 group_size: int | None) -> list[GroupJudgement]:
    """One judgement per group over the union of its answers (first answers too, when asked); each run
    gets its answer's score, 0 without an answer."""
    groups = groups_of(trajectories, group_size)
    asks = []
    for group in groups:
        runs = [trajectories[i] for i in group]
        answers = [a for t in runs for a in (final_answer(t), first_answer(t) if first_answers else None) if a]
        asks.append((runs[0].task_id, runs[0].question, answers))
    judgements = await judge.judge_groups(asks)
    for group, judgement in zip(groups, judgements, strict=True):
        for i in group:
            traj = trajectories[i]
            for pick, suffix in ((final_answer, ""), (first_answer, FIRST))[:2 if first_answers else 1]:
                key = judge.key(pick(traj))
                traj.signals["self_judge" + suffix] = judgement.scores.get(key, 0.0) if key is not None else 0.0
    return judgements


def _belief(scorer: BeliefScorer, traj: Trajectory, first_answers: bool) -> None:
    if not traj.attempts:
        traj.signals["belief"] = traj.signals["belief" + FIRST] = 0.0
        return
    last, first = traj.attempts[-1], traj.attempts[0]
    # an answer written in the first turn has one point, and a gain of 0: no pass is spent on it
    curve = scorer.curve(traj, last.answer, last.turn) if last.turn >= 1 else []
    traj.signals["belief"] = belief_gain(curve)
    traj.belief_curve = curve
    if not first_answers:
        return
    if first.answer.strip() == last.answer.strip():  # the same text: its curve, cut at the first turn
        first_curve = curve[: first.turn + 1] if first.turn >= 0 else []
    else:
        first_curve = scorer.curve(traj, first.answer, first.turn) if first.turn >= 1 else []
    traj.signals["belief" + FIRST] = belief_gain(first_curve)
