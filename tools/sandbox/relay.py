"""The server's end of a run's function channel: calls from the program to the host's tools.

A run whose request names ``functions`` gets them in the program as plain Python functions
(``bridge``). Each call is a frame on a socket between the program and the server; the server
checks it and hands it to the host on the run's own socket, and hands the host's answer back. The
program is untrusted, so everything it sends is checked here, before the host sees it:

- only the names the request listed can be called; anything else is answered with an error;
- a request is one JSON object ``{"id": int, "name": str, "args": {...}}`` of at most
  ``MAX_REQUEST_BYTES``; a frame that is too big, not JSON or not of that shape ends the channel
  (the program's next call raises), and so does a flood of refused requests;
- at most ``MAX_IN_FLIGHT`` calls wait for the host at once, and ``max_calls`` per run are passed on.

The host gets ``{"event": "call", "call": n, "name", "args"}`` with the server's own number ``n``,
never the program's id, and answers ``{"call": n, "ok": bool, "value" | "error"}``. Once the run has
timed out or exited, nothing more is passed on.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import sys
from collections.abc import Callable
from typing import Any

from . import protocol

MAX_REQUEST_BYTES = 1 << 20
MAX_REPLY_BYTES = 1 << 20
MAX_IN_FLIGHT = 8
MAX_REFUSED = 256  # refused requests before the channel is closed
DEFAULT_MAX_CALLS = 64
MAX_FUNCTIONS = 64
MAX_NAME_CHARS = 64
MAX_DOC_CHARS = 2000


def check_functions(request: dict[str, Any]) -> str | None:
    """What is wrong with a request's ``functions`` and ``max_calls``, or None."""
    functions = request.get("functions", [])
    if not isinstance(functions, list) or len(functions) > MAX_FUNCTIONS:
        return f"'functions' must be a list of at most {MAX_FUNCTIONS} entries"
    for spec in functions:
        if not isinstance(spec, dict) or not _identifier(spec.get("name")):
            return "each entry of 'functions' needs a 'name' that is a Python identifier"
        params = spec.get("params", [])
        if not isinstance(params, list) or len(params) > MAX_FUNCTIONS or not all(map(_identifier, params)):
            return f"'params' of function {spec['name']!r} must be a list of Python identifiers"
        if not isinstance(spec.get("doc", ""), str) or len(spec.get("doc", "")) > MAX_DOC_CHARS:
            return f"'doc' of function {spec['name']!r} must be a string of at most {MAX_DOC_CHARS} characters"
    max_calls = request.get("max_calls", DEFAULT_MAX_CALLS)
    if not isinstance(max_calls, int) or isinstance(max_calls, bool) or not 0 <= max_calls <= 100_000:
        return "'max_calls' must be an integer from 0 to 100000"
    return None


def _identifier(name: Any) -> bool:
    return isinstance(name, str) and name.isidentifier() and len(name) <= MAX_NAME_CHARS


