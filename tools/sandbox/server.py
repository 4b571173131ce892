"""The fork server: a warm interpreter that runs each program in its own isolated process tree.

Started by ``client.ForkServer`` as ``python -I -c BOOT <package dir> <control fd> <config json>``
with a clean environment. It imports common modules once, picks by trial the strongest isolation
plan the host allows (``trees``), forks the zygote that all trees will be forked from
(``zygote``), says hello on the control socket, then serves runs from a single-threaded selector
loop. While idle it keeps a few trees forked and fully isolated, each waiting for its job on
stdin, so that a run starts with one pipe write. When the control socket closes (the host exited
or shut it down) it kills everything and exits.

Longer than our usual ~400 lines on purpose: the selector loop, the pool of waiting trees and the
run bookkeeping share one process's state and one event loop; split apart, each piece would need the
others' internals.
"""

from __future__ import annotations

import array
import contextlib
import gc
import importlib
import json
import os
import selectors
import signal
import socket
import sys
import time
import traceback
from collections import deque
from typing import Any

from . import child, linux, protocol
from .relay import Relay
from .runs import Chain, Run, program_env
from .trees import SLOTS, Trees
from .zygote import Zygote

DRAIN_GRACE_S = 1.0
MAX_WARM_FAILURES = 3


def main(control_fd: int, config_json: str) -> None:
    config = json.loads(config_json)
    if linux.AVAILABLE:
        linux.prctl(linux.PR_SET_CHILD_SUBREAPER, 1)
    notes = _preload(config.get("preload", []))
    control = socket.socket(fileno=control_fd)
    server = Server(control, config)
    try:
        notes += server.trees.set_up_cgroups()
        notes += server.trees.choose_plan()
    except Exception as exc:
        control.sendall(json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode())
        raise
    linux.resolve()
    child.note_server_modules()
    # The environment programs get (children then rarely need to change it).
    os.environ.clear()
    os.environ.update(program_env("/tmp"))
    gc.collect()
    gc.freeze()  # forked children then leave the server's objects alone: fewer pages get copied
    server.zygote = Zygote(server.trees)
    plan = server.trees.plan
    hello = {
        "pid": os.getpid(),
        "zygote_pid": server.zygote.pid,
        "python": sys.version.split()[0],
        "layers": plan.layers(),
        "plan": plan.describe(),
        "notes": notes,
        "uid_range": [server.trees.uid_base, server.trees.uid_base + SLOTS - 1] if plan.uid else None,
        "max_concurrency": server.max_concurrency,
    }
    control.sendall(json.dumps(hello).encode())
    server.serve()


def _preload(modules: list[str]) -> list[str]:
    notes = []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:
            notes.append(f"preload of {name!r} failed: {type(exc).__name__}: {exc}")
    return notes


