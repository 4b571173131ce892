"""Sandboxed Python execution: the agent's main external anchor.

``PythonSandbox.run(code)`` runs ``code`` as a fresh ``__main__`` in its own OS process, forked
from a warm fork server (``tools.sandbox``) that has done its imports once, and returns an
``ExecResult``. Never ``exec`` in the host process. Each run gets, as far as the host allows:

- its own session, with the whole process tree killed at the end or on timeout (a PID namespace
  whose init takes every leftover process with it, plus a kill of everything its uid owns);
- resource limits: CPU seconds, address space, file size, open files, processes; and, where the
  host lets the server create cgroups, a cap on the memory and processes of the whole run;
- a per-run unprivileged uid (when the host is root) or a user namespace (when not);
- no network (a fresh network namespace with nothing in it);
- a read-only view of the file system, with a private, size-limited tmpfs as ``/tmp`` and cwd;
- a clean environment and no inherited file descriptors but stdin, stdout and stderr.

``ExecResult.isolation`` says which layers were active; ``PythonSandbox.isolation_notes`` why
the others were not. ``python_tool()`` wraps a sandbox as the agent-facing ``python`` tool;
``PythonTool.with_functions(tools)`` is one whose programs can call those tools as functions
(``tools.code_functions``), over a channel that reaches those tools and nothing else.
"""

from __future__ import annotations

import asyncio
import os
import re
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from tools.base import Tool, ToolResult
from tools.sandbox.client import ForkServer, SandboxError, shared_server

if TYPE_CHECKING:
    from tools.code_functions import CodeCalls, CodeFunctions

__all__ = ["ExecResult", "PythonSandbox", "SandboxError", "python_tool", "format_result"]

# Imported once in the server, so a program that uses them starts without paying for the import.
DEFAULT_PRELOAD = (
    "math", "cmath", "re", "json", "itertools", "functools", "collections", "fractions", "decimal",
    "statistics", "random", "datetime", "string", "heapq", "bisect", "operator", "typing",
    "dataclasses", "textwrap", "copy", "time", "traceback", "threading", "subprocess",
)  # fmt: skip


class ExecResult(BaseModel):
    """What one run did."""

    stdout: str = ""
    stderr: str = ""
    exit_code: int | None = Field(None, description="None when the run timed out; -N when killed by signal N")
    timed_out: bool = False
    duration_s: float = 0.0
    signal: str | None = Field(None, description="e.g. 'SIGSEGV' when the program was killed by a signal")
    truncated: bool = Field(False, description="stdout or stderr was cut at max_output_bytes")
    oom_killed: bool = Field(
        False, description="a process of the run was killed for exceeding the memory cap"
    )
    cpu_s: float | None = None
    max_rss_mb: float | None = None
    isolation: dict[str, bool] = Field(default_factory=dict, description="which isolation layers were active")

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


class PythonSandbox:
    """Runs untrusted Python code in isolated processes. Safe to share between threads and tasks."""

    def __init__(
        self,
        timeout_s: float = 10.0,
        memory_mb: int | None = 512,
        max_output_bytes: int = 65536,
        *,
        max_processes: int = 64,
        max_open_files: int = 256,
        max_file_mb: int = 16,
        max_concurrency: int | None = None,
        preload: tuple[str, ...] = DEFAULT_PRELOAD,
        server: ForkServer | None = None,
    ) -> None:
        _require(timeout_s > 0, "timeout_s", timeout_s, "a positive number of seconds")
        _require(memory_mb is None or memory_mb >= 32, "memory_mb", memory_mb, "None or at least 32 (MiB)")
        _require(max_output_bytes >= 1, "max_output_bytes", max_output_bytes, "at least 1")
        _require(max_processes >= 1, "max_processes", max_processes, "at least 1")
        _require(max_open_files >= 16, "max_open_files", max_open_files, "at least 16")
        _require(max_file_mb >= 1, "max_file_mb", max_file_mb, "at least 1 (MiB)")
        self.timeout_s = float(timeout_s)
        self.memory_mb = memory_mb
        self.max_output_bytes = int(max_output_bytes)
        self.limits = {
            "max_processes": max_processes,
            "max_open_files": max_open_files,
            "max_file_mb": max_file_mb,
        }
        concurrency = max_concurrency or max(4, 2 * (os.cpu_count() or 1))
        self._server = server or shared_server(preload=tuple(preload), max_concurrency=concurrency)

    @property
    def server(self) -> ForkServer:
        return self._server

    @property
    def isolation(self) -> dict[str, bool]:
        """Which isolation layers every run of this sandbox gets on this host."""
        return dict(self._server.info()["layers"])

    @property
    def isolation_notes(self) -> list[str]:
        """Why stronger isolation plans were not used (empty when the strongest one works)."""
        return list(self._server.info()["notes"])

    def run(self, code: str, stdin: str = "", *, functions: CodeCalls | None = None) -> ExecResult:
        """Run ``code`` and wait for it. Raises ``SandboxError`` only when the sandbox itself fails.
        ``functions``: the tools the program may call as functions (``CodeFunctions.session()``)."""
        if functions is not None:  # their calls are answered by async tools
            return asyncio.run(self.arun(code, stdin, functions=functions))
        return self._result(self._server.run(self._request(code, stdin)))

    async def arun(self, code: str, stdin: str = "", *, functions: CodeCalls | None = None) -> ExecResult:
        """``run`` for asyncio: never blocks the event loop; cancelling it kills the program."""
        request = self._request(code, stdin)
        if functions is not None and functions.specs:
            request |= {"functions": functions.specs, "max_calls": functions.max_calls}
            return self._result(await self._server.arun(request, on_call=functions))
        return self._result(await self._server.arun(request))

    def _request(self, code: str, stdin: str) -> dict[str, Any]:
        if not isinstance(code, str):
            raise TypeError(f"code must be a str, got {type(code).__name__}")
        if not isinstance(stdin, str):
            raise TypeError(f"stdin must be a str, got {type(stdin).__name__}")
        return {
            "code": code,
            "stdin": stdin,
            "timeout_s": self.timeout_s,
            "memory_mb": self.memory_mb,
            "max_output_bytes": self.max_output_bytes,
            **self.limits,
        }

    def _result(self, raw: dict[str, Any]) -> ExecResult:
        return ExecResult(**raw, isolation=self._server.hello.get("layers", {}))

    def __repr__(self) -> str:
        return f"PythonSandbox(timeout_s={self.timeout_s:g}, memory_mb={self.memory_mb})"


