"""Hostile programs. Each test checks that the host is unharmed and that the result says what happened.

After every test, no process of the run may be left (checked by the uid range of the server's runs
when runs drop to an unprivileged uid), and the fork server must still be the same, working process.
Tests that need a layer the host does not allow are skipped with the reason the sandbox gives.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from tests.tools.proc_helpers import alive, processes_with_arg, wait_until
from tools.python_exec import ExecResult, PythonSandbox
from tools.sandbox.client import ForkServer

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the sandbox targets Linux")

TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def server() -> ForkServer:
    # No waiting process trees: then any process in the runs' uid range is one that outlived its run.
    server = ForkServer(max_concurrency=6, warm=0)
    yield server
    server.close()


@pytest.fixture(scope="module")
def sandbox(server) -> PythonSandbox:
    return PythonSandbox(
        timeout_s=TIMEOUT_S, memory_mb=256, max_output_bytes=8192, max_processes=32, server=server
    )


@pytest.fixture(autouse=True)
def host_unharmed(request, server):
    """Around every test: the server survives, and no process of any run outlives it."""
    server.ensure_started()
    before = server.pid
    yield
    assert wait_until(lambda: not _leftovers(server)), f"processes outlived their run: {_leftovers(server)}"
    assert server.pid == before and alive(before), "the fork server must survive hostile programs"
    assert PythonSandbox(server=server).run("print('alive')").stdout == "alive\n"


def run(sandbox: PythonSandbox, code: str, stdin: str = "") -> ExecResult:
    return sandbox.run(textwrap.dedent(code), stdin=stdin)


def need(sandbox: PythonSandbox, layer: str) -> None:
    if not sandbox.isolation.get(layer):
        pytest.skip(f"isolation layer {layer!r} is not active on this host: {sandbox.isolation_notes}")


def need_contained_signals(sandbox: PythonSandbox) -> None:
    """kill(-1) from a program running as the host's root outside a PID namespace would signal every
    process on the machine; such tests run only where a uid drop or a PID namespace contains them."""
    layers = sandbox.isolation
    if not (layers.get("pid_ns") or layers.get("unprivileged_uid") or os.geteuid() != 0):
        pytest.skip(f"signals are not contained on this host: {sandbox.isolation_notes}")


# --- CPU, processes, memory, output ----------------------------------------------------------------


def test_infinite_loop_times_out(sandbox):
    started = time.monotonic()
    result = sandbox.run("while True: pass")
    assert result.timed_out and result.exit_code is None
    assert time.monotonic() - started < TIMEOUT_S + 2


def test_loop_ignoring_sigterm_is_still_stopped(sandbox):
    result = run(
        sandbox,
        """
        import signal
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        while True: pass
        """,
    )
    assert result.timed_out


def test_busy_child_left_behind_by_a_finished_parent(sandbox):
    result = run(
        sandbox,
        """
        import os
        if os.fork() == 0:
            while True: pass
        print("parent done")
        """,
    )
    assert result.ok and result.stdout == "parent done\n"


def test_fork_bomb(sandbox):
    result = run(
        sandbox,
        """
        import os
        while True:
            try:
                os.fork()
            except OSError:
                pass
        """,
    )
    assert not result.ok
    assert subprocess.run(["true"]).returncode == 0, "the host can still start processes"


def test_process_limit_is_enforced(sandbox):
    result = run(
        sandbox,
        """
        import os, time
        children = 0
        try:
            for _ in range(200):
                if os.fork() == 0:
                    time.sleep(5)
                    os._exit(0)
                children += 1
        except OSError as exc:
            print("stopped after", children, type(exc).__name__)
        """,
    )
    assert result.ok and "stopped after" in result.stdout
    assert int(result.stdout.split()[2]) < 40


def test_memory_bomb_at_once(sandbox):
    result = sandbox.run("x = bytearray(8 * 1024**3)")
    assert result.exit_code == 1 and "MemoryError" in result.stderr


def test_memory_bomb_growing(sandbox):
    result = sandbox.run("chunks = []\nwhile True:\n    chunks.append(bytearray(10**7))")
    assert result.exit_code == 1 and "MemoryError" in result.stderr


def test_memory_bomb_spread_over_many_processes(sandbox):
    need(sandbox, "cgroup")  # without it, each process may use its own 256 MB: over 1 GB in all
    patient = PythonSandbox(timeout_s=10, memory_mb=256, server=sandbox.server)
    result = run(
        patient,
        """
        import os, time
        children = []
        for _ in range(6):
            pid = os.fork()
            if pid == 0:
                block = b"x" * (180 * 2**20)  # touched, so it is really resident
                time.sleep(0.5)
                os._exit(0)
            children.append(pid)
        print(sorted(os.waitpid(pid, 0)[1] for pid in children))
        """,
    )
    assert result.oom_killed and "9" in result.stdout, result  # 9: a child died of SIGKILL
    assert not result.timed_out


def test_huge_int(sandbox):
    result = sandbox.run("print(10**100000)")
    assert result.exit_code == 1 and "Exceeds the limit" in result.stderr
    slow = sandbox.run("x = 7 ** (10**9)")
    assert not slow.ok and (slow.timed_out or "MemoryError" in slow.stderr)


def test_100_mb_of_output(sandbox):
    started = time.monotonic()
    patient = PythonSandbox(timeout_s=10, max_output_bytes=8192, server=sandbox.server)
    result = patient.run("import sys\nfor _ in range(100):\n    sys.stdout.write('x' * 10**6)")
    assert result.ok and result.truncated
    assert result.stdout.startswith("x" * 8192)
    assert "output truncated: 99991808 more bytes not shown" in result.stdout
    assert len(result.stdout) < 8300
    assert time.monotonic() - started < 10


def test_endless_output_on_both_streams(sandbox):
    result = sandbox.run(
        "import sys\nwhile True:\n    print('o' * 1000)\n    print('e' * 1000, file=sys.stderr)"
    )
    assert result.timed_out and result.truncated
    assert len(result.stdout) < 8300 and len(result.stderr) < 8300


def test_file_size_limit(sandbox):
    result = sandbox.run("open('big.bin', 'wb').write(b'0' * 100 * 2**20)")
    assert result.exit_code == 1 and "File too large" in result.stderr


def test_open_files_limit(sandbox):
    result = sandbox.run("files = [open('f%d' % i, 'w') for i in range(10000)]")
    assert result.exit_code == 1 and "Too many open files" in result.stderr


def test_non_daemon_thread_spinning_forever(sandbox):
    result = run(
        sandbox,
        """
        import threading
        def spin():
            while True:
                pass
        threading.Thread(target=spin).start()
        print("main thread done", flush=True)
        """,
    )
    assert result.timed_out and result.stdout == "main thread done\n"


def test_deep_recursion(sandbox):
    result = sandbox.run("def f(n): return f(n + 1)\nf(0)")
    assert result.exit_code == 1 and "RecursionError" in result.stderr


def test_deep_recursion_past_the_c_stack(sandbox):
    result = sandbox.run("import sys\nsys.setrecursionlimit(10**8)\ndef f(n): return f(n + 1)\nf(0)")
    assert not result.ok
    assert result.timed_out or result.signal == "SIGSEGV" or "Error" in result.stderr


# --- files ---------------------------------------------------------------------------------------


def test_writing_outside_the_work_dir(sandbox, tmp_path):
    targets = [
        tmp_path / "evil.txt",
        Path("/etc/evil.txt"),
        Path(__file__).with_name("evil.txt"),
        Path("/root/evil"),
    ]
    result = run(
        sandbox,
        f"""
        for path in {[str(t) for t in targets]!r}:
            try:
                open(path, "w").write("pwned")
                print("WROTE", path)
            except OSError as exc:
                print("refused", type(exc).__name__)
        """,
    )
    try:
        assert "WROTE" not in result.stdout and result.stdout.count("refused") == len(targets)
        assert not any(t.exists() for t in targets)
    finally:  # a failure must not leave its files behind for the next run to trip over
        for t in targets:
            t.unlink(missing_ok=True)


def test_writes_to_shared_temp_dirs_stay_private(sandbox):
    name = f"anchorloop-hostile-{os.getpid()}"
    result = run(
        sandbox,
        f"""
        import os
        for d in ("/tmp", "/dev/shm", "/var/tmp"):
            try:
                open(os.path.join(d, {name!r}), "w").write("x")
                print("wrote", d)
            except OSError as exc:
                print("refused", d, type(exc).__name__)
        """,
    )
    assert result.ok
    for d in ("/tmp", "/dev/shm", "/var/tmp"):
        assert not os.path.exists(os.path.join(d, name)), f"a file written in the sandbox appeared in {d}"


def test_deleting_files_outside_the_work_dir(sandbox, tmp_path):
    sentinel = tmp_path / "sentinel.txt"
    sentinel.write_text("keep me")
    result = run(
        sandbox,
        f"""
        import os, shutil
        path = {str(sentinel)!r}
        attempts = [lambda: os.remove(path), lambda: shutil.rmtree(os.path.dirname(path)),
                    lambda: os.rename(path, "stolen"), lambda: os.chmod(path, 0)]
        for attempt in attempts:
            try:
                attempt()
                print("DID IT")
            except OSError as exc:
                print("refused", type(exc).__name__)
        """,
    )
    assert "DID IT" not in result.stdout
    assert sentinel.read_text() == "keep me"


def test_reading_protected_files(sandbox):
    result = run(
        sandbox,
        """
        for path in ("/etc/shadow", "/root/.bash_history", "/proc/1/environ"):
            try:
                print("READ", path, len(open(path).read()))
            except OSError as exc:
                print("refused", type(exc).__name__)
        """,
    )
    assert "READ /etc/shadow" not in result.stdout and "READ /root" not in result.stdout


def test_becoming_root(sandbox):
    need(sandbox, "unprivileged_uid")
    result = run(
        sandbox,
        """
        import os
        for attempt in (lambda: os.setuid(0), lambda: os.setgid(0), lambda: os.chroot("/")):
            try:
                attempt()
                print("BECAME ROOT")
            except OSError as exc:
                print("refused", type(exc).__name__)
        print(os.geteuid() != 0)
        """,
    )
    assert "BECAME ROOT" not in result.stdout and result.stdout.endswith("True\n")


# --- secrets and network ---------------------------------------------------------------------------


def test_parent_environment_secrets_do_not_leak(monkeypatch):
    secret = "s3cr3t-" + str(time.time_ns())
    monkeypatch.setenv("ANCHORLOOP_TEST_SECRET", secret)
    server = ForkServer()  # started after the secret is set, so the host environment holds it
    try:
        sandbox = PythonSandbox(timeout_s=5, server=server)
        result = run(
            sandbox,
            f"""
            import os, glob
            print(dict(os.environ))
            for path in ["/proc/self/environ", "/proc/{os.getpid()}/environ", *glob.glob("/proc/*/environ")]:
                try:
                    print(open(path, "rb").read())
                except OSError as exc:
                    print("refused", path, type(exc).__name__)
            """,
        )
        assert result.ok, result.stderr
        assert secret not in result.stdout and secret not in result.stderr
    finally:
        server.close()


async def test_other_runs_are_not_in_the_programs_memory(sandbox):
    """Trees are forked from a zygote that never held a run: a program cannot find the code or
    output of runs in flight by walking the interpreter's objects or frames."""
    marker = f"victim-{time.time_ns()}"
    victim = asyncio.create_task(
        sandbox.arun(f"import time\nprint({marker!r}, flush=True)\ntime.sleep(0.8)  # {marker}")
    )
    await asyncio.sleep(0.2)
    await asyncio.gather(*(sandbox.arun("pass") for _ in range(4)))  # new trees are forked meanwhile
    spy = textwrap.dedent(
        """
        import gc, sys
        text = []
        frame = sys._getframe()
        while frame is not None:
            text.append(repr(frame.f_locals)[:100000])
            frame = frame.f_back
        for obj in gc.get_objects():
            if isinstance(obj, dict):
                text.append(repr(obj)[:10000])
            elif hasattr(obj, "__dict__"):
                text.append(repr(vars(obj))[:10000])
        print(sum(len(t) for t in text), "victim-" + "%d" % 0 in "".join(text))
        """
    )
    result = await sandbox.arun(
        spy.replace('"victim-" + "%d" % 0', repr(marker[:7]) + " + " + repr(marker[7:]))
    )
    await victim
    assert result.ok, result.stderr
    assert result.stdout.split()[1] == "False", "a program found another run's data in its memory"


