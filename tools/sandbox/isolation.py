"""Isolation layers: the plan a host allows, and how each process of a run applies it.

A run is three processes: the *supervisor* (forked from the server), the *init* (its child, PID 1
of the run's PID namespace when there is one) and the *program* (the user's code). The layers are
applied in that order, each in the process where the kernel requires it:

- supervisor: own session; its cgroups; a private mount namespace with a read-only root and a
  private tmpfs as ``/tmp`` (as root: a copy of a read-only template the server built once,
  joined before privileges are dropped); a per-run unprivileged uid; user + network + PID
  (+ mount) namespaces.
- init: a fresh ``/proc`` for the new PID namespace; then no capabilities, ``no_new_privs``;
  reaps orphans, and kills whatever is left in the namespace when the program ends.
- program: resource limits, once its job has arrived.

Which combination works is decided once, by trial, in ``trees.Trees.choose_plan``.
"""

from __future__ import annotations

import os
import resource
import signal
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

from . import linux

SANDBOX_UID = 1000  # the uid the program sees inside its user namespace


@dataclass
class Plan:
    """Which layers a run applies. ``mounts`` is "as_root", "in_userns" or "" (no mount namespace)."""

    mounts: str = ""
    uid: bool = False
    ns_flags: int = 0
    fresh_proc: bool = False
    cgroup: bool = False
    expose: list[str] = field(default_factory=list)
    hide: list[str] = field(default_factory=list)
    tmp_mb: int = 64

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """The optional layers this plan has (rlimits, process-group kill, clean env are always on)."""
        active = [
            name for name, on in self.layers().items() if on and name in OPTIONAL_LAYERS + OPTIONAL_EXTRAS
        ]
        return "+".join(active) or "rlimits only"

    def layers(self) -> dict[str, bool]:
        """Which protections a run under this plan has, by name (the contract of ``ExecResult.isolation``)."""
        return {
            "process_group_kill": True,
            "rlimits": True,
            "clean_env": True,
            "closed_fds": True,
            "no_new_privs": linux.AVAILABLE,
            "unprivileged_uid": self.uid,
            "user_ns": bool(self.ns_flags & linux.CLONE_NEWUSER),
            "net_ns": bool(self.ns_flags & linux.CLONE_NEWNET),
            "pid_ns": bool(self.ns_flags & linux.CLONE_NEWPID),
            "mount_ns": bool(self.mounts),
            "readonly_fs": bool(self.mounts),
            "private_tmp": bool(self.mounts),
            "fresh_proc": self.fresh_proc,
            "cgroup": self.cgroup,
        }


OPTIONAL_LAYERS = ("unprivileged_uid", "user_ns", "net_ns", "pid_ns", "mount_ns", "fresh_proc", "cgroup")
OPTIONAL_EXTRAS = ("readonly_fs", "private_tmp")  # come with mount_ns


def candidate_plans(
    is_root: bool, expose: list[str], hide: list[str], tmp_mb: int, disabled: tuple[str, ...] = ()
) -> list[Plan]:
    """Plans from strongest to weakest, without the ``disabled`` layers; the server keeps the first
    one that passes a trial run. The last one (no optional layer) always stays."""
    user, net, pid = linux.CLONE_NEWUSER, linux.CLONE_NEWNET, linux.CLONE_NEWPID
    plans = []
    if linux.AVAILABLE:
        for mounts in ("as_root", "") if is_root else ("in_userns", ""):
            for flags in (user | net | pid, user | net, user | pid, 0):
                if mounts == "in_userns" and not flags:
                    continue  # without root, a mount namespace needs a user namespace
                for fresh_proc in (True, False) if mounts and flags & pid else (False,):
                    nested = linux.CLONE_NEWNS if mounts == "in_userns" or fresh_proc else 0
                    plans.append(
                        Plan(mounts=mounts, uid=is_root, ns_flags=flags | nested, fresh_proc=fresh_proc)
                    )
    plans.append(Plan())
    for plan in plans:
        plan.expose, plan.hide, plan.tmp_mb = expose, hide, tmp_mb
    return [p for p in plans if not any(p.layers()[name] for name in disabled)]


def interpreter_dirs() -> list[str]:
    """The directories a program needs to read to run this interpreter and import its packages."""
    found: set[str] = set()
    for path in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, *sys.path):
        if path and os.path.exists(path):
            found.add(os.path.realpath(path if os.path.isdir(path) else os.path.dirname(path)))
    found.add(os.path.dirname(os.path.realpath(sys.executable)))
    ordered = sorted(found)
    return [p for p in ordered if not any(p != q and p.startswith(q.rstrip("/") + "/") for q in ordered)]


def hidden_dirs(needed: list[str], *, is_root: bool) -> list[str]:
    """Directories to cover with an empty tmpfs: the host user's home, and (when a run drops to an
    unprivileged uid) each ancestor of ``needed`` that other users may not enter, such as a
    Python installed under ``/root``. What ``needed`` holds is bound back in at the same path."""
    hide: set[str] = set()
    home = os.path.realpath(os.path.expanduser("~"))
    if home != "/" and os.path.isdir(home):
        hide.add(home)
    if is_root:
        for path in needed:
            current = "/"
            for part in path.strip("/").split("/")[:-1]:
                current = os.path.join(current, part)
                if not os.stat(current).st_mode & 0o001:
                    hide.add(current)
                    break
    ordered = sorted(hide)
    return [p for p in ordered if not any(p != q and p.startswith(q.rstrip("/") + "/") for q in ordered)]


