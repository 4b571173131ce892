"""An env with more tools offered next to its own: what ``--tool`` adds on the command line.

    env = with_tools(get_env("jsonl:dates.jsonl", scorer="numeric"), ["date_tools:days_between"])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from envs.base import Env, Split, Task

if TYPE_CHECKING:
    from tools import Tool


class WithTools(Env):
    """``env`` as it is, except that ``tools()`` also offers ``extra`` (names or Tool objects); a tool
    the env already offers under the same name is not added twice."""

    def __init__(self, env: Env, extra: Sequence[Tool | str]) -> None:
        from tools.registry import check_tool_names

        check_tool_names([t for t in extra if isinstance(t, str)])  # before any model loads
        self.env = env
        self.extra = list(extra)
        self.name, self.system_hint, self.needs_network = env.name, env.system_hint, env.needs_network

    def tools(self) -> list[Tool]:
        from tools import load_tools

        own = self.env.tools()
        offered = {t.name for t in own}
        return own + [t for t in load_tools(self.extra) if t.name not in offered]

    def tasks(self, split: Split = "test", n: int | None = None, seed: int = 0) -> list[Task]:
        return self.env.tasks(split, n=n, seed=seed)

    def score(self, task: Task, answer: str) -> float:
        return self.env.score(task, answer)

    async def ascore(self, task: Task, answer: str) -> float:
        return await self.env.ascore(task, answer)

    def score_details(self, task: Task, answer: str) -> dict[str, Any]:
        return self.env.score_details(task, answer)

    def answer_key(self, answer: str | None) -> str | None:
        return self.env.answer_key(answer)

    def supported_by_tools(self, question: str, answer: str, observations: Sequence[str]) -> bool:
        return self.env.supported_by_tools(question, answer, observations)

    def __getattr__(self, attr: str) -> Any:  # the env's own attributes (levels, paths, …)
        if attr == "env":
            raise AttributeError(attr)
        return getattr(self.env, attr)


def with_tools(env: Env, extra: Sequence[Tool | str] | str | None) -> Env:
    """``env`` offering ``extra`` tools too (one name may be a plain string); ``env`` itself without any."""
    extra = [extra] if isinstance(extra, str) else list(extra or [])
    return WithTools(env, extra) if extra else env
