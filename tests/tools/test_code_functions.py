"""Tools as functions of sandboxed code: which tools qualify, how they are described, what a call returns."""

from __future__ import annotations

from pydantic import BaseModel

from tools import Tool, ToolResult, tool
from tools.code_functions import CodeFunctions, callable_in_code, signature, value_of
from tools.python_exec import PythonSandbox, python_tool


@tool
def days_between(date_a: str, date_b: str) -> int:
    """Days from date_a to date_b (ISO dates)."""
    import datetime

    return (datetime.date.fromisoformat(date_b) - datetime.date.fromisoformat(date_a)).days


@tool
def shout(text: str, times: int = 1) -> str:
    """Upper-case the text."""
    return text.upper() * times


@tool
def stats(values: list[float]):
    """Mean and count of values."""
    return {"mean": sum(values) / len(values), "n": len(values)}


@tool
def nothing() -> None:
    """Return nothing."""


class _Echo(BaseModel):
    text: str


class Echo(Tool):
    name = "echo_text"
    description = "Echo the text."
    args_schema = _Echo

    def run(self, args):
        return ToolResult(content="[1, 2]")


def test_which_tools_become_functions():
    assert callable_in_code(days_between) and callable_in_code(Echo())
    for name in ("print", "open", "python", "ToolError", "class", "my-tool", "my tool"):
        assert not callable_in_code(tool(lambda: 1, name=name))
    functions = CodeFunctions([python_tool(), days_between, tool(lambda: 1, name="print")])
    assert list(functions.tools) == ["days_between"]
    assert not CodeFunctions([python_tool()])


def test_signatures_for_the_prompt():
    assert signature(days_between) == "days_between(date_a: str, date_b: str) -> int"
    assert signature(shout) == "shout(text: str, times: int = 1) -> str"
    assert signature(stats) == "stats(values: list)"
    assert signature(Echo()) == "echo_text(text: str)"
    lines = CodeFunctions([days_between, shout]).signatures()
    assert lines["days_between"] == (
        "days_between(date_a: str, date_b: str) -> int: Days from date_a to date_b (ISO dates).")


def test_values_come_back_typed_when_the_function_returned_data():
    assert value_of(days_between, ToolResult(content="60")) == 60
    assert value_of(shout, ToolResult(content="42")) == "42"  # declared str: the text
    assert value_of(stats, ToolResult(content="{'mean': 2.0, 'n': 3}")) == {"mean": 2.0, "n": 3}
    assert value_of(nothing, ToolResult(content="None")) is None
    assert value_of(Echo(), ToolResult(content="[1, 2]")) == "[1, 2]"  # a Tool's own text stays text
    assert value_of(stats, ToolResult(content="{1, 2}")) == "{1, 2}"  # a set is no JSON value
    deep = "[" * 1900 + "]" * 1900  # too deep for the parser: the text
    assert value_of(stats, ToolResult(content=deep)) == deep
    assert value_of(stats, ToolResult(content="x" * 10000)).startswith("x")


def test_a_program_calls_tools_end_to_end():
    sandbox = PythonSandbox(timeout_s=5)
    calls = CodeFunctions([days_between, shout, stats, nothing]).session()
    result = sandbox.run(
        "import datetime\n"
        "print(days_between(datetime.date(2024, 1, 1), '2024-03-01') + 1)\n"
        "print(shout('hi', times=2), stats([1, 2, 3])['n'], nothing())\n"
        "print(days_between.__doc__.splitlines()[0])\n",
        functions=calls,
    )
    assert result.ok, result.stderr
    assert result.stdout.splitlines() == ["61", "HIHI 3 None", "days_between(date_a: str, date_b: str) -> int"]
    assert [c["name"] for c in calls.calls] == ["days_between", "shout", "stats", "nothing"]


def test_a_failing_tool_raises_its_error_text_in_the_program():
    result = PythonSandbox(timeout_s=5).run("print(days_between('2024-01-01', 'soon'))",
                                            functions=CodeFunctions([days_between]).session())
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "ToolError: Tool 'days_between' failed: ValueError: Invalid isoformat string: 'soon'")
    assert "bridge.py" not in result.stderr  # the channel's own frames are not shown


async def test_the_python_tool_records_its_function_calls():
    py = python_tool(PythonSandbox(timeout_s=5)).with_functions([days_between])
    result = await py.acall({"code": "print(days_between('2024-01-01', '2024-01-31'))"})
    assert result.content == "30" and not result.error
    assert result.metadata["function_calls"] == [{"name": "days_between", "error": False}]
    plain = await python_tool(PythonSandbox(timeout_s=5)).acall({"code": "print(1)"})
    assert "function_calls" not in plain.metadata
