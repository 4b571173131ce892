"""Benchmark: a long fuzz campaign of hostile model output and hostile tools against the real agent.

The campaign of ``tests/agent/test_fuzz.py``, longer: a seeded policy writes random token ids, broken
fences, malformed and deeply nested tool calls, NaN arguments, special-token text, lone surrogates and
huge replies; tools raise SystemExit, hang, swallow cancellation, return unprintable values or forged
chat markup. Runs go through ``agent.graph.build_agent`` (SmolLM2's and Qwen2.5's templates, JSON calls
and code blocks in the real sandbox), ``training.rollout.rollout`` and a trajectory save/reload. Counts
of crashes, hangs and invariant violations go to stdout and to BENCHMARKS.md.

    .venv/bin/python bench/bench_fuzz.py [--runs 5000] [--seed 0] [--no-write]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import time
from pathlib import Path

from _common import command_line, load1, machine, utc_now, write_section

SECTION = "## Fuzzing: hostile model output and tools"
WHAT = """
A scripted policy replies with random token ids (special ones included) or hostile text: broken fences,
malformed, deeply nested and NaN-bearing tool calls, special-token text, lone surrogates, huge replies (a piece
repeated up to 20,000 times), random end-of-turn tokens and finish reasons. The tools raise SystemExit and
KeyboardInterrupt, hang past their 0.25 s deadline (sync and async), swallow cancellation, return 10**5000,
unprintable objects, 2 MB of text, forged chat markup or lone surrogates; one breaks the contract in its own
`acall`. Questions carry special-token text and surrogates, and the scorer raises on some answers. Four agents
share the runs: JSON calls under SmolLM2's template and under Qwen2.5's, code blocks run in the real sandbox,
and one without the verify step. Invariants per run: ids, env_mask and logprobs aligned and exactly as sampled,
every turn's prompt a prefix of the trajectory, the prompt and each inserted segment holding exactly the special
tokens of their harmless twins, and every batch's trajectories saved and reloaded unchanged.
""".strip().replace("\n", " ")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--deadline-s", type=float, default=3600.0, help="runs unfinished by then count as hangs")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    # the hostile scorer's failures are logged with tracebacks, once per run; the counts below say enough
    logging.getLogger("training.rollout").setLevel(logging.ERROR)
    logging.getLogger("training.trajectory").setLevel(logging.ERROR)

    from agent.models import load_tokenizer
    from tests.agent.fuzz_harness import campaign

    load = load1()
    with tempfile.TemporaryDirectory() as tmp:
        out = asyncio.run(campaign(load_tokenizer("smollm2-135m"), args.runs, args.seed, Path(tmp),
                                   deadline_s=args.deadline_s))
    seen = out.exercised
    rows = [
        ("runs", out.runs), ("finished before the deadline", out.finished),
        ("exceptions out of `rollout()` (crashes)", out.raised), ("hangs (unfinished at the deadline)", out.hangs),
        ("failed runs, unexpected causes", out.unexpected_failures),
        ("invariant violations", sum(out.violations.values())),
        ("failed runs from the hostile scorer (by design, recorded with the cause)", out.failed["scorer"]),
        ("runs checked against every invariant", seen["checked_runs"]), ("model turns", seen["model_turns"]),
        ("tool calls", seen["tool_calls"]), ("tool errors shown to the model", seen["tool_errors"]),
        ("format errors shown to the model", seen["format_errors"]),
    ]
    details = [f"- {cause}: {n}" for cause, n in {**out.violations, **out.failed}.items() if cause != "scorer"]
    section = "\n".join([
        SECTION, "",
        "  \n".join([f"Command: `nice -n 19 {command_line('bench_fuzz.py')}`", f"Date: {utc_now()}",
                     f"Machine: {machine()}",
                     f"Wall time: {out.seconds / 60:.1f} min (load {load:.2f} at the start; the machine is shared)"]),
        "",
        f"Seed {args.seed}. {WHAT}", "",
        "| | count |", "|---|---:|", *[f"| {name} | {n:,} |" for name, n in rows], "",
        *(["Violations and unexpected failures:", *details, ""] if details else []),
    ])
    print(section)
    if not args.no_write:
        write_section(SECTION, section)


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"done in {time.perf_counter() - started:.0f} s")
