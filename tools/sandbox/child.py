"""The processes of one run, forked from the server: supervisor → init → program.

``supervise`` is called in a freshly forked child of the server and never returns. The program
process runs the user's code with ``exec`` on a fresh ``__main__`` module; it is a separate,
isolated OS process, so nothing it does can reach the server's state.

Each process reports to the server on the *status* pipe (fd 3) as JSON lines: a setup error, or
the program's wait status and resource usage. The program closes fd 3 before the user's code runs.
Fd 4 is the function channel (``bridge``): only the program keeps it, and only when its job names
functions.
"""

from __future__ import annotations

import atexit
import builtins
import contextlib
import fcntl
import io
import json
import linecache
import os
import resource
import signal
import sys
import traceback
import types
from dataclasses import dataclass, field
from typing import NoReturn

from . import bridge, isolation, linux

STATUS_FD = 3
SETUP_FAILED = 70
MAIN_FILE = "main.py"


@dataclass
class Setup:
    """What a process tree is prepared with before it has a job."""

    workdir: str
    uid: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    template_fd: int | None = None  # the server's read-only mount namespace to start from
    cgroup_procs: list[str] = field(default_factory=list)  # the cgroups this run's processes go in


def supervise(
    plan: isolation.Plan, setup: Setup, fds: tuple[int, ...], server_pid: int
) -> NoReturn:
    """Supervisor: apply the outer layers, start the init process, wait for it."""
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        template = _take_fds(fds, setup.template_fd)
        isolation.enter_supervisor(plan, setup.uid, server_pid, template, setup.cgroup_procs)
        pid = linux.raw_fork()
        if pid == 0:
            _init(plan, setup)
        _close_stdio()
        _, status = os.waitpid(pid, 0)
        if status != 0:
            report({"init_status": status})
    except BaseException as exc:
        report({"setup_error": f"supervisor: {type(exc).__name__}: {exc}"})
        os._exit(SETUP_FAILED)
    os._exit(0)


def _init(plan: isolation.Plan, setup: Setup) -> NoReturn:
    """Init: PID 1 of the run's PID namespace when there is one. Starts the program, reaps
    orphans, reports the program's status. Its exit makes the kernel kill every process left in
    the namespace (daemons included)."""
    try:
        isolation.enter_init(plan)
        pid = linux.raw_fork()  # the program's own at-fork work is done in _forget_server
        if pid == 0:
            _program(plan, setup)
        _close_stdio()
        while True:
            try:
                found, status, usage = os.wait4(-1, 0)
            except ChildProcessError:
                break
            except InterruptedError:
                continue
            if found == pid:
                if plan.ns_flags & linux.CLONE_NEWPID:
                    _kill_namespace()
                cpu_s = usage.ru_utime + usage.ru_stime
                report({"status": status, "cpu_s": round(cpu_s, 4), "max_rss_kb": usage.ru_maxrss})
                break
    except BaseException as exc:
        report({"setup_error": f"init: {type(exc).__name__}: {exc}"})
        os._exit(SETUP_FAILED)
    os._exit(0)


def _program(plan: isolation.Plan, setup: Setup) -> NoReturn:
    """Program: wait for the job on stdin, apply the last layers, run the user's code."""
    try:
        os.chdir(setup.workdir)
        _set_environment(setup.env)
        isolation.enter_program(plan)
        main = _prepare_main()
        job = _read_job()
        if job is None:  # the server let this tree go without a job
            os._exit(0)
        isolation.apply_limits(isolation.Limits(**job["limits"]))
        if job.get("functions"):
            bridge.install(job["functions"], bridge.CALLS_FD)
        else:
            os.close(bridge.CALLS_FD)
        os.close(STATUS_FD)
    except BaseException as exc:
        report({"setup_error": f"program: {type(exc).__name__}: {exc}"})
        os._exit(SETUP_FAILED)
    os._exit(run_code(job["code"], main))


def _set_environment(env: dict[str, str]) -> None:
    """Make ``os.environ`` exactly ``env``. The server already holds the usual program environment,
    so this normally changes nothing (each ``putenv`` costs page copies in a forked process)."""
    for name in [n for n in os.environ if n not in env]:
        del os.environ[name]
    for name, value in env.items():
        if os.environ.get(name) != value:
            os.environ[name] = value


def _read_job() -> dict | None:
    """The job is a length-prefixed JSON header at the start of stdin; the rest is the program's stdin."""
    header = _read_exact(4)
    if header is None:
        return None
    body = _read_exact(int.from_bytes(header, "big"))
    return None if body is None else json.loads(body.decode("utf-8", "surrogatepass"))


