"""The agent under the ``code`` format: its other tools are functions its Python code calls."""

from __future__ import annotations

import asyncio

from agent import build_agent
from agent.protocols import CodeProtocol
from tools import tool
from tools.python_exec import PythonSandbox, python_tool


@tool
def days_between(date_a: str, date_b: str) -> int:
    """Days from date_a to date_b (ISO dates)."""
    import datetime

    return (datetime.date.fromisoformat(date_b) - datetime.date.fromisoformat(date_a)).days


QUESTION = "How many days are there from 2024-01-01 to 2024-03-01?"
CODE = "```python\nprint(days_between('2024-01-01', '2024-03-01'))\n```"


def run(scripted, replies, **kw):
    policy = scripted(replies)
    agent = build_agent(policy, [python_tool(PythonSandbox(timeout_s=5)), days_between], protocol="code", **kw)
    state = asyncio.run(agent.ainvoke({"question": QUESTION}))
    return state, scripted.tokenizer.decode(policy.prompts[0])


def test_the_prompt_lists_the_functions_and_the_code_calls_them(scripted):
    state, prompt = run(scripted, [CODE, "Final answer: 60", CODE, "Final answer: 60"])
    assert "Your code can call these functions" in prompt
    assert "- days_between(date_a: str, date_b: str) -> int: Days from date_a to date_b" in prompt
    assert "<tool_call>" not in prompt
    observations = [m for m in state["messages"] if m["role"] == "tool"]
    assert [m["content"] for m in observations] == ["60", "60"]
    assert observations[0]["function_calls"] == [{"name": "days_between", "error": False}]
    assert [a["answer"] for a in state["attempts"]] == ["60", "60"]


def test_without_code_functions_the_tool_is_a_tool_call_only(scripted):
    state, prompt = run(scripted, [CODE, "Final answer: 0"], code_functions=False, self_correct=False)
    assert "Your code can call" not in prompt and "<tool_call>" in prompt and "- days_between(date_a" in prompt
    assert "NameError: name 'days_between' is not defined" in state["messages"][2]["content"]


def test_tool_calls_still_work_and_garbage_code_does_not_crash_the_run(scripted):
    args = '{"date_a": "2024-01-01", "date_b": "2024-01-11"}'
    call = f'<tool_call>{{"name": "days_between", "arguments": {args}}}</tool_call>'
    replies = ["```python\nprint(days_between(1, 2, 3))\nprint(nope())\n```", call,
               "```python\nimport os\nos.write(4, b'\\xff' * 64)\nprint(days_between('a', 'b'))\n```",
               "Final answer: 10"]
    state, _ = run(scripted, replies, self_correct=False)
    shown = [m for m in state["messages"] if m["role"] == "tool"]
    assert "TypeError: days_between() takes 2 positional arguments but 3 were given" in shown[0]["content"]
    assert shown[1]["name"] == "days_between" and shown[1]["content"] == "10"
    assert "ToolError: days_between() cannot be called" in shown[2]["content"]
    assert state["stop_reason"] == "answered" and state["attempts"][0]["answer"] == "10"


def test_exemplars_call_function_tools_from_code(scripted):
    """An exemplar that uses a non-python tool shows it the way the model should call it: in code."""
    from agent.prompts import Exemplar, Step

    exemplar = Exemplar("How many days from 2024-02-01 to 2024-03-01?",
                        [Step(tool="days_between", arguments={"date_a": "2024-02-01", "date_b": "2024-03-01"}),
                         Step(answer="29")], [])
    _, prompt = run(scripted, ["Final answer: 1"], exemplars=[exemplar], self_correct=False)
    assert "```python\nprint(days_between(date_a='2024-02-01', date_b='2024-03-01'))\n```" in prompt
    assert "<tool_response>\n29\n</tool_response>" in prompt


def test_protocol_renders_function_calls_as_code():
    proto = CodeProtocol().with_functions({"f": "f(x: int) -> int: doubles"})
    assert proto.render_call("f", {"x": 2}) == "```python\nprint(f(x=2))\n```"
    assert proto.exemplar_call("f", {"x": 2}) == ("python", {"code": "print(f(x=2))"})
    assert proto.exemplar_call("g", {"y": 1}) == ("g", {"y": 1})
    assert CodeProtocol().exemplar_call("f", {"x": 2}) == ("f", {"x": 2})
