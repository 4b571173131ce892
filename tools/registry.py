"""Finding tools by name: built-ins, ``module:attr`` paths, and plug-ins from entry points.

``load_tools(["python", "wikipedia", "my_pkg.tools:word_count", "my_plugin"])`` returns a flat
list of ``Tool``s. Whatever a name points at may be a ``Tool``, a list of them, a ``Tool``
subclass, a LangChain ``BaseTool``, a plain typed function (wrapped with ``@tool``), or a factory
called with no arguments; a factory is a function whose return annotation is ``Tool`` or
``list[Tool]`` (that annotation is what tells it apart from a tool without arguments).
``mcp:COMMAND LINE`` and ``mcp:http://host:port/mcp`` name the tools of an MCP server (``tools.mcp``).
"""

from __future__ import annotations

import collections.abc
import importlib
import importlib.metadata
import inspect
import logging
import re
import types
import typing
from collections.abc import Iterable
from typing import Any, NamedTuple

from tools.base import FunctionTool, Tool

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "anchorloop.tools"
MCP_PREFIX = "mcp:"  # 'mcp:COMMAND LINE' (stdio) or 'mcp:http://host:port/mcp': the tools of an MCP server


class _Builtin(NamedTuple):
    target: str
    summary: str


BUILTINS: dict[str, _Builtin] = {
    "python": _Builtin("tools.python_exec:python_tool", "run Python code in a sandboxed subprocess"),
    "wikipedia": _Builtin(
        "tools.wikipedia:wikipedia_tools", "wikipedia_search and wikipedia_page (offline corpus)"
    ),
    "wikipedia_search": _Builtin(
        "tools.wikipedia:wikipedia_search_tool", "search Wikipedia (offline corpus)"
    ),
    "wikipedia_page": _Builtin(
        "tools.wikipedia:wikipedia_page_tool", "read a Wikipedia article's lead or a section"
    ),
}

HOW_TO_PLUG_IN = f"""\
To plug in your own tool, name it as 'package.module:attr', where attr is a Tool, a list of \
Tools, a typed function with a docstring (wrapped with @tool), or a zero-argument factory \
annotated '-> Tool' or '-> list[Tool]'. To load it by a short name, register it in your \
package's pyproject.toml and reinstall the package:
    [project.entry-points."{ENTRY_POINT_GROUP}"]
    my_tool = "my_package.tools:my_tool"
The tools of an MCP server are named 'mcp:COMMAND LINE' (stdio) or 'mcp:http://host:port/mcp' \
(streamable HTTP); they need pip install 'anchorloop[mcp]'."""


def load_tools(names: Iterable[str | Tool] | str) -> list[Tool]:
    """Resolve each name to its tools, in order (a name may stand for several: ``wikipedia``, an MCP
    server); a ``Tool`` in the list is kept as it is. Raises ``ValueError`` for an unknown name."""
    if isinstance(names, str):
        names = [names]
    loaded: list[Tool] = []
    origin: dict[str, str] = {}
    for name in names:
        for found in [name] if isinstance(name, Tool) else _resolve(name.strip()):
            if found.name in origin:
                raise ValueError(
                    f"Two tools are named {found.name!r} (from {origin[found.name]!r} and {name!r}); "
                    "an agent needs unique tool names."
                )
            origin[found.name] = name
            loaded.append(found)
    return loaded


def get_tool(name: str) -> Tool:
    """The one tool ``name`` resolves to."""
    found = load_tools([name])
    if len(found) != 1:
        names = ", ".join(t.name for t in found)
        raise ValueError(f"{name!r} resolves to {len(found)} tools ({names}); use load_tools([{name!r}]).")
    return found[0]


def available_tools() -> dict[str, str]:
    """Names ``load_tools`` knows without a ``module:attr`` path, with what each one is."""
    names = {name: builtin.summary for name, builtin in BUILTINS.items()}
    for name, entry_point in _entry_points().items():
        dist = entry_point.dist.name if entry_point.dist else "unknown distribution"
        names.setdefault(name, f"plug-in {entry_point.value} from {dist}")
    return names