class Relay:
    """One run's channel: the server's end of the socket, and the calls in flight on it. It watches
    its socket in the server's ``selector`` and hands calls to ``to_host``; the server passes the
    host's answers to ``from_host`` and calls ``close`` when the run is over."""

    def __init__(
        self, fd: int, request: dict[str, Any], selector: selectors.BaseSelector,
        to_host: Callable[[dict[str, Any]], None],
    ) -> None:
        self.fd: int | None = fd
        self.selector, self.to_host = selector, to_host
        self.names = {spec["name"] for spec in request.get("functions", [])}
        self.max_calls = int(request.get("max_calls", DEFAULT_MAX_CALLS))
        self.frames = protocol.FrameBuffer(max_frame=MAX_REQUEST_BYTES)
        self.outbox = bytearray()  # replies to the program
        self.pending: dict[int, int] = {}  # the server's call number -> the program's id
        self.calls = self.refused = 0
        self.closing = False  # end the channel once the outbox is written
        os.set_blocking(fd, False)
        selector.register(fd, selectors.EVENT_READ, (self, Relay._on_event))

    @property
    def open(self) -> bool:
        return self.fd is not None

    def from_program(self, data: bytes) -> list[dict[str, Any]]:
        """Take bytes the program sent; returns the calls to hand to the host."""
        if self.closing:
            return []
        try:
            messages = self.frames.feed(data)
        except Exception as exc:  # too big, not UTF-8, not JSON, nested too deep, not an object
            self._end(f"the program broke the function channel's protocol: {_short(exc)}")
            return []
        to_host = []
        for message in messages:
            call = self._take(message)
            if call is not None:
                to_host.append(call)
            if self.closing:
                break
        return to_host

    def _take(self, message: dict[str, Any]) -> dict[str, Any] | None:
        ident, name, args = message.get("id"), message.get("name"), message.get("args", {})
        if not isinstance(ident, int) or isinstance(ident, bool) or not 0 <= ident < 2**53:
            self._end("a call to a function needs an integer 'id'")
            return None
        if not isinstance(name, str) or name not in self.names:
            shown = name[:MAX_NAME_CHARS] if isinstance(name, str) else type(name).__name__
            return self._refuse(ident, f"there is no function {shown!r} here; the functions are: "
                                       f"{', '.join(sorted(self.names)) or 'none'}")
        if not isinstance(args, dict):
            return self._refuse(ident, f"the arguments of {name}() must be a JSON object")
        if self.calls >= self.max_calls:
            return self._refuse(ident, f"the limit of {self.max_calls} function calls per run is used up")
        if len(self.pending) >= MAX_IN_FLIGHT:
            return self._refuse(ident, f"more than {MAX_IN_FLIGHT} function calls at once")
        self.calls += 1
        self.pending[self.calls] = ident
        return {"event": "call", "call": self.calls, "name": name, "args": args}

    def from_host(self, message: dict[str, Any]) -> None:
        """An answer from the host: pass it on to the program that made the call."""
        ident = self.pending.pop(message.get("call"), None) if isinstance(message.get("call"), int) else None
        if ident is None or not self.open:
            return
        reply = {"id": ident, "ok": message.get("ok") is True}
        if reply["ok"]:
            reply["value"] = message.get("value")
        else:
            reply["error"] = str(message.get("error") or "the call failed")
        body = protocol.encode(reply)
        if len(body) > MAX_REPLY_BYTES:
            body = protocol.encode({"id": ident, "ok": False, "error": "the function's result is too big to pass"})
        self.outbox += body
        self._flush()

    def _refuse(self, ident: int, error: str) -> None:
        self.refused += 1
        self.outbox += protocol.encode({"id": ident, "ok": False, "error": error})
        if self.refused >= MAX_REFUSED:
            self._end(f"{MAX_REFUSED} function calls were refused; no more are taken")
        return None

    def _end(self, reason: str) -> None:
        self.outbox += protocol.encode({"id": None, "ok": False, "error": reason})
        self.closing = True

    # --- the socket (non-blocking), driven by the server's loop -----------------------------------

    def _on_event(self, fd: int, mask: int) -> None:
        try:
            if mask & selectors.EVENT_READ:
                data = self._read()
                if data == b"":  # the program closed its end, or is gone
                    self.close()
                    return
                for call in self.from_program(data or b""):
                    self.to_host(call)
            self._flush()
        except Exception as exc:  # never let one run's channel take down the server's loop
            print(f"sandbox: function channel closed after an error: {_short(exc)}", file=sys.stderr)
            self.close()

    def _read(self) -> bytes | None:
        """What the program sent: b"" at end of file, None if nothing is there yet."""
        try:
            return os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return None
        except OSError:
            return b""

    def _flush(self) -> None:
        """Write what the outbox holds, watching for room while some is left; once a closing
        channel's outbox is out, close it."""
        if self.fd is None:
            return
        try:
            while self.outbox:
                del self.outbox[: os.write(self.fd, self.outbox)]
        except BlockingIOError:
            pass
        except OSError:
            self.outbox.clear()
        if self.closing and not self.outbox:
            self.close()
            return
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if self.outbox else 0)
        self.selector.modify(self.fd, events, (self, Relay._on_event))

    def close(self) -> None:
        """Stop watching and close the socket (the relay owns it once the run has started). Idempotent."""
        if self.fd is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(self.fd)
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None
        self.outbox.clear()
        self.pending.clear()


def _short(exc: Exception) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200]}"
