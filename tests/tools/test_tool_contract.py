"""The Tool contract as ``@tool`` builds it: schemas from hints and docstrings, calls that never raise."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Annotated, Literal

import pytest
from pydantic import BaseModel, Field

from tools import FunctionTool, Tool, ToolResult, tool
from tools.base import MAX_CONTENT_CHARS


@tool
def word_count(text: str, min_length: int = 1) -> int:
    """Count the words in a text.

    Longer explanation that is not part of the description.

    Args:
        text: The text to count words in.
        min_length (int): Ignore words shorter than this.
            Note: punctuation counts as part of a word.
    """
    return len([w for w in text.split() if len(w) >= min_length])


@tool
async def shout(text: str) -> str:
    """Upper-case a text."""
    await asyncio.sleep(0)
    return text.upper()


@tool(name="pick", description="Pick one of a few options.")
def choose(
    option: Literal["red", "green"],
    times: Annotated[int, Field(ge=1, le=3)] = 1,
    tags: list[str] | None = None,
) -> str:
    return " ".join([option] * times)


def call(t: Tool, args) -> ToolResult:
    return asyncio.run(t.acall(args))


def test_decorator_builds_a_function_tool_from_hints_and_docstring():
    assert isinstance(word_count, FunctionTool)
    assert word_count.name == "word_count"
    assert word_count.description == "Count the words in a text."
    fields = word_count.args_schema.model_fields
    assert fields["text"].description == "The text to count words in."
    assert fields["min_length"].description == (
        "Ignore words shorter than this. Note: punctuation counts as part of a word."
    )
    assert fields["min_length"].default == 1


def test_json_schema_is_the_openai_function_format():
    schema = word_count.json_schema()
    assert schema == {
        "type": "function",
        "function": {
            "name": "word_count",
            "description": "Count the words in a text.",
            "parameters": {
                "type": "object",
                "properties": {
                    "text": {"type": "string", "description": "The text to count words in."},
                    "min_length": {
                        "type": "integer",
                        "default": 1,
                        "description": "Ignore words shorter than this. "
                        "Note: punctuation counts as part of a word.",
                    },
                },
                "required": ["text"],
                "additionalProperties": False,
            },
        },
    }


def test_explicit_name_description_and_annotated_constraints_reach_the_schema():
    params = choose.json_schema()["function"]["parameters"]
    assert choose.name == "pick" and choose.description == "Pick one of a few options."
    assert params["properties"]["option"]["enum"] == ["red", "green"]
    assert params["properties"]["times"]["maximum"] == 3
    assert params["required"] == ["option"]


def test_sync_tools_run_in_a_worker_thread():
    seen = []

    @tool
    def where() -> str:
        """Report the thread."""
        seen.append(threading.current_thread())
        return "ok"

    assert call(where, {}).content == "ok"
    assert seen[0] is not threading.main_thread()


def test_async_tools_are_awaited():
    assert call(shout, {"text": "anchor"}) == ToolResult(content="ANCHOR")


@pytest.mark.parametrize(
    ("args", "field", "problem"),
    [
        ({}, "text", "Field required"),
        ({"text": 3}, "text", "valid string"),
        ({"text": "a b", "min_length": "long"}, "min_length", "valid integer"),
        ({"text": "a b", "colour": "red"}, "colour", "Extra inputs are not permitted"),
    ],
)
def test_bad_arguments_come_back_as_an_error_naming_the_field(args, field, problem):
    result = call(word_count, args)
    assert result.error
    assert f"'{field}'" in result.content and problem in result.content
    assert "Expected {text: string, min_length: integer}" in result.content


def test_constraint_violations_name_the_field():
    result = call(choose, {"option": "blue", "times": 9})
    assert result.error
    assert "'option'" in result.content and "'times'" in result.content


def test_arguments_that_are_not_an_object_are_an_error():
    result = call(word_count, ["a", "b"])
    assert result.error and "JSON object" in result.content


def test_none_means_no_arguments():
    @tool
    def ping() -> str:
        """Answer pong."""
        return "pong"

    assert call(ping, None).content == "pong"


def test_exceptions_inside_a_tool_become_error_results():
    @tool
    def explode(x: int) -> int:
        """Fail."""
        raise ZeroDivisionError("division by zero")

    result = call(explode, {"x": 1})
    assert result.error
    assert result.content == "Tool 'explode' failed: ZeroDivisionError: division by zero"


def test_cancellation_is_not_swallowed():
    @tool
    async def forever() -> str:
        """Wait forever."""
        await asyncio.sleep(3600)
        return "never"

    async def cancel_it():
        task = asyncio.create_task(forever.acall({}))
        await asyncio.sleep(0.01)
        task.cancel()
        await task

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(cancel_it())


class Point(BaseModel):
    x: int
    y: int


def test_return_values_become_text():
    @tool
    def point() -> Point:
        """A point."""
        return Point(x=1, y=2)

    assert call(word_count, {"text": "one two three"}).content == "3"
    assert call(point, {}).content == '{"x":1,"y":2}'
    assert call(choose, {"option": "red", "times": 2}).content == "red red"


def test_a_returned_tool_result_passes_through_unchanged():
    @tool
    def judged(ok: bool) -> ToolResult:
        """Report a verdict."""
        return ToolResult(content="checked", error=not ok, metadata={"ok": ok})

    assert call(judged, {"ok": False}) == ToolResult(content="checked", error=True, metadata={"ok": False})


def test_long_content_is_capped_with_a_note_of_how_much_was_cut():
    @tool
    def flood(n: int) -> str:
        """Return n characters."""
        return "x" * n

    result = call(flood, {"n": MAX_CONTENT_CHARS + 500})
    assert result.content.startswith("x" * MAX_CONTENT_CHARS)
    assert result.content.endswith("…[truncated 500 characters]")
    assert call(flood, {"n": MAX_CONTENT_CHARS}).content == "x" * MAX_CONTENT_CHARS


def test_subclassing_tool_directly_works_too():
    class EchoArgs(BaseModel):
        message: str = Field(description="What to echo.")

    class Echo(Tool):
        name = "echo"
        description = "Echo a message."
        args_schema = EchoArgs

        def run(self, args: EchoArgs) -> str:
            return args.message

    echo = Echo()
    assert call(echo, {"message": "hi"}).content == "hi"
    assert echo.json_schema()["function"]["parameters"]["properties"]["message"] == {
        "type": "string",
        "description": "What to echo.",
    }


def test_a_tool_implementing_nothing_reports_it():
    class Empty(Tool):
        name = "empty"

    result = call(Empty(), {})
    assert result.error and "implements neither run() nor arun()" in result.content


def test_a_subclass_without_an_args_schema_takes_no_arguments():
    class Clock(Tool):
        name = "clock"
        description = "Tell the time."

        def run(self, args: BaseModel) -> str:
            return "noon"

    assert call(Clock(), {}).content == "noon"
    extra = call(Clock(), {"tz": "UTC"})
    assert extra.error and "'tz'" in extra.content
    assert Clock().json_schema()["function"]["parameters"] == {
        "type": "object",
        "properties": {},
        "additionalProperties": False,
    }


def test_lone_surrogates_in_tool_output_become_replacement_characters():
    @tool
    def emit(kind: str) -> str:
        """Emit broken text."""
        return {"lone": "a\ud83d", "pair": "\ud83d\udca5"}[kind]

    assert call(emit, {"kind": "lone"}).content == "a\ufffd"
    assert call(emit, {"kind": "pair"}).content == "\U0001f4a5"  # a split pair is rejoined, not lost
    assert ToolResult(content="\udca5").content.encode("utf-8") == "\ufffd".encode()


@pytest.mark.parametrize("exc", [SystemExit(3), KeyboardInterrupt()])
def test_base_exceptions_inside_a_tool_become_error_results(exc):
    def body() -> str:
        """Quit."""
        raise exc

    async def abody() -> str:
        """Quit."""
        raise exc

    for quitter in (tool(body), tool(abody)):
        result = call(quitter, {})
        assert result.error and f"failed: {type(exc).__name__}" in result.content


class Unshowable:
    def __repr__(self):
        raise ValueError("no repr for you")


class Unspeakable(Exception):
    def __str__(self):
        raise RuntimeError("no message either")


def test_values_and_exceptions_that_cannot_be_shown_still_become_results():
    @tool
    def hostile(kind: str) -> object:
        """Return or raise something unshowable."""
        if kind == "error":
            raise Unspeakable()
        return {"huge": 10**5000, "repr": Unshowable()}[kind]

    huge, unshowable, error = (call(hostile, {"kind": k}) for k in ("huge", "repr", "error"))
    assert "int that cannot be shown" in huge.content and "4300" in huge.content
    assert "Unshowable that cannot be shown" in unshowable.content and "no repr for you" in unshowable.content
    assert error.error and "Unspeakable: (its message cannot be shown)" in error.content


def test_hung_sync_calls_time_out_without_holding_the_loops_executor():
    """More hung calls than the default executor has threads: later calls, a scorer using the
    executor, and the loop's shutdown (which joins that executor) are not held up by them."""
    from tools.base import call_tool

    @tool
    def hang() -> str:
        """Sleep long."""
        time.sleep(3)
        return "late"

    async def main():
        hung = [call_tool(hang, {}, timeout_s=0.2) for _ in range(40)]
        quick = call_tool(word_count, {"text": "a b"}, timeout_s=1.0)
        results = await asyncio.gather(*hung, quick, asyncio.to_thread(lambda: "scored"))
        return results

    started = time.perf_counter()
    *timed_out, counted, scored = asyncio.run(main())
    assert time.perf_counter() - started < 2.0
    assert all(r.error and "took longer than 0.2 s" in r.content for r in timed_out)
    assert counted.content == "2" and scored == "scored"
