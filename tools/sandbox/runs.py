"""State kept by the server: ``Chain`` is one forked process tree and its pipes; ``Run`` is one
request from the host and, once started, the chain that runs it."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from typing import Any

from . import protocol, relay

TRUNCATION = "\n…[output truncated: {n} more bytes not shown]"
DEFAULT_OUTPUT_CAP = 65536
LIMIT_DEFAULTS = {"max_processes": 64, "max_open_files": 256, "max_file_mb": 16}


def program_env(workdir: str) -> dict[str, str]:
    bin_dir = os.path.dirname(sys.executable)
    return {
        "PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin",
        "HOME": workdir,
        "TMPDIR": workdir,
        "LANG": "C.UTF-8",
        "PYTHONIOENCODING": "utf-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MPLBACKEND": "Agg",
    }


class Stream:
    """Captured output, kept up to ``cap`` bytes; the rest is read and counted so the writer never blocks."""

    def __init__(self, cap: int = DEFAULT_OUTPUT_CAP) -> None:
        self.cap = cap
        self.data = bytearray()
        self.dropped = 0

    def feed(self, chunk: bytes) -> None:
        room = max(0, self.cap - len(self.data))
        self.data += chunk[:room]
        self.dropped += len(chunk) - min(room, len(chunk))

    def text(self) -> str:
        text = self.data.decode("utf-8", "replace")
        return text + TRUNCATION.format(n=self.dropped) if self.dropped else text


class Chain:
    """One process tree (supervisor → init → program) forked ahead of its job, and its pipes."""

    def __init__(self, slot: int, uid: int | None, workdir: str, host_workdir: str | None) -> None:
        self.slot, self.uid, self.workdir, self.host_workdir = slot, uid, workdir, host_workdir
        self.pid: int | None = None
        self.run: Run | None = None
        self.stdout, self.stderr = Stream(), Stream()
        self.outputs: dict[int, Stream] = {}
        self.status_fd: int | None = None
        self.status_data = bytearray()
        self.stdin_fd: int | None = None
        self.calls_fd: int | None = None  # the server's end of the function channel (``relay``)
        self.pending_stdin = b""
        self.exit_status: int | None = None
        self.exited_at = 0.0
        self.oom_base = 0  # the slot's count of OOM kills before this tree ran
        self.oom_killed = False
        self._child_ends: list[int] = []

    def open_pipes(self) -> tuple[int, int, int, int, int]:
        """Create stdin, stdout, stderr and status pipes and the function channel; return the ends
        the child takes."""
        stdin_r, self.stdin_fd = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        self.status_fd, status_w = os.pipe()
        ours, theirs = socket.socketpair()
        self.calls_fd, calls_child = ours.detach(), theirs.detach()
        self.outputs = {out_r: self.stdout, err_r: self.stderr}
        self._child_ends = [stdin_r, out_w, err_w, status_w, calls_child]
        for fd in (out_r, err_r, self.status_fd, self.stdin_fd, self.calls_fd):
            os.set_blocking(fd, False)
        return stdin_r, out_w, err_w, status_w, calls_child

    def forked(self, pid: int) -> None:
        self.pid = pid
        for fd in self._child_ends:
            os.close(fd)
        self._child_ends = []

    def adopt(self, pid: int, fds: list[int]) -> None:
        """Take a tree forked elsewhere (by the zygote): its pid and the server's ends of its pipes."""
        self.pid = pid
        self.stdin_fd, stdout, stderr, self.status_fd, self.calls_fd = fds
        self.outputs = {stdout: self.stdout, stderr: self.stderr}

    def read_fds(self) -> list[int]:
        return list(self.outputs) + ([self.status_fd] if self.status_fd is not None else [])

    def read(self, fd: int) -> bool:
        """Read what is available on an output or status pipe; False at end of file."""
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            return True
        except OSError:
            chunk = b""
        if not chunk:
            return False
        if fd == self.status_fd:
            self.status_data += chunk
        else:
            self.outputs[fd].feed(chunk)
        return True

    def write_stdin(self) -> bool:
        """Write more of the pending stdin; False once all is written or the program closed its end."""
        try:
            written = os.write(self.stdin_fd, self.pending_stdin[: 1 << 16])
        except BlockingIOError:
            return True
        except OSError:
            return False
        self.pending_stdin = self.pending_stdin[written:]
        return bool(self.pending_stdin)

    def close_fd(self, fd: int | None) -> None:
        if fd is None:
            return
        os.close(fd)
        self.outputs.pop(fd, None)
        if fd == self.status_fd:
            self.status_fd = None
        if fd == self.stdin_fd:
            self.stdin_fd = None
        if fd == self.calls_fd:
            self.calls_fd = None

    def take_calls_fd(self) -> int | None:
        """Hand the function channel's socket to its relay, which closes it."""
        fd, self.calls_fd = self.calls_fd, None
        return fd

    def all_fds(self) -> list[int]:
        return [fd for fd in (*self.read_fds(), self.stdin_fd, self.calls_fd) if fd is not None]

    def close_all(self) -> None:
        for fd in [*self.all_fds(), *self._child_ends]:
            self.close_fd(fd)
        self._child_ends = []

    def on_exit(self, status: int) -> None:
        self.exit_status = status
        self.exited_at = time.monotonic()

    def reports(self) -> list[dict[str, Any]]:
        found = []
        for line in bytes(self.status_data).splitlines():
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
        return found

    def setup_error(self) -> str | None:
        errors = [r["setup_error"] for r in self.reports() if "setup_error" in r]
        return errors[0] if errors else None

    def program_report(self) -> dict[str, Any] | None:
        return next((r for r in self.reports() if "status" in r), None)