def _require(ok: bool, name: str, value: Any, expected: str) -> None:
    if not ok:
        raise ValueError(f"PythonSandbox: {name}={value!r} is invalid; use {expected}.")


# --- the agent-facing tool ------------------------------------------------------------------

NO_OUTPUT = "(no output — use print() to see values)"
STDOUT_HEAD, STDOUT_TAIL, STDERR_TAIL = 2000, 600, 1200
SIGNAL_HINTS = {
    "SIGSEGV": "the interpreter crashed",
    "SIGKILL": "killed, probably for using too much memory",
    "SIGXCPU": "CPU time limit exceeded",
    "SIGABRT": "aborted",
}


class PythonArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(description="Python 3 source code to run. Use print() to show results.")


class PythonTool(Tool):
    name = "python"
    args_schema = PythonArgs

    def __init__(self, sandbox: PythonSandbox, functions: CodeFunctions | None = None) -> None:
        self.sandbox = sandbox
        self.functions = functions if functions else None
        self.description = (
            "Run Python 3 code in a sandbox and see what it prints. Each call starts from scratch "
            "(nothing is kept between calls), so print() everything you need. No internet access. "
            f"Time limit {sandbox.timeout_s:g} s."
        )

    def with_functions(self, tools: list[Tool], *, timeout_s: float = 60.0) -> PythonTool:
        """This tool (same sandbox) with ``tools`` callable as functions from its programs."""
        from tools.code_functions import CodeFunctions

        return PythonTool(self.sandbox, CodeFunctions([t for t in tools if t is not self], timeout_s=timeout_s))

    async def arun(self, args: BaseModel) -> ToolResult:
        calls = self.functions.session() if self.functions else None
        result = await self.sandbox.arun(strip_code_fences(args.code), functions=calls)
        metadata = result.model_dump(include={"exit_code", "timed_out", "duration_s", "signal", "truncated"})
        if calls is not None:
            metadata["function_calls"] = calls.calls
        return ToolResult(content=format_result(result, self.sandbox), error=not result.ok, metadata=metadata)


def python_tool(sandbox: PythonSandbox | None = None) -> Tool:
    """The ``python`` tool: runs the model's code in ``sandbox`` (a default one if None)."""
    return PythonTool(sandbox or PythonSandbox())


def strip_code_fences(code: str) -> str:
    """Accept code wrapped in a Markdown fence, as models often send it."""
    match = re.fullmatch(r"\s*```[\w+-]*[ \t]*\n(.*?)\n?```\s*", code, flags=re.DOTALL)
    return match.group(1) if match else code


def format_result(result: ExecResult, sandbox: PythonSandbox | None = None) -> str:
    """A short, plain report of a run for a (small) model to read."""
    stdout = _keep_ends(result.stdout.rstrip("\n"), STDOUT_HEAD, STDOUT_TAIL)
    stderr = _keep_tail(result.stderr.strip("\n"), STDERR_TAIL)
    if result.ok:
        text = stdout or NO_OUTPUT
        return f"{text}\n\n[stderr]\n{stderr}" if stderr else text
    parts = []
    if result.timed_out:
        limit = f" after {sandbox.timeout_s:g} s" if sandbox else ""
        parts.append(f"Timed out{limit}: the program was stopped (an endless loop, or too slow).")
    elif result.oom_killed:
        limit = f" (limit {sandbox.memory_mb} MB)" if sandbox and sandbox.memory_mb else ""
        parts.append(f"The program was killed for using too much memory{limit}.")
    elif result.signal:
        hint = SIGNAL_HINTS.get(result.signal)
        parts.append(f"The program was killed by {result.signal}" + (f" ({hint})." if hint else "."))
    if stdout:
        parts.append(f"Output:\n{stdout}")
    if stderr:
        code = result.exit_code
        parts.append(f"Error (exit code {code}):\n{stderr}" if code and code > 0 else f"Error:\n{stderr}")
    elif result.exit_code and result.exit_code > 0:
        parts.append(f"The program exited with code {result.exit_code}.")
    if "MemoryError" in result.stderr and sandbox and sandbox.memory_mb:
        parts.append(f"(The memory limit is {sandbox.memory_mb} MB.)")
    return "\n\n".join(parts) if parts else f"Failed with exit code {result.exit_code}."


def _keep_ends(text: str, head: int, tail: int) -> str:
    if len(text) <= head + tail:
        return text
    cut = len(text) - head - tail
    return f"{text[:head]}\n…[{cut} characters cut]…\n{text[-tail:]}"


def _keep_tail(text: str, tail: int) -> str:
    if len(text) <= tail:
        return text
    kept = text[-tail:]
    newline = kept.find("\n")
    return "…\n" + (kept[newline + 1 :] if 0 <= newline < 200 else kept)