# --- applied in the supervisor --------------------------------------------------------------


def enter_supervisor(
    plan: Plan, uid: int | None, server_pid: int, template_fd: int | None, cgroup_procs: list[str]
) -> None:
    os.setsid()
    for procs in cgroup_procs:  # while still root, and before the read-only view hides /sys
        linux.write_file(procs, "0")
    if plan.mounts == "as_root":
        # Join the read-only view the server prepared once, then take a private copy of it.
        linux.setns(template_fd, linux.CLONE_NEWNS)
        os.close(template_fd)
        linux.unshare(linux.CLONE_NEWNS)
        _mount_private_tmp(plan)
    if plan.uid and uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    if linux.AVAILABLE:
        linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != server_pid:
            os._exit(1)
    if plan.ns_flags:
        # Changing uid marks the process undumpable, which makes /proc/self/uid_map root-owned.
        linux.prctl(linux.PR_SET_DUMPABLE, 1)
        outer_uid, outer_gid = os.getuid(), os.getgid()
        linux.unshare(plan.ns_flags)
        linux.write_file("/proc/self/setgroups", "deny")
        linux.write_file("/proc/self/uid_map", f"{SANDBOX_UID} {outer_uid} 1\n")
        linux.write_file("/proc/self/gid_map", f"{SANDBOX_UID} {outer_gid} 1\n")
    if plan.mounts == "in_userns":
        build_readonly_view(plan)
        _mount_private_tmp(plan)


def build_readonly_view(plan: Plan) -> None:
    """In a new mount namespace: everything read-only, hidden directories covered, the
    interpreter bound back in. As root this is done once, in a template (``server.make_template``)."""
    # First make every mount private, so nothing below can propagate back to the host.
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
    exposed = [path for path in plan.expose if _under(path, plan.hide)]
    bind_from = {path: os.open(path, os.O_PATH | os.O_DIRECTORY) for path in exposed}
    for path in plan.hide:
        linux.mount("tmpfs", path, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, "size=1m,mode=755")
    for path, fd in bind_from.items():
        os.makedirs(path, exist_ok=True)
        linux.mount(f"/proc/self/fd/{fd}", path, None, linux.MS_BIND | linux.MS_REC)
        os.close(fd)
    linux.set_readonly("/", True)
    for path in ("/proc", "/dev"):
        if os.path.ismount(path):
            linux.set_readonly(path, False)


def _mount_private_tmp(plan: Plan) -> None:
    """A fresh tmpfs on /tmp and /dev/shm; interpreter directories that live under them (a virtual
    environment in a temporary checkout, say) are bound back in, read-only, at the same path."""
    for path in ("/tmp", "/dev/shm"):
        if not os.path.isdir(path):
            continue
        inside = [p for p in plan.expose if _under(p, [path]) and os.path.isdir(p)]
        topmost = [p for p in inside if not any(q != p and _under(p, [q]) for q in inside)]
        bind_from = {p: os.open(p, os.O_PATH | os.O_DIRECTORY) for p in topmost}
        linux.mount("tmpfs", path, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, f"size={plan.tmp_mb}m,mode=1777")
        for target, fd in bind_from.items():
            os.makedirs(target, mode=0o755, exist_ok=True)
            linux.mount(f"/proc/self/fd/{fd}", target, None, linux.MS_BIND | linux.MS_REC)
            linux.set_readonly(target, True)
            os.close(fd)


def _under(path: str, parents: list[str]) -> bool:
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in parents)


# --- applied in the init process and the program ---------------------------------------------


def enter_init(plan: Plan) -> None:
    if not linux.AVAILABLE:
        return
    linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
    linux.prctl(linux.PR_SET_CHILD_SUBREAPER, 1)
    if plan.fresh_proc:
        linux.mount("proc", "/proc", "proc", linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC)
    # Last use of privileges: the program inherits the empty capability sets and no_new_privs.
    if plan.ns_flags & linux.CLONE_NEWUSER:
        linux.drop_capabilities()
    linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)


@dataclass
class Limits:
    timeout_s: float
    memory_mb: int | None
    max_processes: int
    max_open_files: int
    max_file_mb: int


def enter_program(plan: Plan) -> None:
    if linux.AVAILABLE:
        linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)


def apply_limits(limits: Limits) -> None:
    cpu_s = int(limits.timeout_s) + 2  # a backstop: the server's wall-clock timeout fires first
    _limit(resource.RLIMIT_CPU, cpu_s, cpu_s + 1)
    if limits.memory_mb:
        _limit(resource.RLIMIT_AS, limits.memory_mb * 2**20)
    _limit(resource.RLIMIT_FSIZE, limits.max_file_mb * 2**20)
    _limit(resource.RLIMIT_NOFILE, limits.max_open_files)
    _limit(resource.RLIMIT_NPROC, limits.max_processes)
    _limit(resource.RLIMIT_CORE, 0)


def _limit(which: int, soft: int, hard: int | None = None) -> None:
    _, current_hard = resource.getrlimit(which)
    hard = soft if hard is None else hard
    if current_hard != resource.RLIM_INFINITY:
        soft, hard = min(soft, current_hard), min(hard, current_hard)
    resource.setrlimit(which, (soft, hard))