def _resolve(name: str) -> list[Tool]:
    if name.startswith(MCP_PREFIX):
        from tools.mcp import tools_from_name

        return tools_from_name(name)
    if name in BUILTINS:
        return _as_tools(import_target(BUILTINS[name].target), f"built-in tool {name!r}")
    if ":" in name:
        return _as_tools(import_target(name), repr(name))
    entry_point = _entry_points().get(name)
    if entry_point is not None:
        return _as_tools(entry_point.load(), f"entry point {name!r} ({entry_point.value})")
    known = ", ".join(sorted(available_tools()))
    raise ValueError(f"Unknown tool {name!r}. Available: {known}.\n{HOW_TO_PLUG_IN}")


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    found: dict[str, importlib.metadata.EntryPoint] = {}
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry_point.name in found and found[entry_point.name].value != entry_point.value:
            log.warning(
                "two plug-ins register tool %r (%s and %s); using the first",
                entry_point.name,
                found[entry_point.name].value,
                entry_point.value,
            )
            continue
        found.setdefault(entry_point.name, entry_point)
    return found


def import_target(path: str, kind: str = "tool") -> Any:
    """The object a ``'package.module:attribute'`` path names; ``kind`` ("tool", "env") words the errors."""
    module_name, _, attr_path = path.partition(":")
    if not module_name or not attr_path:
        raise ValueError(f"The {kind} path {path!r} must look like 'package.module:attribute'.")
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise ValueError(
                f"Cannot load {kind} {path!r}: no module named {exc.name!r} (run from the folder that "
                f"holds {exc.name.split('.')[0]}.py, or install the package that has it)."
            ) from exc
        raise
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"Cannot load {kind} {path!r}: {obj.__name__!r} has no attribute {part!r}.")
        obj = getattr(obj, part)
    return obj


def check_tool_names(names: Iterable[str] | str) -> list[str]:
    """The names as a list, each one checked the way ``load_tools`` resolves it, without building the
    built-ins or plug-ins (a ``module:attr`` target is imported and checked to be a tool). Raises
    ``ValueError`` for an unknown name; cheap enough to run before a model loads."""
    names = [names] if isinstance(names, str) else list(names)
    for name in names:
        if not isinstance(name, str):
            raise ValueError(f"A tool is named by a string, got {name!r}.")
        name = name.strip()
        if name in BUILTINS or name in _entry_points():
            continue
        if name.startswith(MCP_PREFIX):
            from tools.mcp import check_mcp_name

            check_mcp_name(name)  # parses it and finds a stdio command; starts nothing
            continue
        if ":" in name:
            _as_tools(import_target(name), repr(name))
            continue
        _resolve(name)  # raises, naming what is available and how to plug a tool in
    return names


def _as_tools(obj: Any, source: str, *, allow_factory: bool = True) -> list[Tool]:
    if isinstance(obj, Tool):
        return [obj]
    if _is_langchain_tool(obj):
        from tools.langchain import from_langchain

        return [from_langchain(obj)]
    if isinstance(obj, type) and issubclass(obj, Tool):
        return [obj()]
    if isinstance(obj, (list, tuple)):
        return [t for item in obj for t in _as_tools(item, source, allow_factory=False)]
    if callable(obj) and allow_factory and _is_factory(obj):
        required = [
            p.name
            for p in inspect.signature(obj).parameters.values()
            if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
        if required:
            raise ValueError(
                f"{source} is a tool factory but needs arguments ({', '.join(required)}); "
                "give them defaults or wrap it in a function without arguments."
            )
        return _as_tools(obj(), source, allow_factory=False)
    if inspect.isfunction(obj) or inspect.ismethod(obj):
        return [FunctionTool(obj)]
    raise ValueError(
        f"{source} is a {type(obj).__name__}, not a tool. It should be a Tool, a list of Tools, "
        "a typed function, or a factory annotated '-> Tool' / '-> list[Tool]'."
    )


def _is_factory(fn: Any) -> bool:
    """Does ``fn`` say it returns tools? (Its return annotation names Tool or BaseTool.)"""
    try:
        returned = typing.get_type_hints(fn).get("return")
    except Exception:  # unresolvable forward references: read the annotation as text
        returned = getattr(fn, "__annotations__", {}).get("return")
    if returned is None:
        return False
    if isinstance(returned, str):
        return re.search(r"\b(Base)?Tool\b", returned) is not None
    return _names_tool_type(returned)


def _names_tool_type(annotation: Any) -> bool:
    if isinstance(annotation, type):
        return issubclass(annotation, Tool) or annotation.__name__ == "BaseTool"
    origin = typing.get_origin(annotation)
    containers = (list, tuple, collections.abc.Sequence, collections.abc.Iterable, typing.Union)
    if origin in containers or origin is types.UnionType:
        return any(_names_tool_type(arg) for arg in typing.get_args(annotation))
    return False


def _is_langchain_tool(obj: Any) -> bool:
    return any(
        cls.__name__ == "BaseTool" and cls.__module__.startswith("langchain_core")
        for cls in type(obj).__mro__
    )
