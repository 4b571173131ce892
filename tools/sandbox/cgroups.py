"""Per-run cgroups: a cap on the memory and the number of processes of a whole run, and a list of
its processes to kill. RLIMIT_AS and RLIMIT_NPROC bound one process (and NPROC not at all for
root); a cgroup bounds the run.

Each slot of the server gets one cgroup per controller (memory, pids), under the server's own
cgroup, in ``anchorloop-<server pid>/slot-<n>``. Works with cgroup v1 (separate hierarchies)
and with v2 where the server's cgroup delegates both controllers. Needs write access to the
cgroup file system (root, or a delegated subtree); otherwise the layer is off.
"""

from __future__ import annotations

import contextlib
import os

from . import linux

CONTROLLERS = ("memory", "pids")
SLACK_MB = 64  # the supervisor, init and interpreter themselves


class Cgroups:
    def __init__(self, parents: dict[str, str], v2: bool) -> None:
        self.parents = parents  # controller -> the server's directory in that hierarchy
        self.v2 = v2
        self._limits: dict[int, tuple[int | None, int]] = {}

    @classmethod
    def create(cls, server_pid: int) -> tuple[Cgroups | None, str]:
        """The server's cgroups, or None and the reason they are not available."""
        try:
            mounts = _cgroup_mounts()
            own = _own_paths()
            if "memory" in mounts and "pids" in mounts:
                parents = {
                    c: _join(mounts[c], own.get(c, "/"), f"anchorloop-{server_pid}") for c in CONTROLLERS
                }
                v2 = False
            elif "" in mounts:
                root = _join(mounts[""], own.get("", "/"), f"anchorloop-{server_pid}")
                parents = dict.fromkeys(CONTROLLERS, root)
                v2 = True
            else:
                return None, "no memory and pids cgroup controllers are mounted"
            for parent in set(parents.values()):
                _remove_stale_siblings(parent)
                os.makedirs(parent, exist_ok=True)
            if v2:
                root = parents["memory"]
                with open(os.path.join(root, "cgroup.controllers")) as f:
                    available = f.read().split()
                if not set(CONTROLLERS) <= set(available):
                    raise OSError(f"the server's cgroup does not delegate {' and '.join(CONTROLLERS)}")
                linux.write_file(os.path.join(root, "cgroup.subtree_control"), "+memory +pids")
        except OSError as exc:
            return None, f"cgroup: {exc}"
        return cls(parents, v2), ""

    def slot_procs(self, slot: int) -> list[str]:
        """The ``cgroup.procs`` files a process of ``slot`` joins (created on first use)."""
        files = []
        for directory in sorted({self._dir(c, slot) for c in CONTROLLERS}):
            os.makedirs(directory, exist_ok=True)
            files.append(os.path.join(directory, "cgroup.procs"))
        return files

    def set_limits(self, slot: int, memory_mb: int | None, max_processes: int) -> None:
        """Cap the slot's memory and processes (written only when they change)."""
        if self._limits.get(slot) == (memory_mb, max_processes):
            return
        memory = None if memory_mb is None else (memory_mb + SLACK_MB) * 2**20
        pids_dir, memory_dir = self._dir("pids", slot), self._dir("memory", slot)
        linux.write_file(os.path.join(pids_dir, "pids.max"), str(max_processes))
        if self.v2:
            linux.write_file(os.path.join(memory_dir, "memory.max"), "max" if memory is None else str(memory))
            with contextlib.suppress(OSError):
                linux.write_file(os.path.join(memory_dir, "memory.swap.max"), "0")
        else:
            limit = "-1" if memory is None else str(memory)
            with contextlib.suppress(OSError):  # memsw must stay >= memory: raise it first
                linux.write_file(os.path.join(memory_dir, "memory.memsw.limit_in_bytes"), "-1")
            linux.write_file(os.path.join(memory_dir, "memory.limit_in_bytes"), limit)
            with contextlib.suppress(OSError):  # exists only with swap accounting
                linux.write_file(os.path.join(memory_dir, "memory.memsw.limit_in_bytes"), limit)
        self._limits[slot] = (memory_mb, max_processes)

    def pids(self, slot: int) -> list[int]:
        try:
            with open(os.path.join(self._dir("pids", slot), "cgroup.procs")) as f:
                return [int(pid) for pid in f.read().split()]
        except OSError:
            return []

    def oom_kills(self, slot: int) -> int:
        name = "memory.events" if self.v2 else "memory.oom_control"
        try:
            with open(os.path.join(self._dir("memory", slot), name)) as f:
                for line in f:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
        except OSError:
            pass
        return 0

    def remove(self) -> None:
        for parent in set(self.parents.values()):
            _remove_tree(parent)

    def _dir(self, controller: str, slot: int) -> str:
        return os.path.join(self.parents[controller], f"slot-{slot}")


def _cgroup_mounts() -> dict[str, str]:
    """controller -> mount point (v1); "" -> the v2 mount point."""
    found: dict[str, str] = {}
    with open("/proc/self/mounts") as f:
        for line in f:
            _, point, fstype, options, *_ = line.split()
            if fstype == "cgroup":
                for option in options.split(","):
                    if option in CONTROLLERS:
                        found.setdefault(option, point)
            elif fstype == "cgroup2":
                found.setdefault("", point)
    return found


def _own_paths() -> dict[str, str]:
    """controller -> this process's cgroup path ("" for v2)."""
    paths: dict[str, str] = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for controller in controllers.split(",") if controllers else [""]:
                paths[controller] = path
    return paths


def _join(mount: str, path: str, name: str) -> str:
    return os.path.join(mount, path.lstrip("/"), name)


def _remove_tree(directory: str) -> None:
    """rmdir a cgroup and its (empty) children; cgroup directories cannot be removed recursively."""
    if not os.path.isdir(directory):
        return
    for entry in os.scandir(directory):
        if entry.is_dir(follow_symlinks=False):
            _remove_tree(entry.path)
    with contextlib.suppress(OSError):
        os.rmdir(directory)


def _remove_stale_siblings(parent: str) -> None:
    """Remove the cgroups of servers that died without cleaning up."""
    base = os.path.dirname(parent)
    if not os.path.isdir(base):
        return
    for entry in os.scandir(base):
        pid = entry.name.removeprefix("anchorloop-")
        if entry.name.startswith("anchorloop-") and pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            _remove_tree(entry.path)
