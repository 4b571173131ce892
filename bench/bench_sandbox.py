"""Benchmark: the fork-server sandbox against a naive ``subprocess.run([python, "-c", code])``.

Both run ``print(1)`` under the same limits (CPU seconds, address space, file size, open files,
processes, wall-clock timeout, a fresh session, a clean environment, a temporary working
directory). Measured in one run: latency p50/p95 of single calls, and throughput with 4 callers at
once. Results go to stdout and replace the ``## Python sandbox`` section of BENCHMARKS.md.

    .venv/bin/python bench/bench_sandbox.py [--runs 100] [--concurrency 4] [--no-write]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tools.python_exec import PythonSandbox  # noqa: E402

CODE = "print(1)"
TIMEOUT_S = 10.0
MEMORY_MB = 512
LIMITS = {"max_processes": 64, "max_open_files": 256, "max_file_mb": 16}
SECTION = "## Python sandbox"


def naive_run(code: str) -> str:
    """What a sandbox without a fork server does: a fresh interpreter per call, same limits."""

    def limit() -> None:
        cpu = int(TIMEOUT_S) + 2
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_MB * 2**20,) * 2)
        resource.setrlimit(resource.RLIMIT_FSIZE, (LIMITS["max_file_mb"] * 2**20,) * 2)
        resource.setrlimit(resource.RLIMIT_NOFILE, (LIMITS["max_open_files"],) * 2)
        resource.setrlimit(resource.RLIMIT_NPROC, (LIMITS["max_processes"],) * 2)

    workdir = tempfile.mkdtemp(prefix="bench-naive-")
    try:
        done = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            cwd=workdir,
            env={"PATH": "/usr/bin:/bin", "HOME": workdir, "LANG": "C.UTF-8"},
            start_new_session=True,
            preexec_fn=limit,
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return done.stdout


def latencies(call: Callable[[], str], runs: int) -> list[float]:
    for _ in range(3):  # warm-up
        call()
    found = []
    for _ in range(runs):
        started = time.perf_counter()
        out = call()
        found.append(time.perf_counter() - started)
        assert out == "1\n", out
    return found


def throughput(call: Callable[[], str], runs: int, concurrency: int) -> float:
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(lambda _: call(), range(concurrency)))  # warm-up
        started = time.perf_counter()
        outputs = list(pool.map(lambda _: call(), range(runs)))
        elapsed = time.perf_counter() - started
    assert all(out == "1\n" for out in outputs)
    return runs / elapsed


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {kib / 2**20:.0f} GiB RAM"
    system = f"{platform.system()} {platform.release()}"
    return f"{model}, {os.cpu_count()} cores{memory}, {system}, Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100, help="calls per latency measurement")
    parser.add_argument("--throughput-runs", type=int, default=200, help="calls per throughput measurement")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    sandbox = PythonSandbox(timeout_s=TIMEOUT_S, memory_mb=MEMORY_MB, **LIMITS)
    layers = sandbox.isolation
    cold_start_s = time.perf_counter() - started

    def fork_server() -> str:
        return sandbox.run(CODE).stdout

    def naive() -> str:
        return naive_run(CODE)

    active = ", ".join(name for name, on in layers.items() if on)
    print(f"fork server ready in {cold_start_s * 1000:.0f} ms; layers: {active}")
    rows = {}
    for name, call in (("fork server", fork_server), ("naive subprocess", naive)):
        lat = latencies(call, args.runs)
        tput = throughput(call, args.throughput_runs, args.concurrency)
        rows[name] = (percentile(lat, 50) * 1000, percentile(lat, 95) * 1000, tput)
        print(f"{name:>17}: p50 {rows[name][0]:6.1f} ms  p95 {rows[name][1]:6.1f} ms  {tput:6.1f} runs/s")
    load_after = os.getloadavg()[0]

    ours, theirs = rows["fork server"], rows["naive subprocess"]
    table = [
        "| `print(1)` | fork server (`PythonSandbox`) | naive `subprocess.run` | ratio |",
        "|---|---:|---:|---:|",
        f"| latency p50 | {ours[0]:.1f} ms | {theirs[0]:.1f} ms | {theirs[0] / ours[0]:.1f}× faster |",
        f"| latency p95 | {ours[1]:.1f} ms | {theirs[1]:.1f} ms | {theirs[1] / ours[1]:.1f}× faster |",
        f"| throughput, {args.concurrency} callers | {ours[2]:.1f} runs/s | {theirs[2]:.1f} runs/s "
        f"| {ours[2] / theirs[2]:.1f}× more |",
    ]
    print("\n".join(table))
    if args.no_write:
        return
    command = shlex.join([".venv/bin/python", "bench/bench_sandbox.py", *sys.argv[1:]])
    section = "\n".join(
        [
            SECTION,
            "",
            f"Command: `{command}`  ",
            f"Date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC  ",
            f"Machine: {machine()}  ",
            f"Load average (1 min) before / after: {load_before:.2f} / {load_after:.2f} "
            "(other jobs may share the machine)  ",
            f"Isolation layers active in each run: {active}",
            "",
            f"Both sides run `{CODE}` with the same limits: {TIMEOUT_S:g} s timeout, {MEMORY_MB} MB address "
            f"space, {LIMITS['max_file_mb']} MB files, {LIMITS['max_open_files']} open files, "
            f"{LIMITS['max_processes']} processes, own session, clean environment, temporary cwd. "
            f"The naive side starts `{Path(sys.executable).name} -c` per call; the fork server forks a "
            f"pre-imported interpreter (kept warm between calls; its cold start took "
            f"{cold_start_s * 1000:.0f} ms). Only the fork-server side gets the isolation layers listed "
            f"above. Latency: {args.runs} sequential calls after a warm-up. "
            f"Throughput: {args.throughput_runs} calls from {args.concurrency} threads.",
            "",
            *table,
            "",
        ]
    )
    write_section(ROOT / "BENCHMARKS.md", section)
    print(f"updated {ROOT / 'BENCHMARKS.md'}")


def write_section(path: Path, section: str) -> None:
    """Replace (or append) this benchmark's section, leaving the other sections as they are."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == SECTION), None)
    if start is None:
        new = text.rstrip("\n") + "\n\n" + section
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        new = "\n".join(lines[:start] + section.splitlines() + [""] + lines[end:])
    path.write_text(new.rstrip("\n") + "\n")


if __name__ == "__main__":
    main()
