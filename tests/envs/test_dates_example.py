"""The custom-tool example env (examples/dates.py) that bench/bench_custom_tool.py measures."""

from __future__ import annotations

import asyncio

from examples.dates import DatesEnv, days_between


def test_the_dates_env_and_its_tool():
    env = DatesEnv()
    tasks = env.tasks("test", n=16)
    assert len(tasks) == 16 and tasks == env.tasks("test", n=16) and tasks != env.tasks("train", n=16)
    assert [t.name for t in env.tools()] == ["python", "days_between"]
    task = tasks[0]
    a, b = task.question.removeprefix("How many days are there from ").rstrip("?").split(" to ")
    result = asyncio.run(days_between.acall({"date_a": a, "date_b": b}))
    assert int(result.content) == task.reference >= 0
    assert env.score(task, f"{task.reference} days") == 1.0 and env.score(task, "12345678") == 0.0
    assert asyncio.run(days_between.acall({"date_a": "2024-01-01", "date_b": "soon"})).error
