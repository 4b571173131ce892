"""The Tool contract: what every anchor the agent can call looks like.

A tool has a name, a description, a pydantic model for its arguments, an OpenAI-style JSON
schema for chat templates, and one async entry point, ``acall(args) -> ToolResult``. A tool never
raises into the agent: bad arguments and failures come back as ``ToolResult(error=True)`` with a
message the model can act on.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

log = logging.getLogger(__name__)

MAX_CONTENT_CHARS = 4000
TRUNCATION_MARKER = "\n…[truncated {n} characters]"
MAX_TOOL_THREADS = 256  # sync tool calls running at once, hung ones included


def safe_text(value: Any) -> Any:
    """``value`` with every string in it (dict keys too) valid Unicode. Text from a model, a tool or a
    server may hold lone surrogates (JSON's ``"\\ud83d"``, a server's half of an emoji), which no
    tokenizer and no UTF-8 file accepts; each becomes U+FFFD, and a split surrogate pair its character.
    Applied once, where such text enters: tool results, model turns, parsed tool calls, questions."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        return value
    if isinstance(value, dict):
        return {safe_text(k): safe_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [safe_text(v) for v in value]
    return value


def cap_text(text: str, limit: int = MAX_CONTENT_CHARS) -> str:
    """Cut ``text`` to ``limit`` characters, saying how much was dropped."""
    if len(text) <= limit:
        return text
    return text[:limit] + TRUNCATION_MARKER.format(n=len(text) - limit)


class ToolResult(BaseModel):
    """What a tool call produced. ``content`` is what the model sees (capped)."""

    content: str
    error: bool = False
    metadata: dict[str, Any] = Field(default_factory=dict)

    def model_post_init(self, __context: Any) -> None:
        self.content = cap_text(safe_text(self.content))


class NoArgs(BaseModel):
    # The arguments of a tool that takes none. (No docstring: it would show up in the schema.)
    model_config = ConfigDict(extra="forbid")


class ExampleCall(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tool: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class ToolExample(BaseModel):
    """A worked example of a tool, which the agent shows the model as one exemplar: a question, the
    call of the tool that answers it, the answer, and the ``check`` the verify step makes (another
    call, of this tool or another one the agent has). Small models rarely call a tool they have never
    seen used; one example is often the difference. The calls are run for real when the agent is built."""

    model_config = ConfigDict(extra="forbid")
    question: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    answer: str
    check: ExampleCall


class Tool:
    """A callable anchor. Subclass and implement ``run`` (sync) or ``arun`` (async), or use ``@tool``.
    ``example``: an optional ``ToolExample`` (or the dict of one) the agent turns into an exemplar."""

    name: str = ""
    description: str = ""
    args_schema: type[BaseModel] = NoArgs  # plain BaseModel cannot be instantiated
    example: ToolExample | None = None

    def json_schema(self) -> dict[str, Any]:
        """The tool in OpenAI function-calling format."""
        params = self.args_schema.model_json_schema()
        params.pop("title", None)
        for prop in params.get("properties", {}).values():
            prop.pop("title", None)
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": params},
        }

    async def acall(self, args: dict[str, Any] | None) -> ToolResult:
        """Validate ``args`` and run the tool. Never raises (except on cancellation)."""
        if args is None:
            args = {}
        if not isinstance(args, dict):
            return ToolResult(
                content=f"Tool '{self.name}' takes a JSON object of arguments, got {type(args).__name__}.",
                error=True,
            )
        try:
            parsed = self.args_schema.model_validate(args)
        except ValidationError as exc:
            return ToolResult(content=_describe_validation_error(self, exc), error=True)
        return await _result_of(self.name, lambda: self.arun(parsed))

    async def arun(self, args: BaseModel) -> Any:
        """Async body. The default runs the sync ``run`` in a thread of its own (``in_own_thread``)."""
        return await in_own_thread(self.run, args)

    def run(self, args: BaseModel) -> Any:
        raise NotImplementedError(f"Tool '{self.name}' implements neither run() nor arun().")

    def __repr__(self) -> str:
        return f"<Tool {self.name}>"


async def call_tool(tool: Tool, args: Any, *, timeout_s: float) -> ToolResult:
    """``tool.acall(args)`` held to the contract whatever the tool does: an exception (a subclass may
    override ``acall``) or a value that is no ``ToolResult`` becomes a result, and at ``timeout_s`` the
    call is given up with a time-out error. Given up, not waited for: a tool that swallows its
    cancellation would otherwise hold the run past its deadline."""
    task = asyncio.ensure_future(_result_of(tool.name, lambda: tool.acall(args)))
    try:
        await asyncio.wait({task}, timeout=timeout_s)
    finally:
        if not task.done():
            task.cancel()
            _GIVEN_UP.add(task)  # the loop keeps only weak references; let it finish in peace
            task.add_done_callback(_GIVEN_UP.discard)
    if task.done() and not task.cancelled():
        return task.result()
    return ToolResult(content=f"Tool '{tool.name}' took longer than {timeout_s:g} s and was stopped.", error=True)


_GIVEN_UP: set[asyncio.Future] = set()


async def _result_of(name: str, start: Callable[[], Awaitable[Any]]) -> ToolResult:
    """What running a tool's code gives, as a result: its value as text, or its exception as an error."""
    try:
        value = await start()
        return value if isinstance(value, ToolResult) else ToolResult(content=_to_text(value))
    except asyncio.CancelledError:
        raise
    except BaseException as exc:  # a tool never raises into the agent, not even SystemExit from its code
        log.debug("tool %s failed", name, exc_info=True)
        return ToolResult(content=f"Tool '{name}' failed: {describe_exception(exc)}", error=True)


_THREAD_SLOTS = threading.BoundedSemaphore(MAX_TOOL_THREADS)


async def in_own_thread(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` in a daemon thread of its own. Not in the loop's default executor: a call
    that hangs past its time-out keeps its thread, and a few of those would fill that small shared pool
    and stall every later tool call and scorer in it (and the loop's shutdown, which joins the pool)."""
    if not _THREAD_SLOTS.acquire(blocking=False):
        raise RuntimeError(f"{MAX_TOOL_THREADS} tool calls are still running in threads (hung ones?); "
                           "this one was not started")
    loop = asyncio.get_running_loop()
    outcome = loop.create_future()
    context = contextvars.copy_context()

    def settle(value: Any, error: BaseException | None) -> None:
        if outcome.done():  # the caller gave up on it
            return
        if error is None:
            outcome.set_result(value)
        else:
            outcome.set_exception(error)

    def work() -> None:
        value, error = None, None
        try:
            value = context.run(fn, *args, **kwargs)
        except BaseException as exc:  # handed to the awaiting call, which makes it an error result
            error = exc
        finally:
            _THREAD_SLOTS.release()
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits for this call any more
            loop.call_soon_threadsafe(settle, value, error)

    threading.Thread(target=work, name="tool-call", daemon=True).start()
    return await outcome


def describe_exception(exc: BaseException) -> str:
    """``Type: message`` of an exception, also of one whose ``__str__`` raises."""
    try:
        message = str(exc)
    except BaseException:  # a hostile __str__ must not turn a reported failure into a crash
        message = "(its message cannot be shown)"
    return safe_text(f"{type(exc).__name__}: {message}")


def _to_text(value: Any) -> str:
    """A tool's return value as the text the model sees; a value that cannot be shown says so."""
    if isinstance(value, str):
        return value
    try:
        if isinstance(value, BaseModel):
            return value.model_dump_json()
        return str(value) if isinstance(value, (int, float, bool)) else repr(value)
    except Exception as exc:  # e.g. an int past Python's 4300-digit limit, or a __repr__ that raises
        return f"(a {type(value).__name__} that cannot be shown as text: {describe_exception(exc)})"


def _describe_validation_error(tool: Tool, exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(arguments)"
        problems.append(f"'{field}': {err['msg']}")
    expected = ", ".join(
        f"{name}: {info.get('type', 'any')}"
        for name, info in tool.args_schema.model_json_schema().get("properties", {}).items()
    )
    return f"Bad arguments for tool '{tool.name}': {'; '.join(problems)}. Expected {{{expected}}}."


class FunctionTool(Tool):
    """A Tool built from a plain (sync or async) function."""

    def __init__(
        self,
        fn: Callable[..., Any] | Callable[..., Awaitable[Any]],
        *,
        name: str | None = None,
        description: str | None = None,
        example: ToolExample | dict[str, Any] | None = None,
    ) -> None:
        self.fn = fn
        self.name = name or fn.__name__
        doc = inspect.getdoc(fn) or ""
        summary, arg_docs = _split_docstring(doc)
        self.description = description or summary or self.name
        self.args_schema = _args_model(fn, self.name, arg_docs)
        self._is_async = inspect.iscoroutinefunction(fn)
        self.example = example_of(self.name, example)

    async def arun(self, args: BaseModel) -> Any:
        kwargs = {name: getattr(args, name) for name in type(args).model_fields}
        if self._is_async:
            return await self.fn(**kwargs)
        return await in_own_thread(self.fn, **kwargs)


def example_of(tool_name: str, example: ToolExample | dict[str, Any] | None) -> ToolExample | None:
    """``example`` validated, with an error that names the tool and the field."""
    if example is None or isinstance(example, ToolExample):
        return example
    try:
        return ToolExample.model_validate(example)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'example'}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"Tool {tool_name!r} has a bad example ({problems}). An example is "
                         "{'question': ..., 'arguments': {...}, 'answer': ..., "
                         "'check': {'tool': ..., 'arguments': {...}}}.") from None


def tool(
    fn: Callable[..., Any] | None = None, *, name: str | None = None, description: str | None = None,
    example: ToolExample | dict[str, Any] | None = None,
) -> Any:
    """Turn a typed, documented function into a Tool.

    ``@tool`` or ``@tool(name="...", example={...})``. The docstring's first paragraph is the
    description; an ``Args:`` section (Google style) describes each parameter; ``example`` is a
    ``ToolExample`` the agent shows the model.
    """

    def wrap(f: Callable[..., Any]) -> FunctionTool:
        return FunctionTool(f, name=name, description=description, example=example)

    return wrap(fn) if fn is not None else wrap


def _split_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """First paragraph as the summary; ``Args:`` entries as per-parameter descriptions."""
    summary_lines: list[str] = []
    arg_docs: dict[str, str] = {}
    section = "summary"
    current: str | None = None
    arg_indent: int | None = None
    for line in doc.splitlines():
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if stripped.lower() in ("args:", "arguments:", "parameters:"):
            section, current, arg_indent = "args", None, None
            continue
        if stripped.lower() in ("returns:", "raises:", "yields:", "examples:"):
            section = "other"
            continue
        if section == "summary":
            if not stripped and summary_lines:
                section = "other"
            elif stripped:
                summary_lines.append(stripped)
        elif section == "args" and stripped:
            head, sep, rest = stripped.partition(":")
            # A line indented deeper than the entries continues the current one, colon or not.
            continues = current is not None and arg_indent is not None and indent > arg_indent
            if sep and not continues and " " not in head.split("(")[0].strip():
                current = head.split("(")[0].strip()
                arg_docs[current] = rest.strip()
                arg_indent = indent if arg_indent is None else arg_indent
            elif current:
                arg_docs[current] += " " + stripped
    return " ".join(summary_lines), arg_docs


def _args_model(fn: Callable[..., Any], tool_name: str, arg_docs: dict[str, str]) -> type[BaseModel]:
    hints = get_type_hints(fn, include_extras=True)  # keep Annotated[..., Field(...)] constraints
    fields: dict[str, Any] = {}
    for param in inspect.signature(fn).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if param.name not in hints:
            log.warning("tool %r: parameter %r has no type hint, so the model is told it takes any value; "
                        "annotate it (e.g. `%s: str`) to give the model its type", tool_name, param.name, param.name)
        annotation = hints.get(param.name, Any)
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (annotation, Field(default, description=arg_docs.get(param.name)))
    model_name = "".join(part.title() for part in tool_name.split("_")) + "Args"
    return create_model(model_name, __config__=ConfigDict(extra="forbid"), **fields)
