"""ctypes wrappers for the Linux calls that Python 3.11's ``os`` module does not expose.

Each raises ``OSError`` with the call's name on failure. On other platforms ``AVAILABLE`` is
False and the isolation layers built on these calls are simply reported as inactive.
"""

from __future__ import annotations

import ctypes
import os
import sys

AVAILABLE = sys.platform.startswith("linux")

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38

_AT_FDCWD = -100
_AT_RECURSIVE = 0x8000
_MOUNT_ATTR_RDONLY = 0x1
_SYS_MOUNT_SETATTR = 442  # the same number on every architecture (syscalls >= 424 are unified)
_CAPABILITY_VERSION_3 = 0x20080522

_libc = ctypes.CDLL(None, use_errno=True) if AVAILABLE else None
# Calls through PyDLL keep the GIL, as os.fork() does.
_fork = ctypes.PyDLL(None, use_errno=True).fork if AVAILABLE else None


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def _check(ret: int, what: str) -> None:
    if ret != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _libc_or_raise() -> ctypes.CDLL:
    if _libc is None:
        raise OSError(38, "not available on this platform")
    return _libc


def _bytes(value: str | None) -> bytes | None:
    return None if value is None else os.fsencode(value)


def resolve() -> None:
    """Look up the C functions once, so that forked children do not each repeat it."""
    if _libc is not None:
        for name in ("unshare", "setns", "mount", "syscall", "prctl", "capset"):
            getattr(_libc, name)


def raw_fork() -> int:
    """fork(2) without CPython's at-fork work (about 1 ms of CPU per child here).

    Only for a single-threaded parent, and for children that never run the user's code: in the
    child, ``threading`` and ``random`` keep the parent's state, and at-fork hooks do not run.
    """
    if _fork is None:
        return os.fork()
    pid = _fork()
    if pid < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"fork: {os.strerror(errno)}")
    return pid


def unshare(flags: int) -> None:
    _check(_libc_or_raise().unshare(ctypes.c_int(flags)), f"unshare({flags:#x})")


def setns(fd: int, nstype: int) -> None:
    _check(_libc_or_raise().setns(ctypes.c_int(fd), ctypes.c_int(nstype)), "setns")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    libc = _libc_or_raise()
    ret = libc.mount(_bytes(source), _bytes(target), _bytes(fstype), ctypes.c_ulong(flags), _bytes(data))
    _check(ret, f"mount {fstype or source} on {target}")


def set_readonly(path: str, readonly: bool) -> None:
    """Set or clear the read-only flag on the mount at ``path`` and every mount below it."""
    attr = _MountAttr(_MOUNT_ATTR_RDONLY if readonly else 0, 0 if readonly else _MOUNT_ATTR_RDONLY, 0, 0)
    ret = _libc_or_raise().syscall(
        ctypes.c_long(_SYS_MOUNT_SETATTR),
        ctypes.c_int(_AT_FDCWD),
        _bytes(path),
        ctypes.c_uint(_AT_RECURSIVE),
        ctypes.byref(attr),
        ctypes.c_size_t(ctypes.sizeof(attr)),
    )
    _check(ret, f"mount_setattr {path}")


def prctl(option: int, value: int) -> None:
    libc = _libc_or_raise()
    _check(libc.prctl(ctypes.c_int(option), ctypes.c_ulong(value), 0, 0, 0), f"prctl({option})")


def drop_capabilities() -> None:
    """Empty the effective, permitted and inheritable capability sets of this process."""
    header = _CapHeader(_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(_libc_or_raise().capset(ctypes.byref(header), data), "capset")


def write_file(path: str, text: str) -> None:
    """One unbuffered write, as files under /proc and /sys expect (no truncation, no buffering)."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
