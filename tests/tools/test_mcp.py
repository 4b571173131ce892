"""Tools from a real MCP server (tests/tools/mcp_server.py, over stdio and streamable HTTP) are anchorloop tools."""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("mcp")
pytest.importorskip("langchain_mcp_adapters")

from tests.tools.proc_helpers import alive, processes_with_arg, wait_until  # noqa: E402
from tools import check_tool_names, load_tools  # noqa: E402
from tools.base import call_tool  # noqa: E402
from tools.mcp import MCPTool, args_model, close_mcp_tools, mcp_tools  # noqa: E402

pytestmark = pytest.mark.timeout(90)

SERVER = Path(__file__).with_name("mcp_server.py")
COMMAND = f"{shlex.quote(sys.executable)} {shlex.quote(str(SERVER))}"
STDIO = f"mcp:{COMMAND} stdio"
MUTE = "import time; time.sleep(30)  # an MCP server that never answers"
CALL = '<tool_call>{"name": "add", "arguments": {"a": 2, "b": 3}}</tool_call>'


@pytest.fixture(scope="module")
def shared():
    """One stdio server for the tests that leave it running as it was."""
    tools = load_tools([STDIO])
    yield {t.name: t for t in tools}
    close_mcp_tools(tools)


@pytest.fixture
def fresh():
    """A stdio server of a test's own (one that gets killed), with a short time-out of its own."""
    tools = mcp_tools(f"{COMMAND} stdio", timeout_s=1.0, max_restarts=2)
    yield {t.name: t for t in tools}
    close_mcp_tools(tools)


