"""Process trees in the server: choosing the isolation plan by trial, forking trees, killing them.

``Trees`` owns what every tree shares: the plan, the read-only mount namespace template (as root),
the per-slot cgroups, the host work directories (without a mount namespace). It knows nothing
of sockets or the event loop; ``server.Server`` drives it.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import sys
import tempfile
import time
from typing import Any

from . import child, isolation, linux
from .cgroups import Cgroups
from .runs import Chain, Run, program_env

UID_BASE = 1_000_000_000
SLOTS = 256  # per server; uid = UID_BASE + (server pid % 2**22) * SLOTS + slot stays below 2**31
TRIAL_SLOT = SLOTS - 1
TRIAL_PATIENCE_S = (10.0, 30.0, 60.0)  # a slow trial (busy host) is retried, never taken as "unsupported"
TRIAL_TIMED_OUT = "trial run timed out"
WORK_ROOT_PREFIX = "anchorloop-sandbox-"
TRIAL_CODE = (
    "import os, sys, wave\n"
    "for p in sys.path:\n"
    "    if os.path.isdir(p):\n"
    "        os.listdir(p)\n"
    "open(sys.executable, 'rb').close()\n"
    "print('ok')\n"
)


class Trees:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.pid = os.getpid()
        self.uid_base = UID_BASE + (self.pid % 2**22) * SLOTS
        self.plan = isolation.Plan()
        self.template_fd: int | None = None
        self.cgroups: Cgroups | None = None
        self._work_root: str | None = None
        self._counter = 0

    @property
    def pid_ns(self) -> bool:
        return self.plan.layers()["pid_ns"]

    # --- choosing the plan ----------------------------------------------------------------------

    def set_up_cgroups(self) -> list[str]:
        """Per-slot cgroups, if the host lets this process create and join them; notes otherwise."""
        if "cgroup" in self.config.get("disabled_layers", ()) or not linux.AVAILABLE:
            return []
        cgroups, reason = Cgroups.create(self.pid)
        if cgroups is None:
            return [reason]
        pid = linux.raw_fork()
        if pid == 0:  # can a child join a slot's cgroups?
            code = 0
            try:
                for procs in cgroups.slot_procs(TRIAL_SLOT):
                    with open(procs, "w") as f:
                        f.write("0")
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        if status != 0:
            cgroups.remove()
            return ["cgroup: a child could not join its cgroup"]
        self.cgroups = cgroups
        return []

    def choose_plan(self) -> list[str]:
        """Keep the strongest plan whose trial run works; returns notes on the ones that did not."""
        is_root = os.geteuid() == 0
        expose = isolation.interpreter_dirs()
        hide = isolation.hidden_dirs(expose, is_root=is_root)
        tmp_mb = int(self.config.get("tmp_mb", 64))
        disabled = tuple(self.config.get("disabled_layers", ()))
        notes = [f"disabled on request: {', '.join(disabled)}"] if disabled else []
        if not is_root:
            notes.append("unprivileged_uid: the server is not root, so programs keep its uid (in a user ns)")
        for plan in isolation.candidate_plans(is_root, expose, hide, tmp_mb, disabled):
            plan.cgroup = self.cgroups is not None
            try:
                self._use(plan)
            except OSError as exc:
                notes.append(f"{plan.describe()}: {exc}")
                continue
            # A loaded host can make a trial run slow; slowness must never demote isolation, so a trial
            # that ran out of time is tried again with more time before the plan counts as failed.
            for patience_s in TRIAL_PATIENCE_S:
                error = self._trial(patience_s)
                if error != TRIAL_TIMED_OUT:
                    break
            if error is None:
                if not plan.mounts:
                    self._work_root_dir()  # made here, so the zygote and the server share it
                return notes
            notes.append(f"{plan.describe()}: {error}")
        raise RuntimeError("no isolation plan works on this host, not even the bare one: " + "; ".join(notes))

    def _use(self, plan: isolation.Plan) -> None:
        if self.template_fd is not None:
            os.close(self.template_fd)
            self.template_fd = None
        self.plan = plan
        if plan.mounts == "as_root":
            self.template_fd = self._make_template()

    def _make_template(self) -> int:
        """Build the read-only mount namespace once, in a short-lived child, and keep a handle to it."""
        ready_r, ready_w = os.pipe()
        release_r, release_w = os.pipe()
        pid = linux.raw_fork()
        if pid == 0:
            try:
                os.close(ready_r)
                os.close(release_w)
                linux.unshare(linux.CLONE_NEWNS)
                isolation.build_readonly_view(self.plan)
                os.write(ready_w, b"ok")
                os.read(release_r, 1)  # keep the namespace alive until the server holds it
            except BaseException as exc:
                with contextlib.suppress(BaseException):
                    os.write(ready_w, f"{type(exc).__name__}: {exc}".encode())
            finally:
                os._exit(0)
        os.close(ready_w)
        os.close(release_r)
        try:
            answer = os.read(ready_r, 4096).decode(errors="replace")
            if answer != "ok":
                raise OSError(f"could not build the read-only mount namespace: {answer or 'no answer'}")
            return os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        finally:
            os.close(ready_r)
            os.close(release_w)
            os.waitpid(pid, 0)

    def _trial(self, patience_s: float) -> str | None:
        """Run a tiny program under the current plan with blocking waits; None when it worked,
        ``TRIAL_TIMED_OUT`` when it did not finish within ``patience_s``, else what went wrong."""
        run = Run()
        run.accept_request({"code": TRIAL_CODE, "timeout_s": patience_s, "memory_mb": None})
        chain = self.spawn(TRIAL_SLOT)
        run.start(chain)
        os.set_blocking(chain.stdin_fd, True)
        with contextlib.suppress(OSError):
            os.write(chain.stdin_fd, chain.pending_stdin)
        chain.close_fd(chain.stdin_fd)
        deadline = time.monotonic() + patience_s
        while chain.read_fds() and time.monotonic() < deadline:
            for fd in select.select(chain.read_fds(), [], [], 0.1)[0]:
                if not chain.read(fd):
                    chain.close_fd(fd)
        timed_out = bool(chain.read_fds())
        if timed_out:
            self.kill(chain)
        _, status = os.waitpid(chain.pid, 0)
        chain.on_exit(status)
        self.sweep(chain)
        result = run.result()
        chain.close_all()
        self.remove_workdir(chain)
        if result["stdout"].strip() == "ok" and result["exit_code"] == 0:
            return None
        if timed_out or result.get("timed_out"):
            return TRIAL_TIMED_OUT
        return (chain.setup_error() or result["stderr"] or f"exit status {status}").strip()[-500:]

    # --- forking and ending trees -----------------------------------------------------------------

    def spawn(self, slot: int) -> Chain:
        """Fork a tree for ``slot``; it applies the plan and waits for its job on stdin."""
        uid = self.uid_base + slot if self.plan.uid else None
        host_workdir = None
        if self.plan.mounts:
            workdir = "/tmp"  # the private tmpfs of the run's mount namespace
        else:
            self._counter += 1
            workdir = host_workdir = os.path.join(self._work_root_dir(), f"run-{self._counter}")
            os.mkdir(workdir, 0o700)
            if uid is not None:
                os.chown(workdir, uid, uid)
        chain = Chain(slot, uid, workdir, host_workdir)
        env = program_env(workdir)
        setup = child.Setup(workdir=workdir, uid=uid, env=env, template_fd=self.template_fd)
        if self.cgroups is not None:
            setup.cgroup_procs = self.cgroups.slot_procs(slot)
            chain.oom_base = self.cgroups.oom_kills(slot)
        fds = chain.open_pipes()
        parent = os.getpid()  # the server, or the zygote
        try:
            pid = linux.raw_fork()  # the server is single-threaded, and the supervisor runs no user code
        except OSError:
            chain.close_all()
            self.remove_workdir(chain)
            raise
        if pid == 0:
            try:
                child.supervise(self.plan, setup, fds, parent)
            finally:
                os._exit(child.SETUP_FAILED)
        chain.forked(pid)
        return chain

    def set_limits(self, chain: Chain, request: dict[str, Any]) -> None:
        if self.cgroups is None:
            return
        max_processes = int(request.get("max_processes") or 64) + 3  # + supervisor, init, program
        try:
            self.cgroups.set_limits(chain.slot, request.get("memory_mb"), max_processes)
        except OSError as exc:  # e.g. the waiting tree already uses more than the new limit
            print(f"sandbox: could not set cgroup limits: {exc}", file=sys.stderr)

    def note_oom(self, chain: Chain) -> None:
        if self.cgroups is not None:
            chain.oom_killed = self.cgroups.oom_kills(chain.slot) > chain.oom_base

    def kill(self, chain: Chain) -> None:
        """Kill a whole tree: the supervisor, its process group, and everything its uid owns."""
        with contextlib.suppress(OSError):
            os.kill(chain.pid, signal.SIGKILL)
        self.sweep(chain)

    def sweep(self, chain: Chain) -> None:
        """Kill what is left of a tree: its process group, its cgroup, its uid's processes."""
        with contextlib.suppress(OSError):
            os.killpg(chain.pid, signal.SIGKILL)
        if self.cgroups is not None:
            for _ in range(3):
                for pid in self.cgroups.pids(chain.slot):
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
        if chain.uid is None:
            return
        helper = os.fork()
        if helper == 0:  # kill(-1) as the run's uid reaches every process it owns, wherever it went
            try:
                os.setresuid(chain.uid, chain.uid, chain.uid)
                for _ in range(100):
                    os.kill(-1, signal.SIGKILL)
            except BaseException:
                pass
            finally:
                os._exit(0)
        os.waitpid(helper, 0)

    def kill_orphans(self, keep: set[int] | dict[int, Any]) -> None:
        """Kill every child of this server not in ``keep`` (the supervisors).

        The server is a child subreaper, and so is each run's init: a process whose parent dies
        is handed to its run's init while the run lasts, and to the server once the run is over.
        So any other child is a leftover of a finished run (or the init of a killed one), however
        it daemonized. Its own children come here when it dies, and are killed in turn."""
        for pid in self._children():
            if pid not in keep:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)

    def _children(self) -> list[int]:
        try:
            with open(f"/proc/self/task/{self.pid}/children") as f:
                return [int(pid) for pid in f.read().split()]
        except OSError:
            pass
        children = []
        for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat", "rb") as f:
                        ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
                except (OSError, ValueError, IndexError):
                    continue
                if ppid == self.pid:
                    children.append(int(entry))
        return children

    def remove_workdir(self, chain: Chain) -> None:
        if chain.host_workdir:
            shutil.rmtree(chain.host_workdir, ignore_errors=True)
            chain.host_workdir = None

    def _work_root_dir(self) -> str:
        if self._work_root is None:
            _remove_stale_work_roots()
            self._work_root = tempfile.mkdtemp(prefix=f"{WORK_ROOT_PREFIX}{self.pid}-")
            os.chmod(self._work_root, 0o711)
        return self._work_root

    def close(self) -> None:
        if self._work_root:
            shutil.rmtree(self._work_root, ignore_errors=True)
        if self.cgroups is not None:
            self.cgroups.remove()


def _remove_stale_work_roots() -> None:
    """Work directories of servers that were killed before they could clean up."""
    base = tempfile.gettempdir()
    for entry in os.scandir(base):
        pid = entry.name.removeprefix(WORK_ROOT_PREFIX).split("-")[0]
        if entry.name.startswith(WORK_ROOT_PREFIX) and pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            shutil.rmtree(entry.path, ignore_errors=True)
