"""Label-free signals: what can stand in for an answer key, per run, without one.

Each is a number per run in [0, 1] (``belief``: a change of log-probability), written into
``Trajectory.signals`` under its name for the final answer and under ``NAME_first`` for the first
answer (what per-attempt credit reads, ``training.grpo.first_attempt_view``):

- ``majority`` (TTRL): the group's most common answer is the pseudo-label; a run scores 1 when its
  answer is it, 0 otherwise. Answers compare as the env says (``Env.answer_key``: numbers as numbers
  by default, a text env's as its scorer compares them). Ties: when two or more answers share the top
  count there is no pseudo-label and every run scores 0 (a coin flip would pay an arbitrary half of the
  group); runs with no answer never vote, nor do answers the environment injected.
- ``self_judge`` (SERL): the policy judges pairs of its group's answers, in both orders
  (``training.judge``).
- ``tool_check``: the anchored signal: 1 when the run's own tool outputs back its answer
  (``Env.supported_by_tools``), 0 otherwise.
- ``belief`` (ΔBelief): how much the model's log-probability of its own answer rose over the run
  (``training.belief``).

The group is the runs of one task in a batch (GRPO's ``num_generations`` adjacent rows).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from envs.scoring import answer_key
from training.trajectory import Trajectory

AnswerKey = Callable[[str | None], str | None]

SIGNALS = ("majority", "self_judge", "tool_check", "belief")
NEEDS_MODEL = ("self_judge", "belief")  # the others are computed from the trajectories alone
FIRST = "_first"  # suffix of the value computed on the first answer


def check_signals(names: Sequence[str]) -> list[str]:
    """``names`` in order, without repeats; an unknown one is an error naming those there are."""
    unknown = [n for n in names if n not in SIGNALS]
    if unknown:
        raise ValueError(f"Unknown signal {unknown[0]!r}; the label-free signals are {', '.join(SIGNALS)}.")
    return list(dict.fromkeys(names))


def key_of(env: Any) -> AnswerKey:
    """How ``env`` tells two answers apart (``Env.answer_key``); the numeric-else-text default for an env
    without the method, or for none."""
    return getattr(env, "answer_key", None) or answer_key


def majority_agreement(answers: Sequence[str | None], key: AnswerKey = answer_key) -> list[float]:
    """1.0 for each answer equal (by ``key``) to the group's unique most common one, else 0.0; all 0.0 when
    the top count is shared (no pseudo-label) or nobody answered."""
    keys = [key(a) for a in answers]
    counts = Counter(k for k in keys if k is not None).most_common()
    if not counts or (len(counts) > 1 and counts[0][1] == counts[1][1]):
        return [0.0] * len(answers)
    label = counts[0][0]
    return [float(k == label) for k in keys]


def answer_diversity(answers: Sequence[str | None], key: AnswerKey = answer_key) -> float:
    """Distinct answers / group size (no answer counts as one more kind): 1/G when the group agrees
    entirely, 1 when every run differs. Falling over training is the collapse label-free rewards risk."""
    if not answers:
        return 0.0
    return len({key(a) for a in answers}) / len(answers)


def groups_of(trajectories: Sequence[Trajectory], size: int | None = None) -> list[list[int]]:
    """Row indices grouped by task, in the order the tasks first appear; with ``size``, consecutive blocks of
    that many rows (GRPO's groups, which stay apart even when a batch holds one task twice)."""
    if size:
        if len(trajectories) % size:
            raise ValueError(f"{len(trajectories)} rows do not split into groups of {size}")
        return [list(range(i, i + size)) for i in range(0, len(trajectories), size)]
    groups: dict[str, list[int]] = {}
    for i, t in enumerate(trajectories):
        groups.setdefault(t.task_id, []).append(i)
    return list(groups.values())


def final_answer(traj: Trajectory) -> str | None:
    """The last answer the model wrote; ``None`` when it wrote none (an injected first attempt is the
    environment's, made from the answer key: it neither votes nor is judged)."""
    return _own(traj.attempts[-1]) if traj.attempts else None


def first_answer(traj: Trajectory) -> str | None:
    """The first answer, when the model wrote it (``final_answer``)."""
    return _own(traj.attempts[0]) if traj.attempts else None


def _own(attempt: Any) -> str | None:
    return None if attempt.injected else attempt.answer


def observations(traj: Trajectory, before_turn: int | None = None) -> list[str]:
    """What the run's own tool calls returned (failed calls and outputs of an injected first attempt left
    out), up to model turn ``before_turn`` (all of them when ``None``)."""
    seen, turn = [], -1
    for message in traj.messages:
        if message.get("role") == "assistant" and not message.get("injected"):
            turn += 1
            if before_turn is not None and turn >= before_turn:
                break
        elif message.get("role") == "tool" and not message.get("error") and not message.get("injected"):
            seen.append(str(message.get("content", "")))
    return seen


def tool_check(traj: Trajectory, env: Any, *, first: bool = False) -> float:
    """1.0 when the run's tool outputs (up to the turn of the answer) back its final (or ``first``) answer."""
    if not traj.attempts:
        return 0.0
    attempt = traj.attempts[0] if first else traj.attempts[-1]
    if attempt.injected:  # written by the environment: the model's tools never backed it
        return 0.0
    return float(env.supported_by_tools(traj.question, attempt.answer, observations(traj, attempt.turn + 1)))


def annotate_cheap(trajectories: Sequence[Trajectory], env: Any, names: Sequence[str],
                   group_size: int | None = None) -> None:
    """Write ``majority`` and ``tool_check`` (when in ``names``) for final and first answers."""
    if "majority" in names:
        for group in groups_of(trajectories, group_size):
            for pick, suffix in ((final_answer, ""), (first_answer, FIRST)):
                agreement = majority_agreement([pick(trajectories[i]) for i in group], key_of(env))
                for i, value in zip(group, agreement, strict=True):
                    trajectories[i].signals["majority" + suffix] = value
    if "tool_check" in names:
        for traj in trajectories:
            traj.signals["tool_check"] = tool_check(traj, env)
            traj.signals["tool_check" + FIRST] = tool_check(traj, env, first=True)