@pytest.fixture
def http_server():
    """The server over streamable HTTP on a free port of 127.0.0.1; yields (url, process)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, str(SERVER), "http", str(port)], stderr=subprocess.DEVNULL)
    try:
        def listening() -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return True
            except OSError:
                return False

        assert wait_until(listening, timeout=30), "the HTTP MCP server did not start"
        yield f"http://127.0.0.1:{port}/mcp", process
    finally:
        process.kill()
        process.wait(timeout=10)


async def test_round_trip_through_load_tools(shared):
    assert sorted(shared) == ["add", "crash", "fail", "pid", "sleep"]
    assert all(isinstance(t, MCPTool) for t in shared.values())
    result = await shared["add"].acall({"a": 2, "b": 3})
    assert (result.content, result.error) == ("5", False)
    assert result.metadata["structured_content"] == {"result": 5}


def test_schema_comes_through(shared):
    schema = shared["add"].json_schema()
    assert schema["function"]["name"] == "add"
    assert schema["function"]["description"] == "Add two integers."
    assert schema["function"]["parameters"] == {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"],
    }
    assert set(shared["add"].args_schema.model_json_schema()["properties"]) == {"a", "b"}


async def test_a_wrong_argument_is_an_error_naming_the_field(shared):
    result = await shared["add"].acall({"a": 2, "b": "three"})
    assert result.error and "'b'" in result.content and "integer" in result.content
    result = await shared["add"].acall({"a": 2, "c": 3})
    assert result.error and "'b': Field required" in result.content and "'c'" in result.content


async def test_a_raising_tool_is_an_error_result(shared):
    result = await shared["fail"].acall({"message": "no such record"})
    assert result.error and "no such record" in result.content


async def test_a_hanging_call_times_out_and_the_server_goes_on(shared):
    started = time.monotonic()
    result = await call_tool(shared["sleep"], {"seconds": 30}, timeout_s=0.5)
    assert result.error and "took longer than 0.5 s" in result.content
    assert time.monotonic() - started < 5
    assert (await shared["add"].acall({"a": 1, "b": 1})).content == "2"


def test_a_name_loaded_again_shares_its_open_server(shared):
    again = {t.name: t for t in load_tools([STDIO])}
    assert again["add"] is not shared["add"] and again["add"].server is shared["add"].server


def test_the_tools_work_from_one_event_loop_after_another(shared):
    for n in range(3):
        assert asyncio.run(shared["add"].acall({"a": n, "b": 1})).content == str(n + 1)


async def test_its_own_time_out_ends_a_hanging_call(fresh):
    result = await fresh["sleep"].acall({"seconds": 30})
    assert result.error and "did not answer within 1 s" in result.content
    assert (await fresh["add"].acall({"a": 1, "b": 2})).content == "3"


async def test_a_server_killed_mid_session_gives_error_results_then_restarts(fresh):
    pid = int((await fresh["pid"].acall({})).content)
    in_flight = asyncio.ensure_future(fresh["sleep"].acall({"seconds": 0.8}))
    await asyncio.sleep(0.3)
    os.kill(pid, signal.SIGKILL)  # during the call
    result = await in_flight
    assert result.error and "stopped during the call to 'sleep'" in result.content
    assert "starts it again" in result.content
    assert wait_until(lambda: not alive(pid))
    assert (await fresh["add"].acall({"a": 1, "b": 2})).content == "3"  # started again
    second = int((await fresh["pid"].acall({})).content)
    assert second != pid

    crashed = await fresh["crash"].acall({})  # the server ends itself during the call
    assert crashed.error and "stopped during the call to 'crash'" in crashed.content
    assert (await fresh["add"].acall({"a": 2, "b": 2})).content == "4"  # restart 2 of 2

    # max_restarts=2 is spent: later calls keep saying so, they do not raise
    await fresh["crash"].acall({})
    for _ in range(2):
        result = await fresh["add"].acall({"a": 1, "b": 2})
        assert result.error and "not restarted again" in result.content


async def test_closed_tools_say_so_and_the_process_ends():
    tools = mcp_tools(f"{COMMAND} stdio")
    by_name = {t.name: t for t in tools}
    pid = int((await by_name["pid"].acall({})).content)
    in_flight = asyncio.ensure_future(by_name["sleep"].acall({"seconds": 30}))
    await asyncio.sleep(0.2)
    await asyncio.to_thread(close_mcp_tools, tools)
    result = await asyncio.wait_for(in_flight, 5)
    assert result.error and "closed" in result.content
    assert wait_until(lambda: not alive(pid))
    result = await by_name["add"].acall({"a": 1, "b": 2})
    assert result.error and "closed" in result.content


def test_a_missing_command_is_a_clear_load_time_error():
    with pytest.raises(ValueError, match="'no-such-mcp-server-xyz' is not found.*full path"):
        load_tools(["mcp:no-such-mcp-server-xyz --port 1"])
    with pytest.raises(ValueError, match="not found"):
        check_tool_names(["mcp:no-such-mcp-server-xyz"])


def test_a_server_that_exits_at_start_up_is_a_clear_load_time_error():
    with pytest.raises(RuntimeError, match="exited at start-up.*no configuration found"):
        load_tools([f"mcp:{COMMAND} die"])


def test_a_server_that_never_answers_is_a_load_time_error():
    with pytest.raises(RuntimeError, match="did not finish starting.*within 1 s"):
        mcp_tools(f"{shlex.quote(sys.executable)} -c '{MUTE}'", startup_timeout_s=1)
    assert wait_until(lambda: not processes_with_arg(MUTE))  # and it was stopped


def test_check_tool_names_accepts_mcp_names_without_starting_anything():
    names = [STDIO, "mcp:http://127.0.0.1:9/mcp", "python"]
    assert check_tool_names(names) == names
    with pytest.raises(ValueError, match="needs a command line or a URL"):
        check_tool_names(["mcp:  "])


async def test_streamable_http_round_trip_and_a_lost_server(http_server):
    url, process = http_server
    tools = load_tools([f"mcp:{url}"])
    try:
        by_name = {t.name: t for t in tools}
        assert (await by_name["add"].acall({"a": 20, "b": 22})).content == "42"
        assert (await by_name["fail"].acall({"message": "bad"})).error
        assert (await by_name["add"].acall({"a": "x", "b": 1})).error
        process.kill()
        process.wait(timeout=10)
        for _ in range(2):  # the call that finds it gone, then one that cannot reconnect
            result = await call_tool(by_name["add"], {"a": 1, "b": 1}, timeout_s=10)
            assert result.error and url in result.content
    finally:
        close_mcp_tools(tools)


def test_an_unreachable_url_is_a_clear_load_time_error():
    with pytest.raises(RuntimeError, match="Cannot reach MCP server at 'http://127.0.0.1:9/mcp'"):
        load_tools(["mcp:http://127.0.0.1:9/mcp"])


def test_input_schemas_become_models_that_name_the_bad_field():
    schema = {
        "type": "object",
        "properties": {
            "query": {"type": "string", "minLength": 1},
            "limit": {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}], "default": None},
            "order": {"enum": ["asc", "desc"]},
            "tags": {"type": "array", "items": {"type": "string"}},
            "where": {"$ref": "#/$defs/Where"},
        },
        "required": ["query"],
        "$defs": {"Where": {"type": "object", "properties": {"field": {"type": "string"}}, "required": ["field"]}},
    }
    model = args_model("search-records", schema)
    ok = model.model_validate({"query": "x", "limit": None, "order": "asc", "tags": ["a"], "where": {"field": "f"}})
    assert ok.model_dump(by_alias=True, exclude_unset=True)["where"] == {"field": "f"}
    for bad, field in [({"query": ""}, "query"), ({"query": "x", "limit": 0}, "limit"),
                       ({"query": "x", "order": "up"}, "order"), ({"query": "x", "tags": [1]}, "tags"),
                       ({"query": "x", "where": {}}, "where"), ({"query": "x", "other": 1}, "other")]:
        with pytest.raises(Exception) as caught:
            model.model_validate(bad)
        assert field in {str(e["loc"][0]) for e in caught.value.errors()}


def test_the_agent_calls_an_mcp_tool_end_to_end(shared, scripted):
    from agent import build_agent

    policy = scripted([CALL, "Final answer: 5", CALL, "Final answer: 5"])
    agent = build_agent(policy, [shared["add"]], protocol="json", exemplars=[])
    state = asyncio.run(agent.ainvoke({"question": "What is 2 + 3?"}))
    assert state["tool_calls"] == 2 and state["tool_errors"] == 0
    assert [m["content"] for m in state["messages"] if m["role"] == "tool"] == ["5", "5"]
    assert state["attempts"][-1]["answer"] == "5"
