"""Hostile programs against the function channel (tools as functions inside sandboxed code).

The channel may reach the run's own tools and nothing else, whatever the program writes on it: unknown
names, huge or malformed frames, floods, calls racing the deadline. After every test the server is
the same working process and no process of a run is left (as in ``test_sandbox_hostile``).
"""

from __future__ import annotations

import asyncio
import sys
import textwrap
import time

import pytest

from tests.tools.proc_helpers import alive, wait_until
from tests.tools.test_sandbox_hostile import _leftovers
from tools import tool
from tools.code_functions import CodeFunctions
from tools.python_exec import PythonSandbox
from tools.sandbox import relay
from tools.sandbox.client import ForkServer

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the sandbox targets Linux")

TIMEOUT_S = 2.0
RAW = """
import json, socket, struct
chan = socket.socket(fileno=4)
def send(body):
    chan.sendall(struct.pack('!I', len(body)) + body)
def recv():
    head = b''
    while len(head) < 4:
        part = chan.recv(4 - len(head))
        if not part:
            return None
        head += part
    (n,) = struct.unpack('!I', head)
    body = b''
    while len(body) < n:
        body += chan.recv(n - len(body))
    return json.loads(body)
"""

host_calls: list[str] = []


@tool
def echo(value: int) -> int:
    """Give the value back."""
    host_calls.append("echo")
    return value


@tool
async def slow(seconds: float) -> str:
    """Sleep, then say so."""
    host_calls.append("slow")
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        host_calls.append("slow cancelled")
        raise
    return "done"


@pytest.fixture(scope="module")
def server() -> ForkServer:
    server = ForkServer(max_concurrency=6, warm=0)  # no waiting trees: any process of a run left is a leak
    yield server
    server.close()


@pytest.fixture(scope="module")
def sandbox(server) -> PythonSandbox:
    return PythonSandbox(timeout_s=TIMEOUT_S, memory_mb=256, max_output_bytes=16384, server=server)


@pytest.fixture(autouse=True)
def host_unharmed(server):
    server.ensure_started()
    before = server.pid
    host_calls.clear()
    yield
    assert wait_until(lambda: not _leftovers(server)), f"processes outlived their run: {_leftovers(server)}"
    assert server.pid == before and alive(before), "the fork server must survive hostile programs"
    assert PythonSandbox(server=server).run("print('alive')").stdout == "alive\n"


def run(sandbox, code: str, *, tools=(echo, slow), timeout_s: float = 1.0, max_calls: int = 8):
    functions = CodeFunctions(list(tools), timeout_s=timeout_s, max_calls=max_calls)
    calls = functions.session()
    return sandbox.run(textwrap.dedent(code), functions=calls), calls


def test_functions_return_values_and_errors(sandbox):
    result, calls = run(sandbox, """
        print(echo(41) + 1, echo(value=2))
        try:
            echo("not a number")
        except ToolError as exc:
            print("refused:", exc)
    """)
    assert result.ok, result.stderr
    first, second = result.stdout.splitlines()
    assert first == "42 2"
    assert second.startswith("refused: Bad arguments for tool 'echo'")
    assert [c["error"] for c in calls.calls] == [False, False, True]


@pytest.mark.parametrize("name", ["python", "__import__", "os.system", "call_tool", "acall", "", "x" * 5000, 7, None])
def test_only_the_runs_own_tools_can_be_called(sandbox, name):
    result, calls = run(sandbox, RAW + f"""
send(json.dumps({{"id": 1, "name": {name!r}, "args": {{"code": "print(1)"}}}}).encode())
print(recv())
print(echo(3))
""")
    assert result.ok, result.stderr
    reply, value = result.stdout.splitlines()
    assert "'ok': False" in reply and "there is no function" in reply and len(reply) < 400
    assert value == "3" and host_calls == ["echo"]


def test_arguments_cannot_reach_anything_but_the_schema(sandbox):
    result, _ = run(sandbox, """
        for bad in ({"value": 1, "__class__": "x"}, {"value": {"__import__": "os"}}, {}):
            try:
                echo(**bad)
            except ToolError as exc:
                print("refused")
        try:
            echo(open)
        except TypeError as exc:
            print("not sent:", exc)
    """)
    assert result.stdout.splitlines()[:3] == ["refused"] * 3
    assert result.stdout.splitlines()[3].startswith("not sent: echo(): a builtin_function_or_method cannot be sent")
    assert host_calls == []  # pydantic refused each before the function ran


