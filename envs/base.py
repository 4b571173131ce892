"""The environment contract: tasks to attempt, the tools that anchor them, and a scorer."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    import datasets

    from tools import Tool

Split = Literal["train", "test"]


class Task(BaseModel):
    """One problem. ``reference`` holds whatever the scorer needs (an answer, unit tests, …)."""

    id: str
    question: str
    reference: Any = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class Env:
    """Subclass and set ``name``; implement ``tools``, ``tasks`` and ``score``.

    ``score`` must be deterministic and return a float in [0, 1]. ``system_hint`` is an optional
    line added to the agent's system prompt (what kind of problems these are).
    """

    name: str = ""
    system_hint: str = ""
    needs_network: bool = False

    def tools(self) -> list[Tool]:
        raise NotImplementedError

    def tasks(self, split: Split = "test", n: int | None = None, seed: int = 0) -> list[Task]:
        raise NotImplementedError

    def score(self, task: Task, answer: str) -> float:
        raise NotImplementedError

    async def ascore(self, task: Task, answer: str) -> float:
        """``score`` without blocking the event loop (a worker thread unless overridden)."""
        return await asyncio.to_thread(self.score, task, answer)

    def supported_by_tools(self, question: str, answer: str, observations: Sequence[str]) -> bool:
        """The label-free ``tool_check`` signal: do the run's own tool outputs (``observations``) back its
        ``answer``? No answer key is given, by design. Default: ``envs.scoring.supported_by_evidence``
        (a numeric answer printed by the code, a text answer contained in a retrieved passage)."""
        from envs.scoring import supported_by_evidence

        return supported_by_evidence(answer, observations)

    def answer_key(self, answer: str | None) -> str | None:
        """What two answers must share to count as the same answer, without the answer key: what
        ``majority`` votes on, the self-judge compares and answer diversity counts. ``None`` for no
        answer. Default: ``envs.scoring.answer_key`` (their number, else their normalised text); an env
        whose answers are text should compare them as its ``score`` does."""
        from envs.scoring import answer_key

        return answer_key(answer)

    def score_details(self, task: Task, answer: str) -> dict[str, Any]:
        """``score`` plus any secondary metrics (F1, what was missing, …) under their own keys."""
        return {"score": self.score(task, answer)}

    def as_dataset(self, split: Split = "train", n: int | None = None, seed: int = 0) -> datasets.Dataset:
        """The tasks as a Hugging Face Dataset with the ``prompt`` column TRL expects."""
        import datasets

        rows = self.tasks(split, n=n, seed=seed)
        return datasets.Dataset.from_dict(
            {
                "prompt": [t.question for t in rows],
                "task_id": [t.id for t in rows],
                "env": [self.name] * len(rows),
            }
        )

    def __repr__(self) -> str:
        return f"<Env {self.name}>"
