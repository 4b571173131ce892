"""The zygote: the process every run's tree is forked from.

A forked process starts as a copy of its parent's memory. The server's memory holds the code,
stdin and output of the runs in flight, which a program could read (``gc.get_objects()``, or
walking ``sys._getframe()`` up to the server's frames). So trees are not forked from the server:
the zygote is forked from it once, before any run, and then only ever receives "fork a tree for
slot N". It answers with the tree's pid and the server's ends of its pipes (as file descriptors),
and reports each supervisor's exit. It dies with the server.
"""

from __future__ import annotations

import array
import contextlib
import json
import os
import selectors
import signal
import socket
from typing import Any

from . import linux
from .runs import Chain
from .trees import Trees

FDS_PER_TREE = 5  # stdin (write end), stdout, stderr, status (read ends), the function channel


class Zygote:
    """The server's handle on the zygote process."""

    def __init__(self, trees: Trees) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        server_pid = os.getpid()
        pid = linux.raw_fork()  # before any run: nothing of any run is in this copy of memory
        if pid == 0:
            try:
                ours.close()
                _serve(theirs, trees, server_pid)
            finally:
                os._exit(0)
        theirs.close()
        self.pid = pid
        self.sock = ours
        self.trees = trees
        self.exits: list[tuple[int, int]] = []  # reported while waiting for a spawn reply

    def spawn(self, slot: int) -> Chain:
        """Have the zygote fork a tree for ``slot``; returns it with the server's ends of its pipes."""
        self.sock.sendall(json.dumps({"slot": slot}).encode())
        self.sock.settimeout(30)
        try:
            while True:
                message, fds = _receive(self.sock, 0)
                if message is None:
                    raise OSError("the zygote is gone")
                if "exited" in message:
                    self.exits.append((message["exited"], message["status"]))
                    continue
                if "error" in message:
                    raise OSError(message["error"])
                chain = Chain(slot, message["uid"], message["workdir"], message["host_workdir"])
                chain.adopt(message["pid"], fds)
                return chain
        finally:
            self.sock.settimeout(None)

    def take_exits(self) -> list[tuple[int, int]] | None:
        """Supervisor exits reported so far, as (pid, wait status); None if the zygote is gone."""
        while True:
            try:
                message, _ = _receive(self.sock, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            if message is None:
                return None
            self.exits.append((message["exited"], message["status"]))
        exits, self.exits = self.exits, []
        return exits

    def close(self) -> None:
        self.sock.close()  # the zygote exits at end of file


def _receive(sock: socket.socket, flags: int) -> tuple[dict[str, Any] | None, list[int]]:
    data, ancillary, _, _ = sock.recvmsg(1 << 16, socket.CMSG_SPACE(FDS_PER_TREE * 4), flags)
    fds = array.array("i")
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    return (json.loads(data) if data else None), list(fds)


def _serve(sock: socket.socket, trees: Trees, server_pid: int) -> None:
    if linux.AVAILABLE:
        linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != server_pid:
        return
    wakeup_r, wakeup_w = os.pipe()
    os.set_blocking(wakeup_r, False)
    os.set_blocking(wakeup_w, False)
    signal.set_wakeup_fd(wakeup_w, warn_on_full_buffer=False)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ)
    selector.register(wakeup_r, selectors.EVENT_READ)
    while True:
        for key, _ in selector.select():
            if key.fileobj == wakeup_r:
                with contextlib.suppress(OSError):
                    os.read(wakeup_r, 4096)
                _report_exits(sock)
                continue
            data = sock.recv(1 << 16)
            if not data:
                return
            _spawn(sock, trees, json.loads(data)["slot"])


def _spawn(sock: socket.socket, trees: Trees, slot: int) -> None:
    try:
        chain = trees.spawn(slot)
    except Exception as exc:
        sock.sendall(json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode())
        return
    reply = {"pid": chain.pid, "uid": chain.uid, "workdir": chain.workdir, "host_workdir": chain.host_workdir}
    fds = array.array("i", [chain.stdin_fd, *chain.outputs, chain.status_fd, chain.calls_fd])
    sock.sendmsg([json.dumps(reply).encode()], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
    chain.host_workdir = None  # the server removes it
    chain.close_all()


def _report_exits(sock: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        sock.sendall(json.dumps({"exited": pid, "status": status}).encode())
