"""Tools from MCP (Model Context Protocol) servers, as anchorloop ``Tool``s.

``mcp_tools("python -m my_server")`` starts a server over stdio, ``mcp_tools("http://127.0.0.1:8000/mcp")``
connects to one over streamable HTTP, and a dict is a langchain-mcp-adapters connection
(``{"transport": "stdio", "command": ..., "args": [...], "env": ...}``, ``"streamable_http"``, ``"sse"``,
``"websocket"``). Each tool the server lists becomes a ``Tool``: its input schema is its ``json_schema()``
and, turned into a pydantic model, its ``args_schema``, so a wrong argument is an error result naming the
field before anything is sent. A call's text content is the result's content, an MCP error result an
error result. ``load_tools(["mcp:COMMAND LINE"])`` and ``load_tools(["mcp:http://host:port/mcp"])`` name
them in configs and on the command line.

One connection per server, held by an event loop in a thread of its own, so the tools work from any
caller's loop (and from ``asyncio.run`` after ``asyncio.run``). A server that cannot start is a
``ValueError`` (command not found) or ``RuntimeError`` (exits at start-up, never answers) when the tools
are loaded. A server that stops while in use makes the call an error result, and the next call starts it
again (``max_restarts`` times); a call that hangs ends at ``timeout_s`` (or the agent's tool time-out).
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import json
import logging
import math
import os
import re
import shlex
import shutil
import threading
import typing
from collections.abc import AsyncIterator, Mapping
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from tools.base import Tool, ToolResult, describe_exception

try:
    import anyio
    from mcp import ClientSession, McpError, StdioServerParameters, types
    from mcp.client.stdio import stdio_client
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "Tools from MCP servers need the 'mcp' and 'langchain-mcp-adapters' packages: "
        "pip install 'anchorloop[mcp]'."
    ) from exc

log = logging.getLogger(__name__)

PREFIX = "mcp:"
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_STARTUP_TIMEOUT_S = 30.0
DEFAULT_MAX_RESTARTS = 5
_STDERR_LINES = 20  # the tail of a stdio server's stderr kept for error messages
_CLOSE_TIMEOUT_S = 10.0


# --- naming a server ---------------------------------------------------------------------------------


def connection_of(server: str | Mapping[str, Any]) -> dict[str, Any]:
    """The langchain-mcp-adapters connection dict for ``server``: a URL (streamable HTTP), a command line
    (stdio), either one optionally prefixed ``mcp:``, or a connection dict (copied)."""
    if isinstance(server, Mapping):
        connection = dict(server)
        if "transport" not in connection:
            raise ValueError(f"An MCP connection dict needs a 'transport' ('stdio', 'streamable_http', 'sse' or "
                             f"'websocket'); got keys {sorted(connection)}.")
        if connection["transport"] == "stdio":
            if not connection.get("command"):
                raise ValueError("An MCP stdio connection needs a 'command'.")
            connection.setdefault("args", [])
        return connection
    if not isinstance(server, str):
        raise ValueError(f"An MCP server is a URL, a command line or a connection dict, got {server!r}.")
    text = server.strip()
    if text.startswith(PREFIX):
        text = text[len(PREFIX):].strip()
    if re.match(r"(?i)https?://", text):
        return {"transport": "streamable_http", "url": text}
    try:
        argv = shlex.split(text)
    except ValueError as exc:
        raise ValueError(f"Cannot read the MCP server command line {text!r}: {exc}.") from None
    if not argv:
        raise ValueError("An MCP server needs a command line or a URL, e.g. 'mcp:python -m my_server' or "
                         "'mcp:http://127.0.0.1:8000/mcp'.")
    return {"transport": "stdio", "command": argv[0], "args": argv[1:]}


def label_of(connection: Mapping[str, Any]) -> str:
    """How errors name a server: its command line, or its URL."""
    if connection.get("transport") == "stdio":
        return shlex.join([str(connection["command"]), *map(str, connection.get("args") or [])])
    return str(connection.get("url", connection.get("transport")))


def check_mcp_name(name: str) -> None:
    """Check an ``mcp:...`` tool name without starting the server: it parses, and a stdio command exists."""
    connection = connection_of(name)
    if connection["transport"] == "stdio":
        _check_command(connection)


_BY_NAME: dict[str, MCPServer] = {}
_BY_NAME_LOCK = threading.Lock()


def tools_from_name(name: str) -> list[Tool]:
    """The tools an ``mcp:...`` name (as in ``load_tools``) stands for, with the default time-outs. A name
    loaded again while its server is open shares that server (an env's ``tools()`` may be asked for more
    than once; each time would otherwise start another process)."""
    connection = connection_of(name)
    key = label_of(connection)
    with _BY_NAME_LOCK:
        server = _BY_NAME.get(key)
        if server is None or server.closed:
            server = MCPServer(connection)
            server.start()
            _BY_NAME[key] = server
    return _tools_of(server, "")


def _check_command(connection: Mapping[str, Any]) -> None:
    command = str(connection["command"])
    path = (connection.get("env") or {}).get("PATH") or os.environ.get("PATH")
    if shutil.which(command, path=path) is None:
        where = "is not executable" if os.path.exists(command) else "is not found"
        raise ValueError(f"Cannot start MCP server {label_of(connection)!r}: the command {command!r} {where}. "
                         "Install it, or give its full path (e.g. 'mcp:/usr/bin/python3 -m my_server').")


# --- the tools ---------------------------------------------------------------------------------------


def mcp_tools(
    server: str | Mapping[str, Any],
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S,
    max_restarts: int = DEFAULT_MAX_RESTARTS,
    prefix: str = "",
) -> list[Tool]:
    """Connect to an MCP server and return its tools as anchorloop ``Tool``s.

    ``server``: ``"http(s)://..."`` (streamable HTTP), a command line (stdio; run with the MCP SDK's small
    default environment, so give a dict with ``env`` for more), or a langchain-mcp-adapters connection
    dict. ``timeout_s`` bounds each call, ``startup_timeout_s`` the start (and each restart), and
    ``max_restarts`` how often a server that stopped is started again. ``prefix`` goes before each tool's
    name (to tell two servers' tools apart). The connection stays open until ``close_mcp_tools(tools)``
    or the end of the process. Raises ``ValueError``/``RuntimeError`` when the server cannot start."""
    connection = connection_of(server)
    client = MCPServer(connection, timeout_s=timeout_s, startup_timeout_s=startup_timeout_s,
                       max_restarts=max_restarts)
    client.start()
    try:
        return _tools_of(client, prefix)
    except BaseException:
        client.close()
        raise


def _tools_of(server: MCPServer, prefix: str) -> list[Tool]:
    if not server.listed:
        log.warning("MCP server %r lists no tools", server.label)
    return [MCPTool(server, spec, name=prefix + spec.name) for spec in server.listed]


def close_mcp_tools(tools: list[Tool]) -> None:
    """Stop the servers behind these tools (their stdio processes end); later calls are error results."""
    for server in {id(t.server): t.server for t in tools if isinstance(t, MCPTool)}.values():
        server.close()


class MCPTool(Tool):
    """One tool of an MCP server; calls go to the server through its ``MCPServer``."""

    def __init__(self, server: MCPServer, spec: types.Tool, *, name: str | None = None) -> None:
        self.server = server
        self.remote_name = spec.name
        self.name = name or spec.name
        self.description = (spec.description or spec.title or spec.name).strip()
        self.input_schema = dict(spec.inputSchema or {"type": "object"})
        self.args_schema = args_model(self.name, self.input_schema)

    def json_schema(self) -> dict[str, Any]:
        params = {k: v for k, v in self.input_schema.items() if k not in ("title", "description", "$schema")}
        params.setdefault("type", "object")
        if isinstance(params.get("properties"), dict):
            params["properties"] = {
                name: {k: v for k, v in prop.items() if k != "title"} if isinstance(prop, dict) else prop
                for name, prop in params["properties"].items()
            }
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": params},
        }

    async def arun(self, args: BaseModel) -> ToolResult:
        arguments = args.model_dump(mode="json", by_alias=True, exclude_unset=True)
        return await self.server.call(self.remote_name, arguments)

    def __repr__(self) -> str:
        return f"<MCPTool {self.name} of {self.server.label}>"


# --- one connection to a server ----------------------------------------------------------------------


class _Connection:
    """One session with a server: open from ``ready`` (when it worked) until ``ended``."""

    def __init__(self) -> None:
        self.ready = asyncio.Event()
        self.ended = asyncio.Event()
        self.session: ClientSession | None = None
        self.tools: list[types.Tool] = []
        self.error: BaseException | None = None
        self.task: asyncio.Task | None = None
        self.stderr_done = threading.Event()


_OPEN: set[MCPServer] = set()


class MCPServer:
    """A connection to one MCP server, owned by an event loop in a daemon thread of its own."""

    def __init__(self, connection: Mapping[str, Any], *, timeout_s: float = DEFAULT_TIMEOUT_S,
                 startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S,
                 max_restarts: int = DEFAULT_MAX_RESTARTS) -> None:
        self.connection = dict(connection)
        self.label = label_of(self.connection)
        self.timeout_s = timeout_s
        self.startup_timeout_s = startup_timeout_s
        self.max_restarts = max_restarts
        self.restarts = 0
        self.closed = False
        self.listed: list[types.Tool] = []  # the tools it listed when it started
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=_STDERR_LINES)
        self._conn: _Connection | None = None
        self._calls: set[asyncio.Task] = set()  # calls in flight, in the server's loop
        self._lock = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # -- from any thread --

    def start(self) -> list[types.Tool]:
        """Start the loop's thread and the server; the tools it lists. Raises when it cannot start."""
        if self.connection.get("transport") == "stdio":
            _check_command(self.connection)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"mcp {self.label}"[:60], daemon=True)
        self._thread.start()
        _OPEN.add(self)
        try:
            future = asyncio.run_coroutine_threadsafe(self._live(), self._loop)
            self.listed = future.result(timeout=self.startup_timeout_s + _CLOSE_TIMEOUT_S).tools
            return self.listed
        except TimeoutError:
            self.close()
            raise RuntimeError(f"MCP server {self.label!r} did not start within {self.startup_timeout_s:g} s."
                               f"{self._stderr_note()}") from None
        except BaseException:
            self.close()
            raise

    async def call(self, name: str, arguments: dict[str, Any]) -> ToolResult:
        """Call tool ``name`` on the server, from any event loop. Never raises (except on cancellation)."""
        loop = self._loop
        if self.closed or loop is None or loop.is_closed():
            return self._closed_result()
        try:
            future = asyncio.run_coroutine_threadsafe(self._tracked_call(name, arguments), loop)
        except RuntimeError:  # the loop closed just now
            return self._closed_result()
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if future.cancelled() and current is not None and not current.cancelling():
                return self._closed_result()  # ended by close(), not by our caller
            raise

    def close(self) -> None:
        """End the session (a stdio server's process with it) and the loop's thread. Idempotent."""
        self.closed = True
        _OPEN.discard(self)
        loop, thread = self._loop, self._thread
        if loop is None or loop.is_closed():
            return
        if thread is not None and thread.is_alive() and threading.current_thread() is not thread:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=_CLOSE_TIMEOUT_S)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=_CLOSE_TIMEOUT_S)
        if thread is None or not thread.is_alive():
            loop.close()

    def __repr__(self) -> str:
        return f"<MCPServer {self.label}{' (closed)' if self.closed else ''}>"

    # -- in the server's loop --

    async def _live(self) -> _Connection:
        """The open connection, (re)starting the server when there is none."""
        async with self._lock:
            if self.closed:
                raise RuntimeError("it was closed")
            conn = self._conn
            if conn is not None and conn.session is not None and not conn.ended.is_set():
                return conn
            if conn is not None:
                if self.restarts >= self.max_restarts:
                    raise RuntimeError(f"it stopped and was restarted {self.restarts} times already, so it is not "
                                       "restarted again; fix the server and load its tools again")
                self.restarts += 1
                log.warning("MCP server %r stopped; starting it again (restart %d of %d)",
                            self.label, self.restarts, self.max_restarts)
            conn = _Connection()
            conn.task = asyncio.create_task(self._hold(conn))
            await conn.ready.wait()
            if conn.session is None:
                raise await self._start_error(conn)
            self._conn = conn
            return conn

    async def _hold(self, conn: _Connection) -> None:
        """Open the session, list the tools, and keep it open until ``conn.ended`` is set."""
        try:
            with anyio.CancelScope(deadline=anyio.current_time() + self.startup_timeout_s) as scope:
                async with self._session(conn) as session:
                    await session.initialize()
                    conn.tools = await _list_tools(session)
                    scope.deadline = math.inf
                    conn.session = session
                    conn.ready.set()
                    await conn.ended.wait()
            if conn.session is None and conn.error is None:
                conn.error = TimeoutError(f"no answer to start-up within {self.startup_timeout_s:g} s")
        except Exception as exc:  # kept for the start-up error; a session that was open just ends
            conn.error = exc
            log.debug("MCP server %r: session ended", self.label, exc_info=True)
        finally:
            conn.ended.set()
            conn.ready.set()

    @contextlib.asynccontextmanager
    async def _session(self, conn: _Connection) -> AsyncIterator[ClientSession]:
        if self.connection.get("transport") != "stdio":
            from langchain_mcp_adapters.sessions import create_session

            conn.stderr_done.set()
            async with create_session(self.connection) as session:  # type: ignore[arg-type]
                yield session
            return
        async with self._stdio_session(conn) as session:
            yield session

    @contextlib.asynccontextmanager
    async def _stdio_session(self, conn: _Connection) -> AsyncIterator[ClientSession]:
        """A stdio session whose server's stderr is kept (its tail names start-up failures) and whose
        end of output ends ``conn`` at once, failing the calls in flight."""
        c = self.connection
        params = StdioServerParameters(
            command=str(c["command"]), args=[str(a) for a in c.get("args") or []], env=c.get("env"),
            cwd=c.get("cwd"), **{k: c[k] for k in ("encoding", "encoding_error_handler") if k in c},
        )
        read_fd, write_fd = os.pipe()
        errlog = os.fdopen(write_fd, "w")
        threading.Thread(target=self._keep_stderr, args=(read_fd, conn.stderr_done), daemon=True).start()
        try:
            async with stdio_client(params, errlog=errlog) as (read, write):
                errlog.close()  # the server has its own copy
                relay_in, relay_out = anyio.create_memory_object_stream(0)
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_relay, read, relay_in, conn.ended)
                    async with ClientSession(relay_out, write, **(c.get("session_kwargs") or {})) as session:
                        yield session
                    tg.cancel_scope.cancel()
        finally:
            errlog.close()

    def _keep_stderr(self, fd: int, done: threading.Event) -> None:
        try:
            with open(fd, "rb") as stream:
                for raw in stream:
                    line = raw.decode("utf-8", "replace").rstrip()
                    self.stderr_tail.append(line)
                    log.debug("MCP server %r: %s", self.label, line)
        finally:
            done.set()

    async def _tracked_call(self, name: str, arguments: dict[str, Any]) -> ToolResult:
        task = asyncio.current_task()
        assert task is not None
        self._calls.add(task)
        try:
            return await self._call(name, arguments)
        finally:
            self._calls.discard(task)

    async def _call(self, name: str, arguments: dict[str, Any]) -> ToolResult:
        try:
            conn = await self._live()
        except Exception as exc:
            message = exc.args[0] if isinstance(exc, RuntimeError) and exc.args else describe_exception(exc)
            return ToolResult(content=f"MCP server {self.label!r} is not available: {message}", error=True)
        assert conn.session is not None
        call = asyncio.ensure_future(
            conn.session.call_tool(name, arguments, read_timeout_seconds=timedelta(seconds=self.timeout_s))
        )
        ended = asyncio.ensure_future(conn.ended.wait())
        try:
            await asyncio.wait({call, ended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in (call, ended):
                waiting.cancel()
        if call.done() and not call.cancelled():
            error = call.exception()
            if error is None:
                return result_of(call.result(), self.label)
            if not (isinstance(error, McpError) and error.error.code == types.CONNECTION_CLOSED):
                if isinstance(error, McpError) and error.error.code == 408:  # the SDK's read time-out
                    return ToolResult(content=f"MCP tool '{name}' did not answer within {self.timeout_s:g} s.",
                                      error=True)
                return ToolResult(content=f"MCP tool '{name}' failed: {_message(error)}", error=True)
        if self.closed:
            return self._closed_result()
        await asyncio.to_thread(conn.stderr_done.wait, 0.5)
        again = "starts it again" if self.connection.get("transport") == "stdio" else "connects again"
        return ToolResult(
            content=f"MCP server {self.label!r} stopped during the call to '{name}'.{self._stderr_note()} "
                    f"The next call {again}.",
            error=True,
        )

    async def _shutdown(self) -> None:
        """End the session, then any call still in flight (each becomes a 'closed' result)."""
        conn = self._conn
        if conn is not None and conn.task is not None:
            conn.ended.set()
            done, _ = await asyncio.wait({conn.task}, timeout=_CLOSE_TIMEOUT_S / 3)
            if not done:
                conn.task.cancel()
                await asyncio.wait({conn.task}, timeout=_CLOSE_TIMEOUT_S / 3)
        if self._calls:
            _, pending = await asyncio.wait(set(self._calls), timeout=1.0)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=_CLOSE_TIMEOUT_S / 3)

    async def _start_error(self, conn: _Connection) -> Exception:
        """Why the server did not start, in words that say what to do."""
        await asyncio.to_thread(conn.stderr_done.wait, 1.0)
        root = _root_cause(conn.error)
        stderr = self._stderr_note()
        if isinstance(root, FileNotFoundError | PermissionError):
            return ValueError(f"Cannot start MCP server {self.label!r}: {describe_exception(root)}. Install the "
                              "command, or give its full path (e.g. 'mcp:/usr/bin/python3 -m my_server').")
        if isinstance(root, McpError) and root.error.code == types.CONNECTION_CLOSED:
            return RuntimeError(f"MCP server {self.label!r} exited at start-up.{stderr} Run the command by hand to "
                                "see why; it must speak MCP over stdin/stdout.")
        if isinstance(root, TimeoutError):
            return RuntimeError(f"MCP server {self.label!r} did not finish starting (initialize, list tools) within "
                                f"{self.startup_timeout_s:g} s.{stderr} Is it an MCP server? A slow one needs a "
                                "larger startup_timeout_s.")
        if type(root).__module__.startswith(("httpx", "httpcore")):
            return RuntimeError(f"Cannot reach MCP server at {self.label!r}: {describe_exception(root)}. Is it "
                                "running, and is this its streamable-HTTP endpoint (usually ending in /mcp)?")
        return RuntimeError(f"MCP server {self.label!r} did not start: {_message(root)}.{stderr}")

    def _stderr_note(self) -> str:
        lines = [line for line in tuple(self.stderr_tail) if line.strip()][-5:]  # tuple(): one atomic copy
        return f" Its stderr ends with: {' | '.join(lines)[-800:]}." if lines else ""

    def _closed_result(self) -> ToolResult:
        return ToolResult(content=f"MCP server {self.label!r} was closed; load its tools again to use them.",
                          error=True)


async def _relay(source: Any, sink: Any, ended: asyncio.Event) -> None:
    """Pass the server's messages on; when its output ends, end the connection."""
    try:
        async with sink:
            async for message in source:
                await sink.send(message)
    except (anyio.ClosedResourceError, anyio.BrokenResourceError):
        pass
    finally:
        ended.set()


async def _list_tools(session: ClientSession) -> list[types.Tool]:
    found: list[types.Tool] = []
    cursor: str | None = None
    for _ in range(1000):  # a server that pages forever is not followed forever
        page = await session.list_tools(cursor)
        found.extend(page.tools)
        cursor = page.nextCursor
        if not cursor:
            break
    return found


def _root_cause(exc: BaseException | None) -> BaseException | None:
    """The first real error inside (nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = next((e for e in exc.exceptions if not isinstance(e, asyncio.CancelledError)), exc.exceptions[0])
    return exc


def _message(exc: BaseException | None) -> str:
    root = _root_cause(exc)
    if isinstance(root, McpError):
        return root.error.message
    return describe_exception(root) if root is not None else "unknown error"


# --- results -----------------------------------------------------------------------------------------


def result_of(result: types.CallToolResult, server_label: str = "") -> ToolResult:
    """An MCP call's result as a ``ToolResult``: the text parts joined (other parts named), ``isError``
    as ``error``; structured content, when there is some, in the metadata."""
    parts = [_text_of(block) for block in result.content]
    text = "\n".join(p for p in parts if p)
    if not text and result.structuredContent is not None:
        text = json.dumps(result.structuredContent, ensure_ascii=False, default=str)
    if not text and result.isError:
        text = "The MCP tool failed without saying why."
    metadata: dict[str, Any] = {"mcp_server": server_label} if server_label else {}
    if result.structuredContent is not None:
        metadata["structured_content"] = result.structuredContent
    return ToolResult(content=text, error=bool(result.isError), metadata=metadata)


def _text_of(block: Any) -> str:
    if isinstance(block, types.TextContent):
        return block.text
    if isinstance(block, types.EmbeddedResource):
        resource = block.resource
        if isinstance(resource, types.TextResourceContents):
            return resource.text
        return f"[binary resource {resource.uri} ({resource.mimeType or 'unknown type'}), not shown]"
    if isinstance(block, types.ResourceLink):
        return f"[resource {block.uri}]"
    kind = getattr(block, "type", type(block).__name__)
    mime = getattr(block, "mimeType", None)
    return f"[{kind}{f' ({mime})' if mime else ''}, not shown]"


# --- input schema -> pydantic model ------------------------------------------------------------------

_SCALARS: dict[str, Any] = {"string": str, "integer": int, "number": float, "boolean": bool, "null": type(None)}
_CONSTRAINTS = {"minimum": "ge", "maximum": "le", "exclusiveMinimum": "gt", "exclusiveMaximum": "lt",
                "minLength": "min_length", "maxLength": "max_length", "minItems": "min_length",
                "maxItems": "max_length"}
_MAX_DEPTH = 8


def args_model(tool_name: str, schema: Mapping[str, Any]) -> type[BaseModel]:
    """A pydantic model that checks arguments against a tool's JSON input schema: properties, required,
    types (anyOf, enums, arrays, nested objects, local ``$ref``s), numeric and length bounds, defaults.
    Arguments the schema does not name are refused unless it sets ``additionalProperties``. Anything
    it cannot express is left to the server to check."""
    name = "".join(part.title() for part in re.split(r"[^0-9A-Za-z]+", tool_name) if part) + "Args"
    defs = {**(schema.get("definitions") or {}), **(schema.get("$defs") or {})}
    try:
        return _object_model(name or "McpArgs", schema, defs, 0)
    except Exception:  # an odd schema: accept any object and let the server judge
        log.warning("tool %r: its input schema cannot be checked here; the server checks the arguments",
                    tool_name, exc_info=True)
        return create_model(name or "McpArgs", __config__=ConfigDict(extra="allow"))


def _object_model(name: str, schema: Mapping[str, Any], defs: Mapping[str, Any], depth: int) -> type[BaseModel]:
    properties = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    fields: dict[str, Any] = {}
    for i, (prop, sub) in enumerate(properties.items()):
        sub = sub if isinstance(sub, Mapping) else {}
        annotation = _annotation(sub, defs, depth + 1, f"{name}_{i}")
        default = ... if prop in required else sub.get("default")
        fields[f"field_{i}"] = (annotation, Field(default, alias=prop, description=sub.get("description")))
    extra = schema.get("additionalProperties")
    config = ConfigDict(extra="allow" if extra not in (None, False) else "forbid", populate_by_name=False)
    return create_model(name, __config__=config, **fields)


def _annotation(schema: Mapping[str, Any], defs: Mapping[str, Any], depth: int, name: str) -> Any:
    if depth > _MAX_DEPTH or not isinstance(schema, Mapping):
        return Any
    base = _base_annotation(schema, defs, depth, name)
    bounds = {key: schema[key] for key in _CONSTRAINTS if isinstance(schema.get(key), int | float)
              and not isinstance(schema.get(key), bool)}
    if not bounds or base is Any:
        return base
    return typing.Annotated[base, Field(**{_CONSTRAINTS[k]: v for k, v in bounds.items()})]


def _base_annotation(schema: Mapping[str, Any], defs: Mapping[str, Any], depth: int, name: str) -> Any:
    ref = schema.get("$ref")
    if isinstance(ref, str):
        target = ref.rsplit("/", 1)[-1]
        if ref.startswith(("#/$defs/", "#/definitions/")) and target in defs:
            return _annotation(defs[target], defs, depth + 1, f"{name}_{target}")
        return Any
    if "const" in schema:
        return Literal[schema["const"]] if _literal_ok([schema["const"]]) else Any
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return Literal[tuple(schema["enum"])] if _literal_ok(schema["enum"]) else Any
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            options = [_annotation(s, defs, depth + 1, f"{name}_{j}") for j, s in enumerate(schema[key])]
            return Any if Any in options else typing.Union[tuple(dict.fromkeys(options))]  # noqa: UP007
    if isinstance(schema.get("allOf"), list) and len(schema["allOf"]) == 1:
        return _annotation(schema["allOf"][0], defs, depth + 1, name)
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind]
    options = [_typed(k, schema, defs, depth, name) for k in kinds]
    if not options or Any in options:
        return Any
    return typing.Union[tuple(dict.fromkeys(options))]  # noqa: UP007


def _typed(kind: Any, schema: Mapping[str, Any], defs: Mapping[str, Any], depth: int, name: str) -> Any:
    if kind in _SCALARS:
        return _SCALARS[kind]
    if kind == "array":
        items = schema.get("items")
        return list[_annotation(items, defs, depth + 1, f"{name}_item") if isinstance(items, Mapping) else Any]
    if kind == "object":
        if schema.get("properties"):
            return _object_model(name, schema, defs, depth + 1)
        values = schema.get("additionalProperties")
        return dict[str, _annotation(values, defs, depth + 1, f"{name}_value") if isinstance(values, Mapping)
                    else Any]
    return Any


def _literal_ok(values: list[Any]) -> bool:
    return all(isinstance(v, str | int | float | bool) or v is None for v in values)


@atexit.register
def _close_all() -> None:
    for server in list(_OPEN):
        with contextlib.suppress(Exception):
            server.close()