def test_host_processes_are_invisible(sandbox):
    need(sandbox, "fresh_proc")
    result = sandbox.run("import os\nprint(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))")
    assert result.stdout == "[1, 2]\n"  # the run's init and the program itself


def test_connecting_to_a_local_listener(sandbox):
    need(sandbox, "net_ns")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    accepted = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            accepted.append(listener.accept())

    thread = threading.Thread(target=accept)
    thread.start()
    result = run(
        sandbox,
        f"""
        import socket
        try:
            socket.create_connection(("127.0.0.1", {port}), timeout=1)
            print("CONNECTED")
        except OSError as exc:
            print("blocked", exc)
        """,
    )
    thread.join()
    listener.close()
    assert "blocked" in result.stdout and not accepted


def test_dns_lookup(sandbox):
    need(sandbox, "net_ns")
    result = run(
        sandbox,
        """
        import socket
        try:
            print("RESOLVED", socket.getaddrinfo("pypi.org", 443))
        except OSError as exc:
            print("blocked", type(exc).__name__)
        """,
    )
    assert result.stdout.startswith("blocked")


def test_only_a_down_loopback_exists(sandbox):
    need(sandbox, "net_ns")
    result = sandbox.run("import socket\nprint(socket.if_nameindex())")
    assert result.stdout == "[(1, 'lo')]\n"


