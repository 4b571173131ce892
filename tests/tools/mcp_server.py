"""A small, real MCP server for the tests: ``python mcp_server.py stdio`` or ``python mcp_server.py http PORT``."""

from __future__ import annotations

import asyncio
import os
import sys

from mcp.server.fastmcp import FastMCP


def build(port: int = 0) -> FastMCP:
    server = FastMCP("anchorloop-test", log_level="WARNING", host="127.0.0.1", port=port)

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @server.tool()
    def fail(message: str) -> str:
        """Always raises, with the given message."""
        raise ValueError(message)

    @server.tool()
    async def sleep(seconds: float) -> str:
        """Sleep for a number of seconds, then say so."""
        await asyncio.sleep(seconds)
        return f"slept {seconds:g} s"

    @server.tool()
    def pid() -> int:
        """The server's process id."""
        return os.getpid()

    @server.tool()
    def crash() -> str:
        """End the server process in the middle of the call."""
        os._exit(3)

    return server


if __name__ == "__main__":
    transport = sys.argv[1] if len(sys.argv) > 1 else "stdio"
    if transport == "stdio":
        build().run("stdio")
    elif transport == "http":
        build(int(sys.argv[2])).run("streamable-http")
    elif transport == "die":  # exits at start-up, saying why
        print("mcp_server: no configuration found, giving up", file=sys.stderr)
        sys.exit(2)
    else:
        sys.exit(f"unknown transport {transport!r}")
