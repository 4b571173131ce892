"""Tools: the external anchors an agent checks its answers against.

The contract (``Tool``, ``ToolResult``, ``@tool``) lives in ``tools.base``; ``load_tools`` finds
built-in tools, ``module:attr`` paths and plug-ins registered under the ``anchorloop.tools``
entry-point group. Importing this package stays light: the Python sandbox, Wikipedia and
LangChain are imported only when a tool or converter that needs them is asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tools.base import FunctionTool, Tool, ToolExample, ToolResult, tool
from tools.registry import ENTRY_POINT_GROUP, available_tools, check_tool_names, get_tool, load_tools

if TYPE_CHECKING:
    from tools.langchain import from_langchain, to_langchain

__all__ = [
    "ENTRY_POINT_GROUP",
    "FunctionTool",
    "Tool",
    "ToolExample",
    "ToolResult",
    "available_tools",
    "check_tool_names",
    "from_langchain",
    "get_tool",
    "load_tools",
    "to_langchain",
    "tool",
]

_LAZY = {"from_langchain": "tools.langchain", "to_langchain": "tools.langchain"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tools' has no attribute {name!r}")
