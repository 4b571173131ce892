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


def test_a_tools_own_example_is_shown_after_the_first_arithmetic_exemplar(scripted):
    from agent import build_agent

    policy = scripted(["Final answer: 1"])
    state = asyncio.run(build_agent(policy, DatesEnv().tools(), protocol="code", self_correct=False)
                        .ainvoke({"question": "How many days are there from 2024-01-01 to 2024-01-02?"}))
    text = policy.tokenizer.decode(state["prompt_ids"])
    assert "What is 48 + 36 * 7?" in text and "17 * 23" not in text  # one arithmetic exemplar, then the tool's
    assert text.index("What is 48 + 36 * 7?") < text.index("How many days are there from 2019-05-14 to 2020-02-03?")
    assert "days_between(" in text and "265" in text  # called as a function in code, its real result shown
    given = asyncio.run(build_agent(policy, DatesEnv().tools(), protocol="code", self_correct=False, exemplars=[])
                        .ainvoke({"question": "q"}))
    assert "2019-05-14" not in policy.tokenizer.decode(given["prompt_ids"])  # a given list is shown as it is


def test_a_bad_tool_example_names_the_tool_and_the_field():
    import pytest

    from tools import tool

    def f(x: int) -> int:
        """Double x."""
        return 2 * x

    with pytest.raises(ValueError, match=r"'double'.*check: Field required"):
        tool(name="double", example={"question": "2 doubled?", "arguments": {"x": 2}, "answer": "4"})(f)
    assert tool(name="double", example={"question": "2 doubled?", "arguments": {"x": 2}, "answer": "4",
                                        "check": {"tool": "double", "arguments": {"x": 2}}})(f).example.answer == "4"