@pytest.mark.parametrize(
    "frame",
    [
        "struct.pack('!I', 2**31) + b'x'",  # a frame far over the limit
        f"struct.pack('!I', {relay.MAX_REQUEST_BYTES + 1}) + b'x' * {relay.MAX_REQUEST_BYTES + 1}",
        "struct.pack('!I', 9) + b'not json!'",
        "struct.pack('!I', 2) + b'[]'",
        "struct.pack('!I', 2) + b'\\xff\\xfe'",
        "struct.pack('!I', 200000) + b'[' * 200000",
        "struct.pack('!I', 6000) + b'1' * 6000",
        "(lambda b: struct.pack('!I', len(b)) + b)(b'{\"id\": \"1\", \"name\": \"echo\"}')",
        "(lambda b: struct.pack('!I', len(b)) + b)(b'{\"id\": true, \"name\": \"echo\"}')",
    ],
)
def test_malformed_frames_end_the_channel(sandbox, frame):
    result, _ = run(sandbox, RAW + f"""
try:
    chan.sendall({frame})
except BrokenPipeError:  # the server read enough of it to close the channel
    pass
reply = recv()
print(reply and reply['id'])
try:
    echo(1)
except ToolError as exc:
    print(exc)
""")
    assert result.ok, result.stderr
    ended, after = result.stdout.splitlines()
    assert ended == "None"
    assert after.startswith("echo() cannot be called:")
    assert host_calls == []


def test_oversized_arguments_are_refused_before_sending(sandbox):
    result, _ = run(sandbox, """
        try:
            echo("x" * (2 << 20))
        except ValueError as exc:
            print(exc)
        print(echo(5))
    """)
    assert "the limit is" in result.stdout and result.stdout.splitlines()[-1] == "5"


def test_a_flood_of_calls_is_capped(sandbox):
    result, calls = run(sandbox, """
        import collections
        seen = collections.Counter()
        for i in range(100_000):
            try:
                echo(i)
                seen["ok"] += 1
            except ToolError as exc:
                seen[str(exc).split(":")[0]] += 1
        print(dict(seen))
    """, max_calls=8)
    assert result.ok, result.stderr
    seen = eval(result.stdout)
    assert seen["ok"] == 8 and len(calls.calls) == 8 and host_calls == ["echo"] * 8
    assert seen["the limit of 8 function calls per run is used up"] == relay.MAX_REFUSED
    assert seen["echo() cannot be called"] == 100_000 - 8 - relay.MAX_REFUSED


def test_a_flood_of_unread_requests(sandbox):
    """Requests written as fast as possible, answers never read: the server stays bounded and serves others."""
    started = time.monotonic()
    result, _ = run(sandbox, RAW + """
import os
body = json.dumps({"id": 1, "name": "echo", "args": {"value": 1}}).encode()
frame = struct.pack('!I', len(body)) + body
try:
    for _ in range(200_000):
        chan.sendall(frame)
except OSError as exc:
    print("closed:", type(exc).__name__)
print("wrote")
""", max_calls=1000)
    assert time.monotonic() - started < TIMEOUT_S + 5
    assert result.timed_out or "closed" in result.stdout, result
    assert len(host_calls) <= 1000


def test_concurrent_requests_are_limited_in_flight(sandbox):
    result, _ = run(sandbox, RAW + """
for i in range(20):
    send(json.dumps({"id": i + 1, "name": "slow", "args": {"seconds": 0.3}}).encode())
replies = [recv() for _ in range(20)]
print(sum(r['ok'] for r in replies), sum('at once' in r.get('error', '') for r in replies))
""", max_calls=100)
    assert result.ok, result.stderr
    assert result.stdout.split() == [str(relay.MAX_IN_FLIGHT), str(20 - relay.MAX_IN_FLIGHT)]


def test_a_call_running_past_the_deadline_is_cancelled(sandbox):
    started = time.monotonic()
    result, _ = run(sandbox, "print(slow(30))", timeout_s=60)
    assert result.timed_out
    assert time.monotonic() - started < TIMEOUT_S + 3
    assert wait_until(lambda: "slow cancelled" in host_calls, timeout=2)


def test_a_hung_tool_is_given_up_at_its_time_out(sandbox):
    result, calls = run(sandbox, """
        try:
            slow(30)
        except ToolError as exc:
            print(exc)
    """, timeout_s=0.3)
    assert result.ok, result.stderr
    assert "took longer than 0.3 s" in result.stdout and calls.calls == [{"name": "slow", "error": True}]


def test_no_call_is_answered_after_the_run(sandbox):
    """A child the program leaves behind tries the channel after the program exits."""
    result, _ = run(sandbox, """
        import os, time
        if os.fork() == 0:
            time.sleep(0.5)
            try:
                echo(1)
            finally:
                os._exit(0)
        print("parent done")
    """)
    assert result.stdout == "parent done\n"
    time.sleep(1.0)
    assert host_calls == []


def test_runs_without_functions_have_no_channel(sandbox):
    result = sandbox.run("import os\ntry:\n    os.fstat(4)\nexcept OSError:\n    print('no fd 4')\nprint(echo)")
    assert result.stdout == "no fd 4\n" and "NameError" in result.stderr


async def test_concurrent_runs_each_reach_their_own_tools(sandbox):
    async def one(i: int):
        calls = CodeFunctions([echo]).session()
        result = await sandbox.arun(f"print(echo({i}) * 2)", functions=calls)
        return result.stdout.strip()

    outputs = await asyncio.gather(*(one(i) for i in range(12)))
    assert outputs == [str(2 * i) for i in range(12)]