def _read_exact(n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = os.read(0, n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _kill_namespace() -> None:
    """As PID 1: kill every other process of the namespace and reap them, so that once the status
    is reported nothing of the run is left but this process and the supervisor."""
    try:
        os.kill(-1, signal.SIGKILL)
    except ProcessLookupError:
        return
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return
        except InterruptedError:
            continue


def report(message: dict) -> None:
    with contextlib.suppress(OSError):
        os.write(STATUS_FD, (json.dumps(message) + "\n").encode())


def _take_fds(fds: tuple[int, ...], template_fd: int | None) -> int | None:
    """Make the run's pipes and function channel fds 0-4 (and the mount template, if any, fd 5);
    close everything else the server had open. Returns the template's new fd."""
    keep = [*fds, template_fd] if template_fd is not None else list(fds)
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in keep]
    for target, fd in enumerate(high):
        os.dup2(fd, target, inheritable=(target < STATUS_FD))
    os.closerange(len(high), resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    return len(fds) if template_fd is not None else None


def _close_stdio() -> None:
    """In the supervisor and the init, once their child is forked: only the program keeps these."""
    for fd in (0, 1, 2, bridge.CALLS_FD):
        with contextlib.suppress(OSError):
            os.close(fd)


# --- the program: run the user's code as ``python main.py`` would ----------------------------


def _prepare_main() -> types.ModuleType:
    """Everything that does not depend on the code, done while the process waits for its job."""
    _fresh_stdio()
    _forget_server()
    main = types.ModuleType("__main__")
    main.__file__ = MAIN_FILE
    main.__builtins__ = builtins
    sys.modules["__main__"] = main
    sys.argv = [MAIN_FILE]
    sys.path.insert(0, os.getcwd())
    return main


def run_code(code: str, main: types.ModuleType) -> int:
    """Run ``code`` as the ``__main__`` module and return the exit status CPython would give."""
    linecache.cache[MAIN_FILE] = (len(code), None, code.splitlines(keepends=True), MAIN_FILE)
    exit_code = 0
    try:
        exec(compile(code, MAIN_FILE, "exec"), main.__dict__)
    except SystemExit as exc:
        exit_code = _exit_status(exc)
    except BaseException as exc:
        _print_user_traceback(exc)
        exit_code = 1
    return _shutdown(exit_code)


def _fresh_stdio() -> None:
    def writer(fd: int) -> io.TextIOWrapper:
        raw = io.FileIO(fd, "w", closefd=False)
        return io.TextIOWrapper(
            io.BufferedWriter(raw), encoding="utf-8", errors="backslashreplace", line_buffering=(fd == 2)
        )

    reader = io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "r", closefd=False)), encoding="utf-8")
    sys.stdin, sys.stdout, sys.stderr = reader, writer(1), writer(2)
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = sys.stdin, sys.stdout, sys.stderr


_server_modules: tuple[str, ...] = ()


def note_server_modules() -> None:
    """Called once in the server: the modules of this package, which programs should not see."""
    global _server_modules
    package = __package__ or "sandbox"
    _server_modules = tuple(n for n in sys.modules if n == package or n.startswith(package + "."))


def _forget_server() -> None:
    """Drop the server's own modules and exit handlers, and reseed the global random generators.

    The program process is forked without CPython's at-fork hooks (see ``linux.raw_fork``); of
    those, only ``random``'s reseeding matters to a program (``threading`` state is already right,
    as the server has a single thread)."""
    for name in _server_modules:
        sys.modules.pop(name, None)
    atexit._clear()
    if "random" in sys.modules:
        sys.modules["random"].seed()
    if "numpy" in sys.modules:  # numpy's global generator is not reseeded on fork either
        with contextlib.suppress(Exception):
            sys.modules["numpy"].random.seed()


def _exit_status(exc: SystemExit) -> int:
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    with contextlib.suppress(Exception):
        print(code, file=sys.stderr)
    return 1


def _print_user_traceback(exc: BaseException) -> None:
    """Print the traceback without the frame of this runner, as ``python main.py`` would, and
    without the frames of the function channel (``bridge``): a failed tool call reads as one line."""
    tb = exc.__traceback__.tb_next if exc.__traceback__ else None
    with contextlib.suppress(Exception):
        shown = traceback.TracebackException(type(exc), exc.with_traceback(tb), tb)
        own = bridge.PACKAGE_DIR + "/"
        shown.stack = traceback.StackSummary.from_list([f for f in shown.stack if not f.filename.startswith(own)])
        print("".join(shown.format()), end="", file=sys.stderr)


def _shutdown(exit_code: int) -> int:
    import threading

    try:
        threading._shutdown()  # wait for non-daemon threads, like the interpreter does
    except BaseException as exc:
        _print_user_traceback(exc)
    with contextlib.suppress(BaseException):
        atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception as exc:
            if stream is sys.stdout and exit_code == 0:
                exit_code = 120  # CPython's status when stdout cannot be flushed at exit
            with contextlib.suppress(Exception):
                print(f"Exception ignored on flushing sys.stdout: {exc!r}", file=sys.stderr, flush=True)
    return exit_code
