"""PythonSandbox and the ``python`` tool: behaviour, concurrency, and the fork server's lifecycle."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.tools.proc_helpers import alive, processes_with_arg, wait_until
from tools.python_exec import NO_OUTPUT, ExecResult, PythonSandbox, python_tool, strip_code_fences
from tools.sandbox.client import ForkServer

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the sandbox targets Linux")


@pytest.fixture(scope="module")
def sandbox() -> PythonSandbox:
    return PythonSandbox(timeout_s=5, memory_mb=512, max_output_bytes=4096)


def run(sandbox: PythonSandbox, code: str, stdin: str = "") -> ExecResult:
    return sandbox.run(textwrap.dedent(code), stdin=stdin)


# --- results ------------------------------------------------------------------------------------


def test_print_gives_stdout_and_exit_code_zero(sandbox):
    result = sandbox.run("print(1)")
    assert (result.stdout, result.stderr, result.exit_code, result.timed_out) == ("1\n", "", 0, False)
    assert result.ok
    assert 0 < result.duration_s < 5
    assert result.cpu_s is not None and result.max_rss_mb is not None


def test_stdin_is_the_programs_input(sandbox):
    result = run(sandbox, "import sys\nprint(sum(int(x) for x in sys.stdin))", stdin="1\n2\n39\n")
    assert result.stdout == "42\n"


def test_large_stdin_and_code(sandbox):
    data = "x" * 2_000_000
    code = "import sys\nprint(len(sys.stdin.read()))\n" + "# padding\n" * 50_000
    assert sandbox.run(code, stdin=data).stdout == "2000000\n"


def test_traceback_shows_only_the_users_code(sandbox):
    result = run(
        sandbox,
        """
        def f(x):
            return 1 / x
        f(0)
        """,
    )
    assert result.exit_code == 1 and not result.ok
    assert 'File "main.py", line 4, in <module>' in result.stderr
    assert "return 1 / x" in result.stderr  # source lines are shown
    assert result.stderr.rstrip().endswith("ZeroDivisionError: division by zero")
    assert "sandbox" not in result.stderr and "child.py" not in result.stderr


def test_syntax_error(sandbox):
    result = sandbox.run("print(1")
    assert result.exit_code == 1
    assert "SyntaxError" in result.stderr and "main.py" in result.stderr


@pytest.mark.parametrize(
    ("code", "exit_code", "stderr"),
    [
        ("import sys; sys.exit(3)", 3, ""),
        ("import sys; sys.exit()", 0, ""),
        ("import sys; sys.exit('bad input')", 1, "bad input\n"),
        ("import os; print('x', flush=True); os._exit(7)", 7, ""),
        ("raise SystemExit(256 + 5)", 5, ""),
    ],
)
def test_exit_codes_match_cpython(sandbox, code, exit_code, stderr):
    result = sandbox.run(code)
    assert (result.exit_code, result.stderr) == (exit_code, stderr)


def test_main_module_semantics(sandbox):
    result = run(
        sandbox,
        """
        import sys, os
        print(__name__, __file__, sys.argv, os.getcwd() == sys.path[0])
        """,
    )
    assert result.stdout == "__main__ main.py ['main.py'] True\n"


def test_atexit_and_threads_finish_before_exit(sandbox):
    result = run(
        sandbox,
        """
        import atexit, threading, time
        atexit.register(lambda: print("atexit ran"))
        threading.Thread(target=lambda: (time.sleep(0.2), print("thread done"))).start()
        """,
    )
    assert result.stdout == "thread done\natexit ran\n"


def test_timeout(sandbox):
    quick = PythonSandbox(timeout_s=0.5, server=sandbox.server)
    started = time.monotonic()
    result = quick.run("print('before', flush=True)\nwhile True: pass")
    assert result.timed_out and result.exit_code is None and not result.ok
    assert result.stdout == "before\n"
    assert 0.5 <= result.duration_s < 1.5 and time.monotonic() - started < 3


def test_output_is_capped_with_a_marker(sandbox):
    result = sandbox.run("print('y' * 100_000)")
    assert result.truncated and result.ok
    assert result.stdout.startswith("y" * 4096)
    assert "output truncated: 95905 more bytes not shown" in result.stdout


def test_unicode_round_trip(sandbox):
    text = "héllo 世界 🎉 \u0394"
    result = sandbox.run(f"print({text!r})\ns = input()\nprint(s[::-1])", stdin="→ok←\n")
    assert result.stdout == f"{text}\n←ko→\n"


def test_runs_share_nothing(sandbox):
    # an interpreter installed under /tmp is bound back (read-only) into the private /tmp: not a leftover
    scaffolding = {Path(p).relative_to("/tmp").parts[0] for p in (sys.prefix, sys.base_prefix)
                   if p.startswith("/tmp/")}
    listing = f"import os; print(sorted(set(os.listdir('.')) - {scaffolding!r}))"
    first = sandbox.run("open('note.txt', 'w').write('hi')\n" + listing)
    second = sandbox.run(listing)
    assert first.stdout == "['note.txt']\n"
    assert second.stdout == "[]\n"


def test_random_state_differs_between_runs(sandbox):
    values = {sandbox.run("import random; print(random.random())").stdout for _ in range(3)}
    assert len(values) == 3


def test_site_packages_and_subprocesses_work(sandbox):
    result = run(
        sandbox,
        """
        import subprocess, sys
        import numpy
        print(numpy.arange(4).sum())
        print(subprocess.run([sys.executable, "-c", "print(6 * 7)"], capture_output=True, text=True).stdout)
        """,
    )
    assert result.ok, result.stderr
    assert result.stdout.split() == ["6", "42"]


def test_clean_environment_and_no_inherited_descriptors(sandbox, monkeypatch):
    monkeypatch.setenv("ANCHORLOOP_SHOULD_NOT_LEAK", "1")
    result = run(
        sandbox,
        """
        import os
        print(sorted(os.environ))
        print(sorted(int(fd) for fd in os.listdir('/proc/self/fd')))
        """,
    )
    env_names, fds = result.stdout.splitlines()
    assert "ANCHORLOOP_SHOULD_NOT_LEAK" not in env_names
    assert "PATH" in env_names and "HOME" in env_names
    assert eval(fds)[:3] == [0, 1, 2] and len(eval(fds)) == 4  # the 4th is listdir's own


def test_isolation_is_reported(sandbox):
    result = sandbox.run("pass")
    assert result.isolation == sandbox.isolation
    assert result.isolation["process_group_kill"] and result.isolation["rlimits"]
    layers = ("unprivileged_uid", "user_ns", "net_ns", "pid_ns", "mount_ns", "readonly_fs", "private_tmp")
    assert set(layers) <= set(result.isolation)
    if not all(result.isolation.values()):
        assert sandbox.isolation_notes, "inactive layers must come with a reason"


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="timeout_s"):
        PythonSandbox(timeout_s=0)
    with pytest.raises(ValueError, match="memory_mb"):
        PythonSandbox(memory_mb=1)
    with pytest.raises(TypeError, match="code must be a str"):
        PythonSandbox().run(b"print(1)")  # type: ignore[arg-type]


# --- concurrency --------------------------------------------------------------------------------


async def test_many_concurrent_aruns(sandbox):
    results = await asyncio.gather(*(sandbox.arun(f"print({i} * 2)") for i in range(24)))
    assert [r.stdout for r in results] == [f"{i * 2}\n" for i in range(24)]


async def test_arun_does_not_block_the_event_loop(sandbox):
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    result = await sandbox.arun("import time; time.sleep(0.5); print('slept')")
    task.cancel()
    assert result.stdout == "slept\n"
    assert ticks >= 20


async def test_cancelling_arun_kills_the_program(sandbox, tmp_path):
    token = f"{os.getpid()}.{time.time_ns() % 10**6}"
    code = f"import os\nos.execv('/bin/sleep', ['sleep', '{token}'])"
    task = asyncio.create_task(sandbox.arun(code))
    await asyncio.sleep(0.5)
    assert processes_with_arg(token), "the program should be running"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert wait_until(lambda: not processes_with_arg(token)), "a cancelled run must be killed"
    assert sandbox.run("print('still fine')").stdout == "still fine\n"


def test_runs_from_many_threads(sandbox):
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda i: sandbox.run(f"print({i})"), range(32)))
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(32)]


def test_more_runs_than_slots_wait_their_turn():
    server = ForkServer(max_concurrency=2)
    try:
        small = PythonSandbox(timeout_s=5, server=server)
        code = "import time; time.sleep(0.2); print('ok')"
        with ThreadPoolExecutor(max_workers=6) as pool:
            results = list(pool.map(lambda _: small.run(code), range(6)))
        assert all(r.stdout == "ok\n" for r in results)
        assert all(r.duration_s < 1 for r in results), "time spent queued must not count against the timeout"
    finally:
        server.close()


# --- the fork server's lifecycle ----------------------------------------------------------------


def test_server_is_restarted_after_it_dies():
    server = ForkServer()
    try:
        sandbox = PythonSandbox(server=server)
        assert sandbox.run("print(1)").ok
        first = server.pid
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: not alive(first))
        assert sandbox.run("print(2)").stdout == "2\n"
        assert server.pid not in (None, first)
    finally:
        server.close()


def test_server_is_restarted_when_its_zygote_dies():
    server = ForkServer()
    try:
        sandbox = PythonSandbox(server=server)
        assert sandbox.run("print(1)").ok
        first = server.pid
        os.kill(server.hello["zygote_pid"], signal.SIGKILL)
        assert wait_until(lambda: not alive(first), timeout=30), "the server shuts down without its zygote"
        assert sandbox.run("print(2)").stdout == "2\n" and server.pid != first
    finally:
        server.close()


async def test_server_is_restarted_for_async_callers_too():
    server = ForkServer()
    try:
        sandbox = PythonSandbox(server=server)
        assert (await sandbox.arun("print(1)")).ok
        os.kill(server.pid, signal.SIGKILL)
        assert (await sandbox.arun("print(3)")).stdout == "3\n"
    finally:
        server.close()


def test_server_dies_mid_run_and_the_run_is_retried():
    server = ForkServer()
    try:
        sandbox = PythonSandbox(timeout_s=5, server=server)
        sandbox.run("pass")
        victim = server.pid
        threading.Timer(0.3, os.kill, (victim, signal.SIGKILL)).start()
        result = sandbox.run("import time; time.sleep(0.6); print('done')")
        assert result.stdout == "done\n" and server.pid != victim
    finally:
        server.close()


def test_a_forked_host_gets_its_own_server(sandbox):
    assert sandbox.run("pass").ok
    parent_server = sandbox.server.pid
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the forked copy of this test process
        try:
            result = sandbox.run("print('from the fork')")
            os.write(write, f"{result.stdout.strip()}|{sandbox.server.pid}".encode())
        finally:
            os._exit(0)
    os.close(write)
    answer = os.read(read, 1000).decode()
    os.close(read)
    os.waitpid(pid, 0)
    output, child_server = answer.split("|")
    assert output == "from the fork" and int(child_server) != parent_server
    assert sandbox.server.pid == parent_server and sandbox.run("print(1)").ok


def test_server_exits_with_its_host():
    script = textwrap.dedent(
        """
        from tools.python_exec import PythonSandbox
        sandbox = PythonSandbox()
        assert sandbox.run("print(1)").ok
        print(sandbox.server.pid, flush=True)
        """
    )
    host = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert host.returncode == 0, host.stderr
    server_pid = int(host.stdout.split()[-1])
    assert wait_until(lambda: not alive(server_pid)), "the server must not outlive its host"


def test_server_exits_when_its_host_is_killed():
    script = textwrap.dedent(
        """
        import time
        from tools.python_exec import PythonSandbox
        sandbox = PythonSandbox()
        assert sandbox.run("print(1)").ok
        print(sandbox.server.pid, flush=True)
        time.sleep(60)
        """
    )
    host = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    server_pid = int(host.stdout.readline())
    host.kill()
    host.wait()
    assert wait_until(lambda: not alive(server_pid)), "the server must notice its host is gone"


# --- the python tool ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tool(sandbox):
    return python_tool(PythonSandbox(timeout_s=1, memory_mb=256, server=sandbox.server))


def test_tool_contract(tool):
    assert tool.name == "python"
    schema = tool.json_schema()
    assert schema["function"]["name"] == "python"
    assert schema["function"]["parameters"]["required"] == ["code"]
    assert "print" in tool.description


async def test_tool_shows_stdout(tool):
    result = await tool.acall({"code": "print(2 + 2)"})
    assert (result.content, result.error) == ("4", False)
    assert result.metadata["exit_code"] == 0


async def test_tool_says_when_there_is_no_output(tool):
    result = await tool.acall({"code": "x = 2 + 2"})
    assert result.content == NO_OUTPUT and not result.error


async def test_tool_shows_the_error_and_exit_code(tool):
    result = await tool.acall({"code": "print('partial')\nint('seven')"})
    assert result.error
    assert "Output:\npartial" in result.content
    assert "Error (exit code 1)" in result.content
    assert "ValueError: invalid literal for int() with base 10: 'seven'" in result.content


async def test_tool_reports_timeout(tool):
    result = await tool.acall({"code": "while True: pass"})
    assert result.error and result.metadata["timed_out"]
    assert result.content.startswith("Timed out after 1 s")


async def test_tool_reports_memory_limit(tool):
    result = await tool.acall({"code": "x = bytearray(2 * 1024**3)"})
    assert result.error and "MemoryError" in result.content and "memory limit is 256 MB" in result.content


async def test_tool_reports_a_crash(tool):
    result = await tool.acall({"code": "import ctypes; ctypes.string_at(0)"})
    assert result.error and "SIGSEGV" in result.content


async def test_tool_keeps_long_tracebacks_short(tool):
    result = await tool.acall({"code": "def f(n): return f(n + 1)\nf(0)"})
    assert result.error and "RecursionError" in result.content
    assert len(result.content) < 1500


async def test_tool_rejects_bad_arguments(tool):
    result = await tool.acall({"source": "print(1)"})
    assert result.error and "code" in result.content


async def test_tool_accepts_fenced_code(tool):
    result = await tool.acall({"code": "```python\nprint('fenced')\n```"})
    assert result.content == "fenced"


def test_format_result_for_a_run_over_its_memory_cap():
    from tools.python_exec import format_result

    result = ExecResult(exit_code=-9, signal="SIGKILL", oom_killed=True)
    text = format_result(result, PythonSandbox(memory_mb=300))
    assert text == "The program was killed for using too much memory (limit 300 MB)."


def test_strip_code_fences():
    assert strip_code_fences("```\nprint(1)\n```") == "print(1)"
    assert strip_code_fences("```py\na\nb\n```\n") == "a\nb"
    assert strip_code_fences("print('```')") == "print('```')"


def test_registry_knows_the_python_tool():
    from tools import load_tools

    (loaded,) = load_tools(["python"])
    assert loaded.name == "python"


# --- helpers ------------------------------------------------------------------------------------


def test_full_isolation_from_a_checkout_in_a_private_temp_dir(tmp_path):
    """CI runs from a fresh clone under a 0700 temp dir: the interpreter there must stay reachable
    inside the private /tmp, or every isolated plan fails and runs degrade to the bare one."""
    import subprocess
    import sys
    import venv

    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    env_dir = private / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    site = next(env_dir.glob("lib/python*/site-packages"))
    (site / "host_paths.pth").write_text("\n".join(p for p in sys.path if p) + "\n")
    code = ("from tools.python_exec import PythonSandbox\n"
            "sb = PythonSandbox()\n"
            "r = sb.run('import os; print(os.getuid())')\n"
            "print(r.stdout.strip(), sorted(k for k, v in sb.isolation.items() if not v))\n")
    host = PythonSandbox()
    out = subprocess.run([str(env_dir / "bin" / "python"), "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=str(private)).stdout
    uid, missing = out.split(" ", 1)
    assert missing.strip() == str(sorted(k for k, v in host.isolation.items() if not v))
    assert uid != "0"
