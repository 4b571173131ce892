"""The program's end of the function channel: the host's tools as plain Python functions.

When a job names ``functions``, each becomes a builtin of the program: ``days_between("2024-01-01",
"2024-03-01")`` sends ``{"id", "name", "args"}`` over the channel (fd ``CALLS_FD``), waits for the
answer and returns its value, or raises ``ToolError`` with the tool's error text. Positional
arguments are matched to the tool's parameters in order. Arguments must be JSON values; dates and
times are sent as ISO strings, sets as lists. Calls from several threads take turns.

Nothing here is trusted by the other side: the server checks every frame (``relay``), the host
runs only the tools it listed. This module only makes the channel pleasant to use.
"""

from __future__ import annotations

import builtins
import datetime
import json
import socket
import threading
from typing import Any

from . import protocol
from .relay import MAX_REQUEST_BYTES

CALLS_FD = 4


class ToolError(Exception):
    """A tool called from the program failed; the message says why."""


ToolError.__module__ = "builtins"  # shown as ``ToolError: ...`` in tracebacks, like a builtin
PACKAGE_DIR = __file__.rsplit("/", 1)[0]


class _Channel:
    def __init__(self, fd: int) -> None:
        self.sock = socket.socket(fileno=fd)
        self.lock = threading.Lock()
        self.last_id = 0
        self.ended: str | None = None

    def call(self, name: str, args: dict[str, Any]) -> Any:
        with self.lock:
            if self.ended:
                raise ToolError(f"{name}() cannot be called: {self.ended}")
            self.last_id += 1
            request = {"id": self.last_id, "name": name, "args": args}
            try:
                data = json.dumps(request, default=_plain, allow_nan=False, ensure_ascii=False).encode(
                    "utf-8", "surrogatepass")
            except (TypeError, ValueError, RecursionError) as exc:
                raise TypeError(f"{name}(): {exc}") from None
            if len(data) > MAX_REQUEST_BYTES:
                raise ValueError(f"{name}(): the arguments are {len(data)} bytes; the limit is {MAX_REQUEST_BYTES}")
            try:
                self.sock.sendall(protocol.HEADER.pack(len(data)) + data)
                reply = self._reply(self.last_id)
            except (OSError, protocol.ProtocolError, ValueError) as exc:
                reply = {"id": None, "error": f"the function channel failed ({type(exc).__name__})"}
            if reply.get("id") is None:
                self.ended = str(reply.get("error") or "the function channel is closed")
                raise ToolError(f"{name}() cannot be called: {self.ended}")
        if reply.get("ok") is True:
            return reply.get("value")
        raise ToolError(str(reply.get("error") or f"{name}() failed"))

    def _reply(self, ident: int) -> dict[str, Any]:
        while True:
            message = protocol.recv_message(self.sock)
            if message is None:
                return {"id": None, "error": "the function channel is closed"}
            if message.get("id") is None or message.get("id") == ident:
                return message
            # an answer to a call that was interrupted (a signal handler raised): skip it


def _plain(value: Any) -> Any:
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    raise TypeError(f"a {type(value).__name__} cannot be sent to a tool; pass str, int, float, bool, None, "
                    "lists or dicts")


def _function(channel: _Channel, name: str, params: list[str], doc: str) -> Any:
    def function(*args: Any, **kwargs: Any) -> Any:
        if len(args) > len(params):
            raise TypeError(f"{name}() takes {len(params)} positional arguments but {len(args)} were given")
        named = dict(zip(params, args))
        for key in kwargs:
            if key in named:
                raise TypeError(f"{name}() got multiple values for argument {key!r}")
        named.update(kwargs)
        return channel.call(name, named)

    function.__name__ = function.__qualname__ = name
    function.__doc__ = doc or None
    return function


def install(functions: list[dict[str, Any]], fd: int = CALLS_FD) -> None:
    """Make each function of the job (``{"name", "params", "doc"}``) a builtin of the program."""
    channel = _Channel(fd)
    builtins.ToolError = ToolError
    for spec in functions:
        fn = _function(channel, spec["name"], list(spec.get("params", [])), spec.get("doc", ""))
        setattr(builtins, spec["name"], fn)