# --- processes and signals -----------------------------------------------------------------------


def test_killing_the_parent(sandbox):
    need_contained_signals(sandbox)
    result = run(
        sandbox,
        """
        import os, signal
        for target in (os.getppid(), 1, -1, 0):
            try:
                os.kill(target, signal.SIGKILL)
            except OSError as exc:
                print("refused", type(exc).__name__)
        print("still here")
        """,
    )
    assert result.exit_code in (0, -9, None) and not result.timed_out
    assert os.getppid() > 1  # pytest's parent and this process are fine


def test_killing_the_server_and_test_process_by_pid(sandbox, server):
    need_contained_signals(sandbox)
    result = run(
        sandbox,
        f"""
        import os
        for pid in ({server.pid}, {os.getpid()}):
            try:
                os.kill(pid, 9)
                print("KILLED", pid)
            except OSError as exc:
                print("refused", type(exc).__name__)
        """,
    )
    assert "KILLED" not in result.stdout and result.ok


def test_daemon_that_outlives_the_run(sandbox):
    token = f"{os.getpid() % 1000}.{time.time_ns() % 10**6}"
    result = run(
        sandbox,
        f"""
        import os, signal
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                signal.signal(signal.SIGHUP, signal.SIG_IGN)
                for fd in (0, 1, 2):
                    os.close(fd)
                os.execv("/bin/sleep", ["sleep", "{token}"])
            os._exit(0)
        os.wait()
        print("daemonized")
        """,
    )
    assert result.ok and result.stdout == "daemonized\n"
    assert wait_until(lambda: not processes_with_arg(token)), "the daemon survived its run"


