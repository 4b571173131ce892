"""LangChain tools become anchorloop tools and back, keeping schemas, results and errors."""

from __future__ import annotations

import asyncio

import pytest
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import BaseTool, StructuredTool, ToolException
from langchain_core.tools import tool as langchain_tool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, Field

from tools import Tool, ToolResult, from_langchain, to_langchain, tool


@langchain_tool
def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


@langchain_tool(response_format="content_and_artifact")
def lookup(key: str) -> tuple[str, dict]:
    """Look a key up and return the raw record as an artifact."""
    return f"value of {key}", {"key": key, "hits": 1}


@langchain_tool
def strict(x: int) -> int:
    """Refuse everything."""
    raise ToolException(f"{x} is not allowed")


@langchain_tool
def crash(x: int) -> int:
    """Crash."""
    raise ValueError("broken inside")


class WeatherArgs(BaseModel):
    city: str = Field(description="City name.")
    unit: str = Field("C", description="C or F.")


class Weather(BaseTool):
    name: str = "weather"
    description: str = "Current temperature in a city."
    args_schema: type[BaseModel] = WeatherArgs

    def _run(self, city: str, unit: str = "C") -> str:
        return f"{city}: 21 {unit}"

    async def _arun(self, city: str, unit: str = "C") -> str:
        return f"{city}: 21 {unit} (async)"


@tool
def word_count(text: str) -> int:
    """Count the words in a text.

    Args:
        text: The text to count words in.
    """
    return len(text.split())


@tool
def judge(answer: str) -> ToolResult:
    """Check an answer.

    Args:
        answer: The answer to check.
    """
    ok = answer == "42"
    return ToolResult(
        content="correct" if ok else "wrong: expected a number", error=not ok, metadata={"ok": ok}
    )


def call(t: Tool, **args) -> ToolResult:
    return asyncio.run(t.acall(args))


def tool_call(name: str, **args) -> dict:
    return {"type": "tool_call", "id": "call-1", "name": name, "args": args}


# --- LangChain -> anchorloop ----------------------------------------------------------------


def test_from_langchain_keeps_name_description_and_schema():
    anchor = from_langchain(multiply)
    assert isinstance(anchor, Tool)
    fn = anchor.json_schema()["function"]
    assert fn["name"] == "multiply"
    assert fn["description"] == "Multiply two integers."
    assert fn["parameters"]["required"] == ["a", "b"]
    assert fn["parameters"]["properties"]["a"]["type"] == "integer"


def test_from_langchain_runs_the_tool():
    assert call(from_langchain(multiply), a=6, b=7) == ToolResult(content="42")


def test_from_langchain_uses_the_async_path_of_a_base_tool_subclass():
    weather = from_langchain(Weather())
    assert call(weather, city="Oslo").content == "Oslo: 21 C (async)"
    params = weather.json_schema()["function"]["parameters"]
    assert params["properties"]["city"]["description"] == "City name."


def test_from_langchain_bad_arguments_name_the_field():
    result = call(from_langchain(multiply), a="six", b=7)
    assert result.error and "'a'" in result.content


def test_tool_exceptions_become_error_results():
    result = call(from_langchain(strict), x=3)
    assert result == ToolResult(content="3 is not allowed", error=True)


def test_handled_tool_errors_become_error_results():
    handled = strict.model_copy(update={"handle_tool_error": True})
    result = call(from_langchain(handled), x=3)
    assert result.error and "3 is not allowed" in result.content


def test_other_exceptions_become_error_results_too():
    result = call(from_langchain(crash), x=1)
    assert result.error and "ValueError: broken inside" in result.content


def test_artifacts_become_metadata():
    result = call(from_langchain(lookup), key="k")
    assert result == ToolResult(content="value of k", metadata={"key": "k", "hits": 1})


def test_json_schema_args_are_passed_through():
    schema = {
        "type": "object",
        "properties": {"q": {"type": "string", "description": "Query."}},
        "required": ["q"],
    }
    raw = StructuredTool(
        name="echo_q",
        description="Echo the query.",
        args_schema=schema,
        func=lambda **kwargs: f"got {kwargs['q']}",
    )
    anchor = from_langchain(raw)
    assert anchor.json_schema()["function"]["parameters"] == schema
    assert call(anchor, q="hello").content == "got hello"


def test_from_langchain_rejects_other_objects():
    with pytest.raises(TypeError, match="expects a langchain_core BaseTool"):
        from_langchain(word_count)


# --- anchorloop -> LangChain ----------------------------------------------------------------


def test_to_langchain_is_a_base_tool_with_the_same_schema():
    lc = to_langchain(word_count)
    assert isinstance(lc, BaseTool)
    assert lc.name == "word_count" and lc.description == "Count the words in a text."
    openai = convert_to_openai_tool(lc)["function"]
    ours = word_count.json_schema()["function"]
    assert openai["name"] == ours["name"]
    assert openai["parameters"]["properties"] == ours["parameters"]["properties"]
    assert openai["parameters"]["required"] == ["text"]


def test_to_langchain_invokes_sync_and_async():
    lc = to_langchain(word_count)
    assert lc.invoke({"text": "a b c"}) == "3"
    assert asyncio.run(lc.ainvoke({"text": "a b"})) == "2"


def test_sync_invoke_works_inside_a_running_event_loop():
    lc = to_langchain(word_count)

    async def inside_loop():
        return lc.invoke({"text": "one two"})

    assert asyncio.run(inside_loop()) == "2"


def test_tool_calls_get_tool_messages_with_metadata_as_artifact():
    message = to_langchain(judge).invoke(tool_call("judge", answer="42"))
    assert isinstance(message, ToolMessage)
    assert message.content == "correct" and message.status == "success"
    assert message.artifact == {"ok": True}


def test_error_results_come_back_as_error_messages_not_exceptions():
    message = to_langchain(judge).invoke(tool_call("judge", answer="41"))
    assert message.status == "error"
    assert message.content == "wrong: expected a number"


def test_bad_arguments_come_back_as_error_messages_naming_the_field():
    message = to_langchain(word_count).invoke(tool_call("word_count", text=["not", "text"]))
    assert message.status == "error"
    assert "'text'" in message.content and "Bad arguments for tool 'word_count'" in message.content


def test_round_trips_return_the_original_objects():
    assert from_langchain(to_langchain(word_count)) is word_count
    assert to_langchain(from_langchain(multiply)) is multiply


def test_converted_tools_run_in_a_langgraph_tool_node():
    from langgraph.graph import END, START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode

    builder = StateGraph(MessagesState)
    builder.add_node("tools", ToolNode([to_langchain(word_count), to_langchain(judge)]))
    builder.add_edge(START, "tools")
    builder.add_edge("tools", END)
    graph = builder.compile()
    request = AIMessage(
        content="",
        tool_calls=[
            {"id": "1", "name": "word_count", "args": {"text": "tools are anchors"}},
            {"id": "2", "name": "judge", "args": {"answer": "7"}},
        ],
    )
    out = asyncio.run(graph.ainvoke({"messages": [request]}))
    _, first, second = out["messages"]
    assert (first.content, first.status) == ("3", "success")
    assert (second.content, second.status) == ("wrong: expected a number", "error")
