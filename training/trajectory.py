"""The record of one agent run, exact to the token, as the trainer and the evaluator read it."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from tools.base import describe_exception, safe_text

log = logging.getLogger(__name__)

CORRECT = 0.5  # a score at or above this counts as a right answer, everywhere


def is_right(score: float | None) -> bool:
    return (score or 0.0) >= CORRECT


class Attempt(BaseModel):
    """One final answer the agent committed to, and how it scored."""

    answer: str
    turn: int  # index of the model turn that produced it (-1: given to the model, not sampled)
    tool_calls_before: int = 0
    score: float | None = None
    injected: bool = False  # written by the environment (the injected-error probe), not by the model
    replayed: bool = False  # ... and that is a wrong attempt the model sampled itself (training.replay_own_errors)

    @property
    def right(self) -> bool:
        return is_right(self.score)


class TurnSpan(BaseModel):
    """Where one model turn lies in ``completion_ids`` (``[start, end)``) and which attempt it serves:
    0 until the first answer (that turn included), 1 after it, and so on."""

    start: int
    end: int
    attempt: int


class Timings(BaseModel):
    total_s: float = 0.0
    generate_s: float = 0.0  # wall time spent waiting on the policy
    tools_s: float = 0.0  # wall time spent waiting on tools


class Trajectory(BaseModel):
    """``prompt_ids + completion_ids`` is the whole token sequence, exactly as sampled and inserted.

    ``env_mask[i]`` is 1 where ``completion_ids[i]`` was sampled by the model (trained on) and 0 where
    it was inserted by the environment (tool observations, the verify instruction). ``logprobs``
    aligns with ``completion_ids`` (0.0 at inserted positions).
    """

    task_id: str
    env: str = ""
    question: str = ""
    prompt_ids: list[int]
    completion_ids: list[int]
    env_mask: list[int]
    logprobs: list[float]
    attempts: list[Attempt] = Field(default_factory=list)
    messages: list[dict] = Field(default_factory=list)  # readable transcript, for display only
    turns: int = 0
    tool_calls: int = 0
    tool_errors: int = 0
    parse_errors: int = 0
    stop_reason: str = ""
    timings: Timings = Field(default_factory=Timings)
    group: int = 0  # index of the generation within its task's group
    turn_spans: list[TurnSpan] = Field(default_factory=list)  # the model's turns, as the graph recorded them
    # label-free signals (training.signals): name → value for the last answer, NAME_first for the first
    signals: dict[str, float] = Field(default_factory=dict)
    # the belief signal's curve for the last answer: log p(answer) before each model turn (training.belief)
    belief_curve: list[float] = Field(default_factory=list)

    @classmethod
    def from_state(cls, state: Mapping[str, Any], *, task_id: str, env: str, question: str, group: int,
                   scores: Sequence[float], total_s: float) -> Trajectory:
        """The one way a finished agent run becomes a record: the graph's state, plus each attempt's score."""
        attempts = [Attempt(score=score, **a) for a, score in zip(state.get("attempts", []), scores, strict=True)]
        return cls(
            task_id=task_id, env=env, question=question, group=group, attempts=attempts,
            prompt_ids=state["prompt_ids"],
            **{key: state.get(key, []) for key in ("completion_ids", "env_mask", "logprobs", "messages", "turn_spans")},
            **{key: state.get(key, 0) for key in ("turns", "tool_calls", "tool_errors", "parse_errors")},
            stop_reason=state.get("stop_reason", ""),
            timings=Timings(total_s=total_s, generate_s=state.get("generate_s", 0.0),
                            tools_s=state.get("tools_s", 0.0)),
        )

    @classmethod
    def failed(cls, *, task_id: str, env: str, question: str, group: int, error: BaseException,
               total_s: float) -> Trajectory:
        """A run that raised, or whose record could not be kept: no tokens, the error as its stop reason."""
        return cls(task_id=safe_text(task_id), env=safe_text(env), question=safe_text(question), prompt_ids=[],
                   completion_ids=[], env_mask=[], logprobs=[], group=group,
                   stop_reason=f"error: {describe_exception(error)}", timings=Timings(total_s=total_s))

    def failed_copy(self, error: BaseException) -> Trajectory:
        """This run, recorded as failed with ``error`` as its cause."""
        return Trajectory.failed(task_id=self.task_id, env=self.env, question=self.question, group=self.group,
                                 error=error, total_s=self.timings.total_s)

    def jsonl_line(self, labels: Mapping[str, Any] | None = None) -> str:
        """The record as one line of strict JSON (UTF-8, no NaN), ``labels`` first; a ValueError says why a
        record cannot be one, or would not read back as this same trajectory."""
        try:
            record = {**(labels or {}), **self.model_dump(mode="json")}
            line = json.dumps(record, ensure_ascii=False, allow_nan=False)
            line.encode("utf-8")
            same = Trajectory.model_validate(json.loads(line)) == self
        except (TypeError, ValueError, RecursionError) as exc:
            raise ValueError(f"the trajectory of task {self.task_id!r} cannot be saved: "
                             f"{describe_exception(exc)}") from exc
        if not same:  # e.g. an infinity the JSON dump turned into null
            raise ValueError(f"the trajectory of task {self.task_id!r} does not read back as itself once saved")
        return line

    def attempt_mask(self, attempt: int) -> list[int]:
        """1 on the model tokens of the turns serving ``attempt`` (0: up to and including the first
        answer; every turn when the run never answered), 0 elsewhere."""
        mask = [0] * len(self.completion_ids)
        for span in self.turn_spans:
            if span.attempt == attempt:
                mask[span.start : span.end] = [1] * (span.end - span.start)
        return mask

    @property
    def starts_injected(self) -> bool:
        """The run began from a first attempt written for the model (the injected-error probe or training)."""
        return bool(self.attempts) and self.attempts[0].injected

    @property
    def first_right(self) -> bool:
        return bool(self.attempts) and self.attempts[0].right

    @property
    def last_right(self) -> bool:
        return bool(self.attempts) and self.attempts[-1].right

    @property
    def first_score(self) -> float:
        return self.attempts[0].score or 0.0 if self.attempts else 0.0

    @property
    def last_score(self) -> float:
        return self.attempts[-1].score or 0.0 if self.attempts else 0.0

    @property
    def num_model_tokens(self) -> int:
        return sum(self.env_mask)


def save_jsonl(trajectories: Iterable[Trajectory], path: str | Path, *,
               labels: Iterable[Mapping[str, Any]] | None = None) -> Path:
    """One trajectory per line; ``labels`` (one mapping per trajectory) adds keys such as ``config``. A
    trajectory that cannot be saved is written as a failed run naming the cause, and the rest are kept."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = iter(labels) if labels is not None else None
    with path.open("w", encoding="utf-8") as fh:
        for traj in trajectories:
            label = next(extra) if extra is not None else {}
            try:
                line = traj.jsonl_line(label)
            except ValueError as exc:
                log.warning("%s: recorded as a failed run: %s", path, exc)
                line = traj.failed_copy(exc).jsonl_line(label)
            fh.write(line + "\n")
    return path


def read_jsonl(path: str | Path) -> Iterator[tuple[dict[str, Any], Trajectory]]:
    """Each line's raw record (labels included) and its trajectory; a bad line names itself."""
    with Path(path).open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                yield record, Trajectory.model_validate(record)
            except ValueError as exc:
                raise ValueError(f"{path}:{number}: not a trajectory record ({exc}).") from None


def load_jsonl(path: str | Path) -> list[Trajectory]:
    return [traj for _, traj in read_jsonl(path)]