def test_daemon_holding_stdout_does_not_hang_the_run(sandbox):
    started = time.monotonic()
    result = sandbox.run("import os, time\nif os.fork() == 0:\n    time.sleep(60)\nprint('parent exits')")
    assert result.ok and result.stdout == "parent exits\n"
    assert time.monotonic() - started < TIMEOUT_S + 1


def test_segfault_via_ctypes(sandbox):
    result = sandbox.run("import ctypes\nctypes.string_at(0)")
    assert (result.signal, result.exit_code) == ("SIGSEGV", -11)


def test_abort(sandbox):
    result = sandbox.run("import os\nos.abort()")
    assert (result.signal, result.exit_code) == ("SIGABRT", -6)


def test_sigterm_self(sandbox):
    result = sandbox.run(
        "import os, signal\nos.kill(os.getpid(), signal.SIGTERM)\nimport time; time.sleep(5)"
    )
    assert (result.signal, result.exit_code, result.timed_out) == ("SIGTERM", -15, False)


def test_sigstop_self(sandbox):
    result = sandbox.run(
        "import os, signal\nprint('stopping', flush=True)\nos.kill(os.getpid(), signal.SIGSTOP)"
    )
    assert result.timed_out and result.stdout == "stopping\n"


# --- the standard streams ---------------------------------------------------------------------------


def test_closing_stdout(sandbox):
    result = sandbox.run("import os\nos.close(1)\nprint('into the void')")
    assert result.exit_code == 120 and "Exception ignored" in result.stderr
    closed = sandbox.run("import sys\nsys.stdout.close()\nprint('x')")
    assert closed.exit_code == 1 and "ValueError" in closed.stderr


def test_closing_every_stream(sandbox):
    result = sandbox.run("import os\nfor fd in range(3): os.close(fd)\nimport time; time.sleep(0.1)")
    assert result.exit_code in (0, 120) and not result.timed_out


def test_binary_and_invalid_utf8_output(sandbox):
    result = sandbox.run(
        "import sys\nsys.stdout.buffer.write(bytes(range(256)))\nprint('\\udcff', file=sys.stderr)"
    )
    assert result.ok
    assert result.stdout.startswith("".join(map(chr, range(128))))
    assert "\ufffd" in result.stdout
    assert "\\udcff" in result.stderr


def test_reading_stdin_past_its_end(sandbox):
    result = run(
        sandbox,
        """
        import sys
        print(repr(sys.stdin.read()), repr(sys.stdin.read()))
        input()
        """,
        stdin="only line\n",
    )
    assert result.stdout == "'only line\\n' ''\n"
    assert result.exit_code == 1 and "EOFError" in result.stderr


def test_exec_replaces_the_interpreter(sandbox):
    result = sandbox.run("import os\nos.execv('/bin/sh', ['sh', '-c', 'echo from sh; exit 4'])")
    assert (result.stdout, result.exit_code) == ("from sh\n", 4)


