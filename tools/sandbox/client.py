"""Host side of the fork server: start it, hand it runs, restart it when it dies.

One ``ForkServer`` is one server process. ``run`` (threads) and ``arun`` (asyncio) may be called
concurrently from anywhere: each run gets its own socket pair, so only the hand-over of a socket
on the control channel is serialized. A server that dies is replaced on the next call, and a run
it had not finished is retried once on the new one. Servers are shut down at interpreter exit.

A request may name ``functions`` the program can call (``relay``, ``bridge``); ``arun`` then takes
``on_call``, an async function of ``(name, args)`` that returns ``{"ok": True, "value": ...}`` or
``{"ok": False, "error": "..."}``. Calls run as tasks beside the run; when it ends, unanswered ones
are cancelled.
"""

from __future__ import annotations

import array
import asyncio
import atexit
import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from . import protocol
from .isolation import OPTIONAL_LAYERS

log = logging.getLogger(__name__)

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
PACKAGE_NAME = "_anchorloop_sandbox"
# The server loads this package from its folder under a private name with the standard library only.
BOOT = (
    "import importlib.util, sys\n"
    "d = sys.argv[1]\n"
    f"spec = importlib.util.spec_from_file_location({PACKAGE_NAME!r}, d + '/__init__.py',"
    " submodule_search_locations=[d])\n"
    "pkg = importlib.util.module_from_spec(spec)\n"
    f"sys.modules[{PACKAGE_NAME!r}] = pkg\n"
    "spec.loader.exec_module(pkg)\n"
    f"from {PACKAGE_NAME}.server import main\n"
    "main(int(sys.argv[2]), sys.argv[3])\n"
)
START_TIMEOUT_S = 60.0
REPLY_GRACE_S = 5.0  # beyond a run's own timeout, before the server is declared hung
QUEUE_TIMEOUT_S = 600.0  # how long a run may wait for a free slot

OnCall = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


class SandboxError(RuntimeError):
    """The sandbox itself failed (as opposed to the program that ran in it)."""


class _ServerGone(Exception):
    """The server closed a run's socket without answering: it died."""


