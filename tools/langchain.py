"""LangChain ``BaseTool`` <-> anchorloop ``Tool``, both ways.

``from_langchain`` lets any LangChain tool be an anchor: its argument schema becomes our
``args_schema``, its errors (``ToolException``, or an ``error`` status) become
``ToolResult(error=True)``. ``to_langchain`` hands our tools to LangChain/LangGraph code: the
result's text is the message content, its metadata the artifact, and an error result comes back
as an error ``ToolMessage`` instead of an exception, so the model sees it and can correct.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
from collections.abc import Coroutine
from typing import Any

from langchain_core.messages import ToolMessage
from langchain_core.tools import BaseTool, StructuredTool, ToolException
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from tools.base import Tool, ToolResult, _describe_validation_error

_ORIGINAL = "anchorloop_tool"  # key in a converted LangChain tool's metadata


class LangChainTool(Tool):
    """An anchorloop ``Tool`` that runs a LangChain ``BaseTool``."""

    def __init__(self, lc_tool: BaseTool) -> None:
        self.lc_tool = lc_tool
        self.name = lc_tool.name
        self.description = lc_tool.description or lc_tool.name
        schema = lc_tool.tool_call_schema
        if isinstance(schema, type) and issubclass(schema, BaseModel):
            self.args_schema = schema
            self._raw_schema: dict[str, Any] | None = None
        else:  # a JSON-schema dict: LangChain validates it, so accept any object here
            self._raw_schema = dict(schema)
            self.args_schema = create_model(f"{self.name}_args", __config__=ConfigDict(extra="allow"))

    def json_schema(self) -> dict[str, Any]:
        if self._raw_schema is None:
            return super().json_schema()
        params = {k: v for k, v in self._raw_schema.items() if k not in ("title", "description")}
        params.setdefault("type", "object")
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": params},
        }

    async def arun(self, args: BaseModel) -> ToolResult:
        call = {
            "type": "tool_call",
            "id": f"anchorloop-{self.name}",
            "name": self.name,
            "args": args.model_dump(exclude_unset=self._raw_schema is None),
        }
        try:
            message = await self.lc_tool.ainvoke(call)
        except ToolException as exc:
            return ToolResult(content=str(exc) or type(exc).__name__, error=True)
        if not isinstance(message, ToolMessage):
            return ToolResult(content=_text(message))
        artifact = message.artifact
        return ToolResult(
            content=_text(message.content),
            error=message.status == "error",
            metadata=artifact if isinstance(artifact, dict) else {},
        )


def from_langchain(lc_tool: BaseTool) -> Tool:
    """Wrap a LangChain tool as an anchorloop ``Tool`` (or unwrap one made by ``to_langchain``)."""
    if not isinstance(lc_tool, BaseTool):
        raise TypeError(f"from_langchain expects a langchain_core BaseTool, got {type(lc_tool).__name__}.")
    original = (lc_tool.metadata or {}).get(_ORIGINAL)
    return original if isinstance(original, Tool) else LangChainTool(lc_tool)


def to_langchain(tool: Tool) -> BaseTool:
    """Expose an anchorloop ``Tool`` as a LangChain ``StructuredTool`` (sync and async)."""
    if isinstance(tool, LangChainTool):
        return tool.lc_tool

    async def arun(**kwargs: Any) -> tuple[str, dict[str, Any]]:
        return _content_and_artifact(await tool.acall(kwargs))

    def run(**kwargs: Any) -> tuple[str, dict[str, Any]]:
        return _content_and_artifact(_run_coroutine(tool.acall(kwargs)))

    def describe_bad_arguments(exc: ValidationError) -> str:
        return _describe_validation_error(tool, exc)

    return StructuredTool(
        name=tool.name,
        description=tool.description,
        args_schema=tool.args_schema,
        func=run,
        coroutine=arun,
        response_format="content_and_artifact",
        handle_tool_error=True,
        handle_validation_error=describe_bad_arguments,
        metadata={_ORIGINAL: tool},
    )


def _content_and_artifact(result: ToolResult) -> tuple[str, dict[str, Any]]:
    if result.error:
        raise ToolException(result.content)  # handle_tool_error turns it into an error message
    return result.content, result.metadata


def _run_coroutine(coro: Coroutine[Any, Any, ToolResult]) -> ToolResult:
    """Run ``coro`` to completion from sync code, even when this thread has a running loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content blocks
        parts = [b.get("text", "") if isinstance(b, dict) else str(b) for b in content]
        return "\n".join(p for p in parts if p)
    try:
        return json.dumps(content, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(content)
