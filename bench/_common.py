"""Helpers shared by the model benchmarks: machine description, load etiquette, BENCHMARKS.md sections.

The machine description is the one ``bench_sandbox.py`` writes, so every section reads alike.
"""

from __future__ import annotations

import datetime
import os
import resource
import shlex
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench_sandbox import machine  # noqa: E402  (CPU model, cores, RAM, kernel, Python)

__all__ = ["ROOT", "agent_options", "command_line", "env_by_label", "has_python_tool", "in_worker_thread", "load1",
           "machine", "options_for", "peak_rss_mib", "utc_now", "wait_for_quiet_cpu", "write_section"]


def load1() -> float:
    return os.getloadavg()[0]


def wait_for_quiet_cpu(threshold: float = 1.0, poll_s: float = 20.0, max_wait_s: float = 900.0) -> tuple[float, float]:
    """Wait until the 1-minute load average is below ``threshold`` (or ``max_wait_s`` has passed).

    Returns ``(seconds waited, load when we went ahead)``. The machine is shared; a benchmark started
    on a busy machine says so in its results instead of waiting forever.
    """
    started = time.monotonic()
    while True:
        load = load1()
        waited = time.monotonic() - started
        if load < threshold or waited >= max_wait_s:
            if waited >= max_wait_s:
                print(f"load {load:.2f} still ≥ {threshold} after {waited:.0f} s; going ahead", flush=True)
            return waited, load
        print(f"waiting for a quiet CPU: 1-min load {load:.2f} ≥ {threshold} ({waited:.0f} s so far)", flush=True)
        time.sleep(poll_s)


def in_worker_thread(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in a fresh thread and return its result (or raise its exception).

    Every timed measurement runs this way, so every engine drives the model from a non-main thread, as
    ``HFPolicy`` always does. On this shared 2-core machine that is not a detail: while another process
    kept a core busy, a decode-heavy ``model.generate`` issued from the main thread with torch's default
    2 intra-op threads took 2.3–4.1 s where the same call from a worker thread took 0.3 s.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=target, name="bench-measure")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (``ru_maxrss`` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def utc_now() -> str:
    return f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC"


def command_line(script: str) -> str:
    """The command that reproduces this run, as it should appear in BENCHMARKS.md."""
    return shlex.join([".venv/bin/python", f"bench/{script}", *sys.argv[1:]])


def write_section(heading: str, section: str, path: Path = ROOT / "BENCHMARKS.md") -> None:
    """Replace (or append) the section that starts with ``heading``; leave every other section alone."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == heading), None)
    if start is None:
        new = text.rstrip("\n") + "\n\n" + section.strip("\n")
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        new = "\n".join(lines[:start] + section.strip("\n").splitlines() + [""] + lines[end:])
    path.write_text(new.rstrip("\n") + "\n")


def env_by_label(name: str) -> Any:
    """A built-in env by a table label: ``arithmetic-L3`` is ``arithmetic`` at level 3, named as labelled."""
    from envs import get_env

    if name.startswith("arithmetic-L"):
        env = get_env("arithmetic", level=int(name.removeprefix("arithmetic-L")))
        env.name = name  # a label for the rows; the env is the built-in one
        return env
    return get_env(name)


def agent_options(config: Path | None, max_turns: int, temperature: float = 0.0) -> dict[str, Any]:
    """Agent options for a benchmark's runs: a training config's (its exemplars, turns, tokens), or the
    defaults with ``max_turns``; sampled at ``temperature`` (greedy by default, as evaluation is)."""
    from agent.policy import SamplingParams

    if config is None:
        return {"max_turns": max_turns, "max_tool_calls": 4, "sampling": SamplingParams(temperature=temperature)}
    from training.config import load_config

    agent = load_config(config).agent
    return agent.build_options() | {"sampling": SamplingParams(temperature=temperature,
                                                               max_new_tokens=agent.max_new_tokens)}


def has_python_tool(env: Any) -> bool:
    return any(t.name == "python" for t in env.tools())


def options_for(env: Any, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` for runs on ``env``: the code protocol runs fenced Python, so an env without a python tool
    calls its tools in JSON."""
    return options | {"protocol": "json"} if options.get("protocol") == "code" and not has_python_tool(env) else options