# --- many at once -----------------------------------------------------------------------------------


async def test_hostile_programs_concurrently(sandbox):
    programs = {
        "loop": "while True: pass",
        "memory": "x = bytearray(8 * 1024**3)",
        "output": "while True: print('x' * 1000)",
        "segfault": "import ctypes; ctypes.string_at(0)",
        "fine": "print(sum(range(10)))",
        "exit": "raise SystemExit(9)",
    }
    names = list(programs) * 2
    results = await asyncio.gather(*(sandbox.arun(programs[name]) for name in names))
    for name, result in zip(names, results):
        expected = {
            "loop": result.timed_out,
            "memory": "MemoryError" in result.stderr,
            "output": result.timed_out and result.truncated,
            "segfault": result.signal == "SIGSEGV",
            "fine": result.stdout == "45\n",
            "exit": result.exit_code == 9,
        }[name]
        assert expected, (name, result)


# --- weaker plans, as on hosts that allow fewer layers ---------------------------------------------

DEGRADED = {
    "no namespaces": ("user_ns",),  # unprivileged uid and read-only mounts, but no user/net/pid namespace
    "rlimits only": ("unprivileged_uid", "mount_ns", "user_ns"),
}


@pytest.fixture(scope="module", params=list(DEGRADED))
def degraded(request) -> PythonSandbox:
    server = ForkServer(max_concurrency=4, disabled_layers=DEGRADED[request.param])
    yield PythonSandbox(timeout_s=TIMEOUT_S, memory_mb=256, server=server)
    server.close()


def test_degraded_plan_says_what_is_missing(degraded):
    layers = degraded.isolation
    assert not layers["pid_ns"] and not layers["net_ns"] and not layers["user_ns"]
    assert layers["rlimits"] and layers["process_group_kill"]
    assert degraded.run("pass").isolation == layers
    assert any("disabled on request" in note for note in degraded.isolation_notes)


def test_degraded_plan_still_kills_daemons(degraded):
    token = f"{os.getpid() % 1000}.{time.time_ns() % 10**6}"
    result = run(
        degraded,
        f"""
        import os
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                for fd in (0, 1, 2):
                    os.close(fd)
                os.execv("/bin/sleep", ["sleep", "{token}"])
            os._exit(0)
        os.wait()
        print("daemonized")
        """,
    )
    assert result.stdout == "daemonized\n"
    assert wait_until(lambda: not processes_with_arg(token)), "the daemon survived its run"


def test_degraded_plan_still_times_out_and_kills_children(degraded):
    token = f"{os.getpid() % 1000}.{time.time_ns() % 10**6 + 1}"
    fork_sleeper = f"import os\nif os.fork() == 0:\n    os.execv('/bin/sleep', ['sleep', '{token}'])\n"
    result = degraded.run(fork_sleeper + "while True: pass")
    assert result.timed_out
    assert wait_until(lambda: not processes_with_arg(token))


def test_degraded_plan_survives_killing_the_parent(degraded):
    pid = degraded.server.pid
    result = degraded.run(
        "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nos.kill(0, signal.SIGKILL)"
    )
    assert not result.timed_out and result.exit_code != 0
    assert degraded.server.pid == pid and degraded.run("print('ok')").stdout == "ok\n"


def test_degraded_plan_still_limits_processes(degraded):
    need(degraded, "cgroup")  # RLIMIT_NPROC does not bind root; a pids cgroup does
    result = run(
        degraded,
        """
        import os, time
        children = 0
        try:
            for _ in range(300):
                if os.fork() == 0:
                    time.sleep(3)
                    os._exit(0)
                children += 1
        except OSError:
            pass
        print(children)
        """,
    )
    assert int(result.stdout) < 70


def test_degraded_plan_removes_the_work_dir(degraded):
    result = degraded.run("import os\nopen('left.txt', 'w').write('x')\nprint(os.getcwd())")
    workdir = result.stdout.strip()
    if workdir != "/tmp":  # a host directory, not a private tmpfs
        assert wait_until(lambda: not os.path.exists(workdir)), "the work dir must be removed after the run"


# --- helpers ------------------------------------------------------------------------------------


def _leftovers(server: ForkServer) -> list[int]:
    """Processes owned by the uids of the server's runs."""
    uid_range = server.hello.get("uid_range")
    if not uid_range:
        return []
    low, high = uid_range
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as f:
                uid_line = next(line for line in f if line.startswith("Uid:"))
        except (OSError, StopIteration):
            continue
        if low <= int(uid_line.split()[1]) <= high:
            found.append(int(entry))
    return found
