"""A small custom-tool env: day counts between two dates, with a ``days_between`` tool to anchor them.

The tool and the env a user would write to plug their own anchor in (``bench/bench_custom_tool.py``
measures whether the embedded model calls it):

    from examples.dates import DatesEnv, days_between
    env = DatesEnv()            # tools(): python and days_between
    build_agent(policy, env.tools(), protocol="code")

or from the command line, ``anchorloop eval --env examples.dates:DatesEnv``. The tool carries a worked
example (``@tool(example=...)``), as a user would write one for their own tool: the agent shows it to
the model after the first arithmetic exemplar, each action format its own way (a ``<tool_call>``
line, or a call in the code).
"""

from __future__ import annotations

import datetime
import random

from envs.base import Env, Split, Task
from envs.scoring import numeric_match
from tools import Tool, tool

CHECK = "from datetime import date\nprint((date(2020, 2, 3) - date(2019, 5, 14)).days)"
EXAMPLE = {
    "question": "How many days are there from 2019-05-14 to 2020-02-03?",
    "arguments": {"date_a": "2019-05-14", "date_b": "2020-02-03"},
    "answer": "265",
    "check": {"tool": "python", "arguments": {"code": CHECK}},  # recomputed another way
}


@tool(example=EXAMPLE)
def days_between(date_a: str, date_b: str) -> int:
    """The number of days from date_a to date_b (negative if date_b is earlier).

    Args:
        date_a: the first date, as YYYY-MM-DD
        date_b: the second date, as YYYY-MM-DD
    """
    return (datetime.date.fromisoformat(date_b) - datetime.date.fromisoformat(date_a)).days


class DatesEnv(Env):
    """"How many days are there from A to B?" for random dates from 1990 to 2030; scored numerically."""

    name = "dates"

    def __init__(self, with_python: bool = True) -> None:
        self.with_python = with_python

    def tools(self) -> list[Tool]:
        from tools.python_exec import python_tool

        return ([python_tool()] if self.with_python else []) + [days_between]

    def tasks(self, split: Split = "test", n: int | None = None, seed: int = 0) -> list[Task]:
        rng = random.Random(f"{split}-{seed}")
        first, span = datetime.date(1990, 1, 1).toordinal(), 40 * 365
        found = []
        for i in range(16 if n is None else n):
            a, b = sorted(datetime.date.fromordinal(first + rng.randrange(span)) for _ in range(2))
            question = f"How many days are there from {a.isoformat()} to {b.isoformat()}?"
            found.append(Task(id=f"dates-{split}-{seed}-{i}", question=question, reference=(b - a).days))
        return found

    def score(self, task: Task, answer: str) -> float:
        return numeric_match(answer, task.reference)
