"""Auditing label-free signals against an answer key, before anyone trains on them.

    report = audit(policy, get_env("arithmetic"), n=32, generations=4)
    report.save("runs/audit")      # audit.json, audit.png, trajectories.jsonl
    console.print(report.table())
    again = rescore(policy, get_env("arithmetic"), "runs/audit")   # the same runs, the signals as they are now

On tasks that do have ground truth, G runs per task are sampled with the agent; each signal is
computed per run exactly as training computes it (``training.labelfree``) and compared with the
env's score of the final answer. Per signal: precision of "the signal says right" (how often a run
it pays is right: compare with the accuracy, the precision of paying every run), recall (how many
right runs it pays), AUROC for the graded ones, and what it cost in model calls and seconds. For
the judge: how often it prefers a wrong answer over a right one, how often it prefers whichever
answer its group wrote more often, its position bias, and how many replies it gave no verdict in.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from training.judge import GroupJudgement
from training.labelfree import SignalCost, annotate
from training.metrics import Rate, compute_metrics, wilson
from training.signals import NEEDS_MODEL, SIGNALS, AnswerKey, answer_key, check_signals, final_answer, groups_of, key_of
from training.trajectory import Trajectory

AUDIT_FILE = "audit.json"
AUDIT_PLOT = "audit.png"
TRAJECTORIES_FILE = "trajectories.jsonl"

# when a signal "says right", and its rule in words; graded signals also get an AUROC
SAYS_RIGHT: dict[str, tuple[str, Callable[[float], bool]]] = {
    "majority": ("= 1: the group's unique most common answer", lambda v: v >= 0.5),
    "self_judge": ("> 0.5: wins more than it loses", lambda v: v > 0.5),
    "tool_check": ("= 1: backed by its own tool output", lambda v: v >= 0.5),
    "belief": ("> 0: belief in it rose", lambda v: v > 0.0),
}
GRADED = ("self_judge", "belief")


class AuditRow(BaseModel):
    """One run: its final answer, whether the answer key says it is right, and each signal's value."""

    task_id: str
    group: int
    answer: str | None
    right: bool
    signals: dict[str, float]


class SignalAudit(BaseModel):
    signal: str
    says_right_when: str
    n: int
    says_right: int  # runs the signal pays
    true_positives: int  # … that are right
    right: int  # runs that are right
    precision: Rate  # P(right | says right)
    recall: Rate  # P(says right | right)
    auroc: float | None = None  # graded signals: P(a right run scores above a wrong one), ties half
    cost: SignalCost = Field(default_factory=SignalCost)


class JudgeBias(BaseModel):
    """How the self-judge decides, over the pairs of its groups' distinct final answers."""

    pairs: int
    consistency: Rate  # pairs whose two orders chose the same answer
    unparsed: Rate  # replies naming neither letter or both (no vote)
    first_position: Rate  # parsed replies choosing the answer shown first (0.5: no position bias)
    wrong_over_right: Rate  # in pairs of a right and a wrong answer: replies choosing the wrong one
    wrong_over_right_pairs: Rate  # … those pairs judged consistently for the wrong one, per consistent pair
    prefers_common: Rate  # consistent pairs of answers written unequally often: the winner is the commoner


class AuditReport(BaseModel):
    model: str = ""
    env: str
    split: str
    n: int
    generations: int
    seed: int
    signals: list[str]
    agent: dict[str, Any] = Field(default_factory=dict)
    runs: int
    accuracy: Rate  # right final answers: the precision of a signal that pays every run
    confirmatory_rate: Rate  # verify steps that kept the answer
    audits: list[SignalAudit]
    judge: JudgeBias | None = None
    rollout_seconds: float = 0.0
    rollout_turns: int = 0  # model calls the runs themselves made, to set the signals' calls against
    rows: list[AuditRow]
    created: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    sampled: str = ""  # when the runs were sampled, where that was before ``created`` (``rescore``)
    trajectories: list[Trajectory] = Field(default_factory=list, exclude=True)

    def save(self, out_dir: str | Path) -> Path:
        """Write ``audit.json``, ``audit.png`` and ``trajectories.jsonl`` into ``out_dir``; returns the JSON's path."""
        from training.audit_view import audit_plot
        from training.trajectory import save_jsonl

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / AUDIT_FILE
        path.write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")
        (out_dir / AUDIT_PLOT).write_bytes(audit_plot(self))
        save_jsonl(self.trajectories, out_dir / TRAJECTORIES_FILE)
        return path

    def table(self) -> Any:
        from training.audit_view import audit_table

        return audit_table(self)

    @classmethod
    def load(cls, path: str | Path) -> AuditReport:
        path = Path(path)
        return cls.model_validate_json((path / AUDIT_FILE if path.is_dir() else path).read_text(encoding="utf-8"))