class Server:
    def __init__(self, control: socket.socket, config: dict[str, Any]) -> None:
        self.control = control
        self.trees = Trees(config)
        self.zygote: Zygote | None = None
        self.warm_target = max(0, int(config.get("warm", 2)))
        wanted = int(config.get("max_concurrency", 8))
        self.max_concurrency = max(1, min(wanted, SLOTS - self.warm_target - 1))
        # Least recently used first, so a uid is reused as late as possible.
        self.free_slots = deque(range(self.max_concurrency + self.warm_target))
        self.selector = selectors.DefaultSelector()
        self.runs: set[Run] = set()
        self.waiting: deque[Run] = deque()
        self.warm: deque[Chain] = deque()
        self.by_pid: dict[int, Chain] = {}
        self.active = 0
        self.warm_failures = 0
        self.closing = False

    # --- the loop -------------------------------------------------------------------------------

    def serve(self) -> None:
        self.control.setblocking(False)
        self.selector.register(self.control, selectors.EVENT_READ, (None, self._on_control))
        # Orphans of a run (its init, when the supervisor was killed) come to this process, and
        # SIGCHLD wakes the loop to reap them and the supervisors.
        wakeup_r, wakeup_w = os.pipe()
        os.set_blocking(wakeup_r, False)
        os.set_blocking(wakeup_w, False)
        signal.set_wakeup_fd(wakeup_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        self.selector.register(wakeup_r, selectors.EVENT_READ, (None, self._on_sigchld))
        self.selector.register(self.zygote.sock, selectors.EVENT_READ, (None, self._on_zygote))
        self._reap()
        while self.runs or not self.closing:
            refill = self._wants_warm_chain()
            events = self.selector.select(0 if refill else self._next_timeout())
            registered = self.selector.get_map()
            for key, mask in events:
                if registered.get(key.fileobj) is not key:
                    continue  # closed (and maybe reused) by an earlier handler in this batch
                owner, handler = key.data
                try:
                    handler(key.fileobj, mask) if owner is None else handler(owner, key.fileobj, mask)
                except Exception as exc:
                    traceback.print_exc()
                    if isinstance(owner, Run):
                        self._fail(owner, exc)
            if self.zygote.exits:  # reported while the server waited for a new tree
                self._on_zygote()
            self._check_clocks()
            if refill and not events:  # only when nothing else is waiting to be handled
                self._add_warm_chain()
        self._drop_warm_chains()
        self.zygote.close()
        self._reap()
        self.trees.close()

    def _next_timeout(self) -> float | None:
        clocks = [c for run in self.runs for c in run.clocks()]
        return max(0.0, min(clocks) - time.monotonic()) if clocks else None

    def _check_clocks(self) -> None:
        now = time.monotonic()
        for run in list(self.runs):
            if run.chain is None or run.released:
                continue
            if not run.exited and not run.timed_out and now >= run.deadline:
                run.timed_out = True
                run.ended_at = now
                if run.relay is not None:
                    run.relay.close()  # nothing is passed on after the deadline
                self.trees.kill(run.chain)
            if run.exited and not run.replied and now >= run.drain_deadline:
                self._progress(run)

    # --- control socket: each run's socket arrives as a file descriptor ---------------------------

    def _on_control(self, control: socket.socket, mask: int) -> None:
        try:
            data, ancillary, _, _ = control.recvmsg(64, socket.CMSG_SPACE(16 * 4))
        except BlockingIOError:
            return
        except OSError:
            data, ancillary = b"", []
        if not data:
            self._shut_down()
            return
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
                for fd in fds:
                    conn = socket.socket(fileno=fd)
                    conn.setblocking(False)
                    run = Run(conn)
                    self.runs.add(run)
                    self.selector.register(conn, selectors.EVENT_READ, (run, self._on_conn))

    def _shut_down(self) -> None:
        self.closing = True
        self.selector.unregister(self.control)
        self.control.close()
        for run in list(self.runs):
            run.cancelled = True
            self._close_conn(run)
            if run.chain is not None and not run.exited:
                self.trees.kill(run.chain)
            self._forget_if_done(run)

    # --- a run's socket -----------------------------------------------------------------------------

    def _on_conn(self, run: Run, conn: socket.socket, mask: int) -> None:
        if mask & selectors.EVENT_WRITE:
            self._flush(run)
        if not mask & selectors.EVENT_READ or run.conn is None:
            return
        try:
            data = conn.recv(1 << 16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the host gave up on this run (cancelled, timed out on its side, or exited)
            run.cancelled = True
            self._close_conn(run)
            if run.chain is not None and not run.exited:
                self.trees.kill(run.chain)
            self._forget_if_done(run)
            return
        try:
            messages = run.frames.feed(data)
        except (protocol.ProtocolError, ValueError) as exc:
            if not run.request:
                self._reply_error(run, f"bad request: {exc}")
            return
        if run.request:  # the host's answers to the program's function calls
            for message in messages:
                if run.relay is not None:
                    run.relay.from_host(message)
            return
        if messages:
            error = run.accept_request(messages[0])
            if error:
                self._reply_error(run, error)
            else:
                self.waiting.append(run)
                self._schedule()

    def _send(self, run: Run, message: dict[str, Any]) -> None:
        if run.conn is not None:
            run.outbox += protocol.encode(message)
            self._flush(run)

    def _flush(self, run: Run) -> None:
        if run.conn is None:
            return
        try:
            while run.outbox:
                del run.outbox[: run.conn.send(run.outbox)]
        except BlockingIOError:
            pass
        except OSError:
            run.outbox.clear()
            run.cancelled = True
        if run.replied and not run.outbox:
            self._close_conn(run)
            self._forget_if_done(run)
            return
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if run.outbox else 0)
        self.selector.modify(run.conn, events, (run, self._on_conn))

    def _close_conn(self, run: Run) -> None:
        if run.conn is not None:
            self.selector.unregister(run.conn)
            run.conn.close()
            run.conn = None

    def _reply_error(self, run: Run, message: str) -> None:
        run.replied = True
        self._send(run, {"event": "error", "message": message})

    def _forget_if_done(self, run: Run) -> None:
        if run.conn is None and (run.chain is None or run.released):
            self.runs.discard(run)
            if run in self.waiting:
                self.waiting.remove(run)

    # --- process trees --------------------------------------------------------------------------

    def _spawn_chain(self) -> Chain:
        slot = self.free_slots.popleft()
        try:
            chain = self.zygote.spawn(slot)
        except OSError:
            self.free_slots.appendleft(slot)
            raise
        self.by_pid[chain.pid] = chain
        return chain

    def _wants_warm_chain(self) -> bool:
        # Slots number max_concurrency + warm_target, so a warm tree never takes a run's slot.
        return (
            not self.closing
            and len(self.warm) < self.warm_target
            and self.warm_failures < MAX_WARM_FAILURES
            and bool(self.free_slots)
        )

    def _add_warm_chain(self) -> None:
        try:
            chain = self._spawn_chain()
        except OSError:
            self.warm_failures += 1
            return
        self.warm.append(chain)

    def _warm_chain_died(self, chain: Chain) -> None:
        """A waiting tree died before it got a job: its setup failed, or something killed it."""
        for fd in chain.read_fds():
            chain.read(fd)
        reason = chain.setup_error() or f"status {chain.exit_status}"
        print(f"sandbox: a waiting process tree exited: {reason}", file=sys.stderr)
        self.warm_failures += 1
        self.warm.remove(chain)
        self._free_chain(chain)

    def _drop_warm_chains(self) -> None:
        while self.warm:
            chain = self.warm.popleft()
            self.trees.kill(chain)
            chain.close_all()
            self.trees.remove_workdir(chain)

    # --- starting, watching and ending runs -----------------------------------------------------

    def _schedule(self) -> None:
        while self.waiting and self.active < self.max_concurrency and not self.closing:
            run = self.waiting.popleft()
            if run.cancelled:
                continue
            try:
                chain = self.warm.popleft() if self.warm else self._spawn_chain()
            except OSError as exc:  # e.g. fork failed: the host is out of processes or memory
                self._reply_error(run, f"could not start the program: {type(exc).__name__}: {exc}")
                continue
            self._start(run, chain)

    def _start(self, run: Run, chain: Chain) -> None:
        self.active += 1
        run.start(chain)
        fd = chain.take_calls_fd()
        if fd is not None and run.request.get("functions"):
            run.relay = Relay(fd, run.request, self.selector, lambda message: self._send(run, message))
        elif fd is not None:
            os.close(fd)
        self.trees.set_limits(chain, run.request)
        for fd in chain.read_fds():
            self.selector.register(fd, selectors.EVENT_READ, (run, self._on_pipe))
        if chain.write_stdin():
            self.selector.register(chain.stdin_fd, selectors.EVENT_WRITE, (run, self._on_stdin))
        else:
            chain.close_fd(chain.stdin_fd)
        self._send(run, {"event": "started"})

    def _on_pipe(self, run: Run, fd: int, mask: int) -> None:
        if not run.chain.read(fd):
            self.selector.unregister(fd)
            run.chain.close_fd(fd)
        self._progress(run)

    def _on_stdin(self, run: Run, fd: int, mask: int) -> None:
        if not run.chain.write_stdin():
            self.selector.unregister(fd)
            run.chain.close_fd(fd)

    def _on_sigchld(self, wakeup: int, mask: int) -> None:
        with contextlib.suppress(OSError):
            os.read(wakeup, 4096)
        self._reap()

    def _reap(self) -> None:
        """Collect this process's exited children: orphans handed to this subreaper, the zygote
        (fatal), and supervisors whose zygote died before them."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in self.by_pid:
                self._tree_exited(pid, status)
            elif self.zygote is not None and pid == self.zygote.pid:
                self._zygote_gone()
            else:  # an orphan of some run died: its own children may now be ours
                self.trees.kill_orphans(self._own_children())

    def _on_zygote(self, sock: socket.socket | None = None, mask: int = 0) -> None:
        exits = self.zygote.take_exits()
        if exits is None:
            self._zygote_gone()
            return
        for pid, status in exits:
            self._tree_exited(pid, status)

    def _zygote_gone(self) -> None:
        """Without its zygote the server cannot start trees: end the runs and exit (the host
        starts a new server)."""
        if self.closing:
            return
        print("sandbox: the zygote died; the server shuts down", file=sys.stderr)
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(self.zygote.sock)
        self._shut_down()

    def _own_children(self) -> set[int]:
        return {self.zygote.pid} if self.zygote is not None else set()

    def _tree_exited(self, pid: int, status: int) -> None:
        chain = self.by_pid.pop(pid, None)
        if chain is None:
            return
        chain.on_exit(status)
        if chain.run is not None:
            self._supervisor_exited(chain.run)
        elif chain in self.warm:
            self._warm_chain_died(chain)

    def _supervisor_exited(self, run: Run) -> None:
        chain = run.chain
        run.drain_deadline = time.monotonic() + DRAIN_GRACE_S
        if run.timed_out or not self.trees.pid_ns:
            self.trees.sweep(chain)  # without a PID namespace, daemons may outlive the supervisor
        self.trees.kill_orphans(self._own_children())
        self._progress(run)

    def _progress(self, run: Run) -> None:
        """Answer the host as soon as the outcome is final; free the slot once the supervisor is gone."""
        if run.chain is None:
            return
        if not run.replied and run.ready_to_reply(self.trees.pid_ns, time.monotonic()):
            run.replied = True
            self.trees.note_oom(run.chain)
            if not run.cancelled:
                error = run.chain.setup_error()
                if error and not run.timed_out:
                    self._send(run, {"event": "error", "message": f"sandbox setup failed: {error}"})
                else:
                    self._send(run, {"event": "done", "result": run.result()})
        if run.replied and run.exited and not run.released:
            run.released = True
            self.active -= 1
            self._free_chain(run.chain)
            self._schedule()
        self._forget_if_done(run)

    def _free_chain(self, chain: Chain) -> None:
        if chain.run is not None and chain.run.relay is not None:
            chain.run.relay.close()
        for fd in chain.all_fds():
            with contextlib.suppress(KeyError):
                self.selector.unregister(fd)
        chain.close_all()
        self.trees.remove_workdir(chain)
        self.free_slots.append(chain.slot)

    def _fail(self, run: Run, exc: Exception) -> None:
        if run.chain is not None and not run.exited:
            self.trees.kill(run.chain)  # its exit still arrives through the loop and ends the run
            return
        if not run.replied:
            self._reply_error(run, f"sandbox server error: {type(exc).__name__}: {exc}")
        if run.chain is not None and not run.released:
            run.released = True
            self.active -= 1
            self._free_chain(run.chain)
        self._forget_if_done(run)
