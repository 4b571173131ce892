"""Reward terms for self-correction, as TRL reward functions over per-trajectory fields.

The rollout forwards ``first_score``, ``last_score``, ``parse_errors``, ``turns``, ``tool_calls``,
``tool_errors`` and ``vacuous_check`` for every completion; TRL passes them to each function as
lists. SCoRe's reward is the last attempt's correctness plus ``alpha * (r_last - r_first)``: the
bonus makes "repeat the first answer" worth less than fixing it, and costs a right→wrong change twice.

The label-free terms (``majority``, ``self_judge``, ``tool_check``, ``belief``) read no score at all: the
rollout computes them (``training.labelfree``) and forwards them as per-row fields of those names.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from training.config import RewardConfig
from training.signals import SIGNALS


def correctness(completions: Sequence[Any], last_score: Sequence[float], **_: Any) -> list[float]:
    """Score of the final attempt (0 when the run never answered)."""
    return [float(s) for s in last_score]


def progress(completions: Sequence[Any], first_score: Sequence[float], last_score: Sequence[float],
             stage: Sequence[int] | None = None, **_: Any) -> list[float]:
    """r_last − r_first: positive for wrong→right, negative for right→wrong. Zero in SCoRe's Stage I
    (``stage`` 1), which rewards attempt 2's correctness alone while KL holds attempt 1."""
    stages = stage if stage is not None else [2] * len(last_score)
    return [0.0 if st == 1 else float(b) - float(a) for a, b, st in zip(first_score, last_score, stages, strict=True)]


def format_score(completions: Sequence[Any], parse_errors: Sequence[int], turns: Sequence[int],
                 **_: Any) -> list[float]:
    """−(share of turns the parser could not read)."""
    return [-min(1.0, p / max(t, 1)) for p, t in zip(parse_errors, turns, strict=True)]


def tool_score(completions: Sequence[Any], tool_calls: Sequence[int], tool_errors: Sequence[int],
               **_: Any) -> list[float]:
    """+1 for using a tool at least once, minus the share of calls that failed."""
    return [(1.0 if c else 0.0) - min(1.0, e / max(c, 1)) for c, e in zip(tool_calls, tool_errors, strict=True)]


def fresh_check(completions: Sequence[Any], vacuous_check: Sequence[int], last_score: Sequence[float],
                **_: Any) -> list[float]:
    """−(last score) when the verify step computed nothing new (no tool call, the first attempt's own
    calls again, or nothing computed from the question: ``training.metrics.is_vacuous_check``; under
    ``RewardConfig.check_rule = "call"``, the default, with ``any_form=False``, so the same arithmetic
    written in another form is not charged, under ``"computation"`` it is): a right
    answer kept by such a check is worth less than one kept by a real check. Wrong answers are not
    charged: a charge there pays any wrong computation over a vacuous one, and within four steps at
    lr 1e-4 the verify turn learned to print long made-up products of the question's numbers."""
    return [-float(v) * float(s) for v, s in zip(vacuous_check, last_score, strict=True)]


def signal_term(name: str) -> Callable[..., list[float]]:
    """The reward that reads a label-free signal's per-row field (``training.signals``: computed by the rollout
    when its weight is non-zero)."""

    def term(completions: Sequence[Any], **fields: Any) -> list[float]:
        if name not in fields:
            raise KeyError(f"the {name} reward reads each row's {name!r} field, which the rollout did not compute: "
                           f"pass signals=[{name!r}] to AgentRollout (training.train does so from [rewards]).")
        return [float(v) for v in fields[name]]

    term.__name__ = name
    return term


TERMS: dict[str, Callable[..., list[float]]] = {
    "correctness": correctness, "progress": progress, "format": format_score, "tool": tool_score,
    "check": fresh_check, **{name: signal_term(name) for name in SIGNALS},
}


def reward_functions(weights: RewardConfig) -> tuple[list[Callable[..., list[float]]], list[float]]:
    """The non-zero terms and their weights, in the form ``GRPOTrainer`` takes."""
    chosen = [(TERMS[name], w) for name, w in weights.model_dump().items() if name in TERMS and w]
    if not chosen:
        raise ValueError("Every reward weight is 0; set at least rewards.correctness.")
    return [f for f, _ in chosen], [w for _, w in chosen]


def total_rewards(weights: RewardConfig, fields: dict[str, list[Any]]) -> list[float]:
    funcs, ws = reward_functions(weights)
    n = len(fields["last_score"])
    columns = [f([None] * n, **fields) for f in funcs]
    return [sum(w * col[i] for w, col in zip(ws, columns, strict=True)) for i in range(n)]


def no_signal_fraction(groups: Sequence[Sequence[float]]) -> float:
    """Share of GRPO groups whose rewards are all equal: their advantages are zero, they teach nothing."""
    if not groups:
        return 0.0
    return sum(max(g) - min(g) < 1e-9 for g in groups) / len(groups)
