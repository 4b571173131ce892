"""The record of one agent run, exact to the token, as the trainer and the evaluator read it."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel, Field


class Attempt(BaseModel):
    """One final answer the agent committed to, and how it scored."""

    answer: str
    turn: int  # index of the model turn that produced it
    tool_calls_before: int = 0
    score: float | None = None


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

    @property
    def first_score(self) -> float:
        return self.attempts[0].score or 0.0 if self.attempts else 0.0

    @property
    def last_score(self) -> float:
        return self.attempts[-1].score or 0.0 if self.attempts else 0.0

    @property
    def num_model_tokens(self) -> int:
        return sum(self.env_mask)


def save_jsonl(trajectories: Iterable[Trajectory], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for traj in trajectories:
            fh.write(traj.model_dump_json() + "\n")
    return path


def load_jsonl(path: str | Path) -> list[Trajectory]:
    with Path(path).open(encoding="utf-8") as fh:
        return [Trajectory.model_validate(json.loads(line)) for line in fh if line.strip()]
