"""The agent's tools as plain Python functions inside sandboxed code (CodeAct style).

Under the ``code`` action format the model's program may call the agent's other tools directly,
``print(days_between("2024-01-01", "2024-03-01"))``. Each call crosses from the sandbox to the host
(``tools.sandbox.bridge`` → ``relay`` → ``client``) and runs the real ``Tool`` through
``call_tool``: its argument validation, its time-out, its error result. The program gets the value,
or a ``ToolError`` raised with the text the model would have been shown.

``CodeFunctions(tools)`` keeps the tools that can be functions: a name that is a Python identifier,
no keyword and no builtin (a tool called ``print`` stays a ``<tool_call>`` tool), parameters that
are identifiers, and never ``python`` itself. ``signatures()`` is what the system prompt lists;
``session()`` answers one run's calls and records them (``calls``). Nothing but those tools can be
reached: a call names a tool, its arguments are JSON, and the tool's own schema checks them.

The value: a tool's result is text (``ToolResult.content``). A tool whose function returns a number,
a bool, None, a list or a dict gives that value back (read from its text, which is the value's
``repr``); anything else, and any tool declared to return ``str``, gives the text.
"""

from __future__ import annotations

import ast
import builtins
import inspect
import json
import keyword
from typing import Any

from tools.base import FunctionTool, Tool, ToolResult, call_tool, cap_text

DEFAULT_MAX_CALLS = 32  # per run
MAX_VALUE_BYTES = 1 << 20
RESERVED = frozenset(dir(builtins)) | {"ToolError", "python"}


def callable_in_code(tool: Tool) -> bool:
    """Can ``tool`` be a function of the model's programs?"""
    name = tool.name
    return (
        isinstance(name, str) and name.isidentifier() and not keyword.iskeyword(name) and name not in RESERVED
        and len(name) <= 64 and all(p.isidentifier() for p in tool.args_schema.model_fields)
    )


class CodeFunctions:
    """The tools a program can call, and how the prompt describes them."""

    def __init__(self, tools: list[Tool], *, timeout_s: float = 60.0, max_calls: int = DEFAULT_MAX_CALLS) -> None:
        self.tools = {t.name: t for t in tools if callable_in_code(t)}
        self.timeout_s = float(timeout_s)
        self.max_calls = int(max_calls)
        # what the sandbox needs to define the functions: name, parameters in order, docstring; the
        # tools are fixed, so this is built once rather than for every program run
        self.specs = [{"name": name, "params": list(tool.args_schema.model_fields),
                       "doc": cap_text(f"{signature(tool)}\n\n{tool.description}", 1800)}
                      for name, tool in self.tools.items()]

    def __bool__(self) -> bool:
        return bool(self.tools)

    def signatures(self) -> dict[str, str]:
        """A line per function, for the system prompt: ``days_between(date_a: str, date_b: str) -> int: …``."""
        return {name: f"{signature(tool)}: {tool.description}" for name, tool in self.tools.items()}

    def session(self) -> CodeCalls:
        return CodeCalls(self)


class CodeCalls:
    """The function calls of one run: answered through ``call_tool``, recorded in ``calls``."""

    def __init__(self, functions: CodeFunctions) -> None:
        self.functions = functions
        self.calls: list[dict[str, Any]] = []  # {"name", "error"} in the order they were answered

    @property
    def specs(self) -> list[dict[str, Any]]:
        return self.functions.specs

    @property
    def max_calls(self) -> int:
        return self.functions.max_calls

    async def __call__(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        tool = self.functions.tools.get(name)
        if tool is None:  # the server checks names too; this side does not rely on it
            return {"ok": False, "error": f"there is no function {name[:64]!r} here"}
        if len(self.calls) >= self.max_calls:
            return {"ok": False, "error": f"the limit of {self.max_calls} function calls per run is used up"}
        self.calls.append({"name": name, "error": None})
        record = self.calls[-1]
        result = await call_tool(tool, args, timeout_s=self.functions.timeout_s)
        record["error"] = result.error
        if result.error:
            return {"ok": False, "error": result.content}
        return {"ok": True, "value": value_of(tool, result)}


def signature(tool: Tool) -> str:
    """``name(a: str, b: int = 3) -> int``, from the tool's schema (and its function's return type)."""
    schema = tool.args_schema.model_json_schema()
    required = set(schema.get("required", []))
    params = []
    for name, info in schema.get("properties", {}).items():
        text = f"{name}: {_type_name(info)}"
        if name not in required and "default" in info:
            text += f" = {info['default']!r}"
        params.append(text)
    returns = _return_type(tool)
    arrow = f" -> {returns.__name__}" if isinstance(returns, type) and returns is not type(None) else ""
    return f"{tool.name}({', '.join(params)}){arrow}"


_JSON_TYPES = {"string": "str", "integer": "int", "number": "float", "boolean": "bool", "array": "list",
               "object": "dict", "null": "None"}


def _type_name(info: dict[str, Any]) -> str:
    if "type" in info:
        return _JSON_TYPES.get(info["type"], str(info["type"]))
    options = [_type_name(o) for o in info.get("anyOf", []) if isinstance(o, dict)]
    return " | ".join(options) if options else "Any"


def _return_type(tool: Tool) -> Any:
    if not isinstance(tool, FunctionTool):
        return None
    try:
        annotation = inspect.signature(tool.fn).return_annotation
        if isinstance(annotation, str):  # from __future__ import annotations
            annotation = {"int": int, "float": float, "str": str, "bool": bool, "list": list,
                          "dict": dict}.get(annotation)
    except (TypeError, ValueError):
        return None
    return None if annotation is inspect.Signature.empty else annotation


def value_of(tool: Tool, result: ToolResult) -> Any:
    """The value a program gets from a successful call (see the module's docstring)."""
    text = result.content
    if _return_type(tool) is str or not isinstance(tool, FunctionTool):
        return text
    try:  # a cut text (``cap_text``) is no literal, so only whole values are read
        value = ast.literal_eval(text)
    except Exception:  # not a literal (or nested too deep to read): the text is the value
        return text
    if isinstance(value, str) or not _plain(value):
        return text
    try:
        encoded = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return text
    return value if len(encoded) <= MAX_VALUE_BYTES else text


def _plain(value: Any) -> bool:
    """None, bool, int, float, or lists, tuples and str-keyed dicts of those (and of str)."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, (list, tuple)):
            pending.extend(item)
        elif isinstance(item, dict):
            if not all(isinstance(k, str) for k in item):
                return False
            pending.extend(item.values())
        elif item is not None and not isinstance(item, (bool, int, float, str)):
            return False
    return True