def audit(policy: Any, env: Any, *, n: int, generations: int = 4, signals: Sequence[str] = SIGNALS,
          split: str = "test", seed: int = 0, temperature: float = 0.8, model: str = "", console: Any = None,
          **agent_kwargs: Any) -> AuditReport:
    """Sample ``generations`` runs on each of ``n`` tasks of ``env`` with ``policy``, compute ``signals`` and
    compare them with ``env.score``. ``agent_kwargs`` go to ``build_agent``; without ``sampling``, turns are
    sampled at ``temperature`` (runs of a task must differ for a group to say anything)."""
    from agent.policy import SamplingParams
    from training.eval import _jsonable
    from training.runner import run_tasks

    names = check_signals(signals)
    if generations < 2:
        raise ValueError("The audit compares the runs of each task: --num-generations must be at least 2.")
    agent_kwargs.setdefault("sampling", SamplingParams(temperature=temperature))
    tasks = env.tasks(split, n=n, seed=seed)
    result = run_tasks(policy, env, tasks, generations=generations, console=console,
                       description=f"{env.name} · audit runs", **agent_kwargs)
    return audit_runs(policy, env, result.trajectories, generations=generations, signals=names, split=split,
                      seed=seed, model=model, agent=_jsonable(agent_kwargs), rollout_seconds=result.seconds,
                      console=console)


def rescore(policy: Any, env: Any, saved: str | Path, *, signals: Sequence[str] | None = None, model: str = "",
            console: Any = None) -> AuditReport:
    """A saved audit (``AuditReport.save``'s folder) computed again on its own saved runs, by the signals as
    they are now: after a change to a signal, or to how ``env`` tells answers apart, nothing is sampled
    again. The runs, their truth and the seconds they took are the saved ones; a signal not in ``signals``
    keeps its saved values. ``model`` names ``policy`` (``None`` when only signals without a model are
    rescored): it must be the model that sampled the runs, since the judge and the belief read them."""
    from training.trajectory import load_jsonl

    saved = Path(saved)
    before = AuditReport.load(saved)
    names = check_signals(signals or before.signals)
    problem = rescore_problem(before, env.name, names, model)
    if problem:
        raise ValueError(f"Cannot rescore the audit in {saved}: {problem}")
    runs = load_jsonl(saved / TRAJECTORIES_FILE)
    for t in runs:  # what the signals wrote then
        t.signals, t.belief_curve = {}, []
    report = audit_runs(policy, env, runs, generations=before.generations, signals=names, split=before.split,
                        seed=before.seed, model=before.model, agent=before.agent,
                        rollout_seconds=before.rollout_seconds, console=console)
    kept = [n for n in before.signals if n not in names]
    for t, row, old in zip(runs, report.rows, before.rows, strict=True):
        row.signals |= {n: old.signals[n] for n in kept}
        t.signals |= {n: old.signals[n] for n in kept}
    report.audits += [a for a in before.audits if a.signal in kept]
    report.signals += kept
    report.judge = report.judge or before.judge
    report.sampled = before.sampled or before.created
    return report


def rescore_problem(before: AuditReport, env: str, signals: Sequence[str], model: str) -> str | None:
    """Why ``before``'s runs cannot be rescored on env ``env`` with ``model`` for ``signals`` (``None`` when
    they can): the env must be the runs' own, and so must the model when a signal reads the runs with it."""
    if before.env != env:
        return f"its runs were sampled on {before.env!r}: pass --env {before.env}."
    if any(n in NEEDS_MODEL for n in signals) and before.model and model != before.model:
        return (f"its runs were sampled by {before.model!r}, and the judge and the belief read them with that "
                f"model: pass --model {before.model}.")
    return None