class ForkServer:
    def __init__(
        self,
        *,
        preload: tuple[str, ...] = (),
        max_concurrency: int = 8,
        warm: int = 2,
        tmp_mb: int = 64,
        disabled_layers: tuple[str, ...] = (),
        python: str | None = None,
    ) -> None:
        """``warm`` process trees are kept forked and isolated, waiting for a job; ``tmp_mb`` is the
        size of each run's private /tmp. ``disabled_layers`` turns optional isolation layers off
        (names from ``OPTIONAL_LAYERS``), e.g. ``("net_ns",)`` to give programs the network."""
        unknown = set(disabled_layers) - set(OPTIONAL_LAYERS)
        if unknown:
            known = ", ".join(OPTIONAL_LAYERS)
            raise ValueError(f"disabled_layers: unknown {sorted(unknown)}; the optional layers are {known}")
        self.config = {
            "disabled_layers": sorted(disabled_layers),
            "preload": list(preload),
            "max_concurrency": max_concurrency,
            "warm": warm,
            "tmp_mb": tmp_mb,
        }
        self.python = python or sys.executable
        self.hello: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._control: socket.socket | None = None
        self._generation = 0
        self._closed = False
        _instances.add(self)

    # --- lifecycle --------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def info(self) -> dict[str, Any]:
        """The server's hello: its pid, active isolation layers, notes on layers that failed."""
        self.ensure_started()
        return dict(self.hello)

    def ensure_started(self) -> int:
        with self._lock:
            if self._closed:
                raise SandboxError("this sandbox server was closed")
            if self._proc is None or self._proc.poll() is not None:
                self._stop_locked()
                self._start_locked()
            return self._generation

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._stop_locked()

    def _start_locked(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
        env.update({name: "1" for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")})
        argv = [self.python, "-I", "-c", BOOT, PACKAGE_DIR, str(theirs.fileno()), json.dumps(self.config)]
        try:
            proc = subprocess.Popen(
                argv,
                pass_fds=[theirs.fileno()],
                env=env,
                cwd="/",
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            theirs.close()
        ours.settimeout(START_TIMEOUT_S)
        try:
            data = ours.recv(1 << 20)
        except OSError:
            data = b""
        hello = json.loads(data) if data else {}
        if not hello or "error" in hello:
            ours.close()
            proc.kill()
            proc.wait()
            reason = hello.get("error") or f"it exited with status {proc.returncode} (its stderr says why)"
            raise SandboxError(f"the sandbox server did not start: {reason}")
        ours.settimeout(10.0)
        self._proc, self._control, self.hello = proc, ours, hello
        self._generation += 1
        log.info("sandbox server %d started with %s", proc.pid, hello.get("plan"))
        missing = [name for name in OPTIONAL_LAYERS if not hello["layers"].get(name)]
        missing = [name for name in missing if name not in self.config["disabled_layers"]]
        if missing:
            log.warning(
                "sandbox layers not available on this host: %s (programs still get the other layers, "
                "see PythonSandbox.isolation). Why: %s",
                ", ".join(missing),
                "; ".join(hello.get("notes", [])) or "unknown",
            )

    def _forget_after_fork(self) -> None:
        """In a forked copy of the host: let go of the parent's server (never stop it from here)."""
        self._lock = threading.Lock()
        if self._control is not None:
            with contextlib.suppress(OSError):
                self._control.close()
        self._control = self._proc = None

    def _stop_locked(self) -> None:
        control, proc = self._control, self._proc
        self._control = self._proc = None
        if control is not None:
            control.close()  # the server kills its runs and exits when this closes
        if proc is not None:
            try:
                proc.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def _mark_dead(self, generation: int) -> None:
        with self._lock:
            if generation == self._generation and self._proc is not None:
                log.warning("sandbox server %d stopped answering; it will be restarted", self._proc.pid)
                self._proc.kill()
                self._stop_locked()

    # --- runs -------------------------------------------------------------------------------

    def _open_run(self) -> tuple[socket.socket, int]:
        """A socket for one run, whose other end has been handed to the server."""
        for _ in range(2):
            generation = self.ensure_started()
            ours, theirs = socket.socketpair()
            try:
                with self._lock:
                    if self._control is None or generation != self._generation:
                        raise OSError("the server was replaced")
                    fds = array.array("i", [theirs.fileno()])
                    self._control.sendmsg([b"r"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
                return ours, generation
            except OSError:
                ours.close()
                self._mark_dead(generation)
            finally:
                theirs.close()
        raise SandboxError("could not hand the run to the sandbox server")

    def run(self, request: dict[str, Any]) -> dict[str, Any]:
        """Run one request, blocking; returns the server's result dict."""
        for _ in range(2):
            sock, generation = self._open_run()
            try:
                return self._exchange(sock, request, generation)
            except _ServerGone:
                self._mark_dead(generation)
            finally:
                sock.close()
        raise SandboxError("the sandbox server died twice while running this program")

    def _exchange(self, sock: socket.socket, request: dict[str, Any], generation: int) -> dict[str, Any]:
        try:
            sock.sendall(protocol.encode(request))
        except OSError as exc:
            raise _ServerGone() from exc
        deadline = time.monotonic() + QUEUE_TIMEOUT_S
        while True:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            try:
                message = protocol.recv_message(sock)
            except TimeoutError:
                self._mark_dead(generation)
                raise SandboxError("the sandbox server did not answer in time; it was restarted") from None
            except OSError:
                message = None
            if message is None:
                raise _ServerGone()
            if message.get("event") == "started":
                deadline = time.monotonic() + float(request["timeout_s"]) + REPLY_GRACE_S
                continue
            return _outcome(message)

    async def arun(self, request: dict[str, Any], on_call: OnCall | None = None) -> dict[str, Any]:
        """Like ``run``, without blocking the event loop. Cancelling it kills the program.
        ``on_call`` answers the program's calls to the request's ``functions``."""
        if request.get("functions") and on_call is None:
            raise ValueError("a request with 'functions' needs on_call to answer them")
        loop = asyncio.get_running_loop()
        for _ in range(2):
            sock, generation = await asyncio.to_thread(self._open_run)
            sock.setblocking(False)
            calls = _Calls(loop, sock, on_call)
            try:
                return await self._aexchange(loop, sock, request, generation, calls)
            except _ServerGone:
                self._mark_dead(generation)
            finally:
                await calls.close()
                sock.close()
        raise SandboxError("the sandbox server died twice while running this program")

    async def _aexchange(
        self, loop: asyncio.AbstractEventLoop, sock: socket.socket, request: dict[str, Any], generation: int,
        calls: _Calls,
    ) -> dict[str, Any]:
        try:
            await loop.sock_sendall(sock, protocol.encode(request))
        except OSError as exc:
            raise _ServerGone() from exc
        frames = protocol.FrameBuffer()
        deadline = time.monotonic() + QUEUE_TIMEOUT_S
        while True:
            try:
                remaining = max(0.001, deadline - time.monotonic())
                data = await asyncio.wait_for(loop.sock_recv(sock, 1 << 16), remaining)
            except TimeoutError:
                self._mark_dead(generation)
                raise SandboxError("the sandbox server did not answer in time; it was restarted") from None
            except OSError:
                data = b""
            if not data:
                raise _ServerGone()
            for message in frames.feed(data):
                if message.get("event") == "started":
                    deadline = time.monotonic() + float(request["timeout_s"]) + REPLY_GRACE_S
                    continue
                if message.get("event") == "call":
                    calls.start(message)
                    continue
                return _outcome(message)


class _Calls:
    """The function calls of one run in flight on the host: each answered by ``on_call`` in a task."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, on_call: OnCall | None) -> None:
        self.loop, self.sock, self.on_call = loop, sock, on_call
        self.tasks: set[asyncio.Task] = set()
        self.sending = asyncio.Lock()

    def start(self, message: dict[str, Any]) -> None:
        task = self.loop.create_task(self._answer(message))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _answer(self, message: dict[str, Any]) -> None:
        name, args, number = message.get("name"), message.get("args"), message.get("call")
        if self.on_call is None or not isinstance(name, str) or not isinstance(args, dict):
            reply = {"ok": False, "error": "this run takes no function calls"}
        else:
            try:
                reply = await self.on_call(name, args)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("answering the program's call to %s failed", name, exc_info=True)
                reply = {"ok": False, "error": f"the host failed to answer: {type(exc).__name__}"}
        try:
            data = protocol.encode({"call": number, **reply})
        except (TypeError, ValueError) as exc:
            data = protocol.encode({"call": number, "ok": False, "error": f"the result cannot be passed: {exc}"})
        async with self.sending:
            with contextlib.suppress(OSError):  # the run is over
                await self.loop.sock_sendall(self.sock, data)

    async def close(self) -> None:
        """Cancel the calls still in flight (the run is over) and let them end before the socket closes."""
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=1.0)


def _outcome(message: dict[str, Any]) -> dict[str, Any]:
    if message.get("event") == "done":
        return message["result"]
    raise SandboxError(message.get("message") or f"unexpected reply from the sandbox server: {message}")


# --- one shared server per configuration, per process ---------------------------------------

_shared: dict[str, ForkServer] = {}
_shared_lock = threading.Lock()
_instances: weakref.WeakSet[ForkServer] = weakref.WeakSet()


def shared_server(**config: Any) -> ForkServer:
    """The process-wide server for this configuration (started on first use)."""
    key = json.dumps(config, sort_keys=True, default=list)
    with _shared_lock:
        server = _shared.get(key)
        if server is None or server._closed:
            server = _shared[key] = ForkServer(**config)
        return server


def close_shared_servers() -> None:
    with _shared_lock:
        servers = list(_shared.values())
        _shared.clear()
    for server in servers:
        server.close()


def _forget_after_fork() -> None:
    """In a forked copy of the host: each server object starts its own server when next used."""
    global _shared_lock
    _shared_lock = threading.Lock()
    for server in list(_instances):
        server._forget_after_fork()


atexit.register(close_shared_servers)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
