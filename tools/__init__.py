"""Tools: the external anchors an agent checks its answers against.

The contract (``Tool``, ``ToolResult``, ``@tool``) lives in ``tools.base``; ``load_tools`` finds
built-in tools, ``module:attr`` paths and plug-ins registered under the ``anchorloop.tools``
entry-point group; ``mcp_tools`` (and names like ``mcp:COMMAND LINE``) bring in the tools of an MCP
server. Importing this package stays light: the Python sandbox, Wikipedia, LangChain and MCP are
imported only when a tool or converter that needs them is asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tools.base import FunctionTool, Tool, ToolExample, ToolResult, tool
from tools.registry import ENTRY_POINT_GROUP, available_tools, check_tool_names, get_tool, load_tools

if TYPE_CHECKING:
    from tools.langchain import from_langchain, to_langchain
    from tools.mcp import close_mcp_tools, mcp_tools

__all__ = [
    "ENTRY_POINT_GROUP",
    "FunctionTool",
    "Tool",
    "ToolExample",
    "ToolResult",
    "available_tools",
    "check_tool_names",
    "close_mcp_tools",
    "from_langchain",
    "get_tool",
    "load_tools",
    "mcp_tools",
    "to_langchain",
    "tool",
]

_LAZY = {
    "from_langchain": "tools.langchain",
    "to_langchain": "tools.langchain",
    "mcp_tools": "tools.mcp",
    "close_mcp_tools": "tools.mcp",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tools' has no attribute {name!r}")