class Run:
    """One request from the host: its socket, and once started, its chain and clock."""

    def __init__(self, conn: socket.socket | None = None) -> None:
        self.conn = conn
        self.frames = protocol.FrameBuffer()
        self.outbox = bytearray()
        self.request: dict[str, Any] = {}
        self.chain: Chain | None = None
        self.relay: relay.Relay | None = None  # the function channel, when the request has functions
        self.started_at = self.ended_at = 0.0
        self.deadline = self.drain_deadline = float("inf")
        self.timed_out = self.cancelled = self.replied = self.released = False

    def accept_request(self, request: dict[str, Any]) -> str | None:
        """Check a request; returns what is wrong with it, or None."""
        if not isinstance(request.get("code"), str):
            return "request needs 'code' (a string)"
        if not isinstance(request.get("stdin", ""), str):
            return "'stdin' must be a string"
        timeout = request.get("timeout_s")
        if not isinstance(timeout, (int, float)) or timeout <= 0:
            return "'timeout_s' must be a positive number"
        problem = relay.check_functions(request)
        if problem:
            return problem
        self.request = request
        return None

    def job_bytes(self) -> bytes:
        """What the waiting program reads from stdin: its job header, then the program's stdin."""
        request = self.request
        limits = {"timeout_s": float(request["timeout_s"]), "memory_mb": request.get("memory_mb")}
        limits.update({key: int(request.get(key) or default) for key, default in LIMIT_DEFAULTS.items()})
        job = {"code": request["code"], "limits": limits, "functions": request.get("functions", [])}
        header = json.dumps(job).encode("utf-8", "surrogatepass")
        stdin = request.get("stdin", "").encode("utf-8", "surrogateescape")
        return len(header).to_bytes(4, "big") + header + stdin

    def start(self, chain: Chain) -> None:
        self.chain = chain
        chain.run = self
        cap = int(self.request.get("max_output_bytes") or DEFAULT_OUTPUT_CAP)
        chain.stdout.cap = chain.stderr.cap = cap
        chain.pending_stdin = self.job_bytes()
        self.started_at = time.monotonic()
        self.deadline = self.started_at + float(self.request["timeout_s"])

    @property
    def exited(self) -> bool:
        return self.chain is not None and self.chain.exit_status is not None

    def clocks(self) -> list[float]:
        if self.chain is None or self.released:
            return []
        if not self.exited:
            return [] if self.timed_out else [self.deadline]
        return [] if self.replied else [self.drain_deadline]

    def ready_to_reply(self, pid_ns: bool, now: float) -> bool:
        """Is the outcome final? With a PID namespace, the init process reports the program's
        status only after killing everything else in it, so the supervisor's exit need not be awaited."""
        chain = self.chain
        output_done = not chain.outputs
        if chain.exit_status is not None:  # wait for the status pipe too: it may hold the last report
            return not chain.read_fds() or now >= self.drain_deadline
        if self.timed_out:
            return False
        reported = chain.program_report() is not None or chain.setup_error() is not None
        return pid_ns and output_done and reported

    def result(self) -> dict[str, Any]:
        chain = self.chain
        if not self.ended_at:
            self.ended_at = chain.exited_at or time.monotonic()
        program = chain.program_report()
        exit_code: int | None = None
        signal_name: str | None = None
        if program is not None and not self.timed_out:
            status = program["status"]
            if os.WIFEXITED(status):
                exit_code = os.WEXITSTATUS(status)
            elif os.WIFSIGNALED(status):
                exit_code = -os.WTERMSIG(status)
                signal_name = _signal_name(os.WTERMSIG(status))
        stderr = chain.stderr.text()
        if program is None and not self.timed_out:
            stderr += "\n[sandbox] the program's supervisor was killed before the program finished"
        return {
            "stdout": chain.stdout.text(),
            "stderr": stderr,
            "exit_code": exit_code,
            "signal": signal_name,
            "timed_out": self.timed_out,
            "duration_s": round(self.ended_at - self.started_at, 6),
            "truncated": bool(chain.stdout.dropped or chain.stderr.dropped),
            "oom_killed": chain.oom_killed,
            "cpu_s": program.get("cpu_s") if program else None,
            "max_rss_mb": round(program["max_rss_kb"] / 1024, 1) if program else None,
        }


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