def audit_runs(policy: Any, env: Any, runs: list[Trajectory], *, generations: int,
               signals: Sequence[str] = SIGNALS, split: str = "test", seed: int = 0, model: str = "",
               agent: dict[str, Any] | None = None, rollout_seconds: float = 0.0, console: Any = None) -> AuditReport:
    """The audit of runs already sampled (``generations`` per task, scored by ``env``): each signal computed
    as training computes it, then compared with the runs' truth."""
    names = check_signals(signals)
    work = annotate(runs, env, names, policy=policy, first_answers=False)
    if console is not None:
        with console.status(f"computing {', '.join(names)} …"):
            annotation = asyncio.run(work)
    else:
        annotation = asyncio.run(work)
    rows = [AuditRow(task_id=t.task_id, group=t.group, answer=final_answer(t), right=t.last_right,
                     signals={s: t.signals[s] for s in names}) for t in runs]
    metrics = compute_metrics(runs)
    return AuditReport(
        model=model, env=env.name, split=split, n=len(groups_of(runs)), generations=generations, seed=seed,
        signals=names, agent=agent or {}, runs=len(runs), accuracy=metrics.acc_t2,
        confirmatory_rate=metrics.confirmatory_rate,
        audits=[signal_audit(s, rows, annotation.costs.get(s, SignalCost())) for s in names],
        judge=judge_bias(annotation.judgements, runs, key_of(env)) if "self_judge" in names else None,
        rollout_seconds=rollout_seconds, rollout_turns=sum(t.turns for t in runs), rows=rows, trajectories=runs,
    )


def signal_audit(name: str, rows: Sequence[AuditRow], cost: SignalCost | None = None) -> SignalAudit:
    """Precision and recall (Wilson intervals) of ``name`` saying right, from the rows' values and truths."""
    rule, says = SAYS_RIGHT[name]
    paid = [says(r.signals[name]) for r in rows]
    right = [r.right for r in rows]
    hits = sum(p and r for p, r in zip(paid, right, strict=True))
    return SignalAudit(
        signal=name, says_right_when=rule, n=len(rows), says_right=sum(paid), true_positives=hits, right=sum(right),
        precision=wilson(hits, sum(paid)), recall=wilson(hits, sum(right)),
        auroc=auroc([r.signals[name] for r in rows], right) if name in GRADED else None,
        cost=cost or SignalCost(),
    )


def auroc(scores: Sequence[float], truths: Sequence[bool]) -> float | None:
    """P(score of a right run > score of a wrong run), ties counted half; ``None`` without both kinds."""
    positives = [s for s, t in zip(scores, truths, strict=True) if t]
    negatives = [s for s, t in zip(scores, truths, strict=True) if not t]
    if not positives or not negatives:
        return None
    wins = sum((p > q) + 0.5 * (p == q) for p in positives for q in negatives)
    return wins / (len(positives) * len(negatives))


def judge_bias(judgements: Sequence[GroupJudgement], runs: Sequence[Trajectory],
               key: AnswerKey = answer_key) -> JudgeBias:
    """The judge's habits, with each answer's truth and frequency read from its group's runs (answers told
    apart by ``key``, as the judge told them apart)."""
    right: dict[tuple[str, str], bool] = {}
    written: Counter[tuple[str, str]] = Counter()
    for t in runs:
        shown = key(final_answer(t))
        if shown is not None:
            right[(t.task_id, shown)] = right.get((t.task_id, shown), False) or t.last_right
            written[(t.task_id, shown)] += 1
    pairs = [(j.task_id, v) for j in judgements for v in j.verdicts]
    replies = [(v.forward, "A") for _, v in pairs] + [(v.backward, "A") for _, v in pairs]
    parsed = [vote for vote, _ in replies if vote is not None]
    mixed = [(task, v) for task, v in pairs if right[(task, v.first)] != right[(task, v.second)]]
    mixed_votes = [(task, vote) for task, v in mixed for vote in v.votes()]
    mixed_consistent = [(task, v.winner) for task, v in mixed if v.consistent]
    unequal = [(task, v) for task, v in pairs if v.consistent and written[(task, v.first)] != written[(task, v.second)]]
    return JudgeBias(
        pairs=len(pairs),
        consistency=wilson(sum(v.consistent for _, v in pairs), len(pairs)),
        unparsed=wilson(len(replies) - len(parsed), len(replies)),
        first_position=wilson(parsed.count("A"), len(parsed)),
        wrong_over_right=wilson(sum(not right[(task, vote)] for task, vote in mixed_votes), len(mixed_votes)),
        wrong_over_right_pairs=wilson(sum(not right[(task, w)] for task, w in mixed_consistent), len(mixed_consistent)),
        prefers_common=wilson(sum(written[(task, v.winner)] == max(written[(task, v.first)], written[(task, v.second)])
                                  for task, v in unequal), len(unequal)),
    )
