"""Benchmark: does "check with the tool" carry over? A trained model against its base, on envs it was
not trained on.

Evaluates the base model and a trained one (greedy, the same held-out tasks) on arithmetic levels
1–4 and 6, wikiqa and humaneval (or the ``--env`` picked), and writes the change in Acc@t1, Acc@t2,
Δi→c, Δc→i and vacuous checks per env into BENCHMARKS.md, with the injected-error probe's fix and
false-alarm rates where ``--probe`` asks for it (envs with a python tool). ``--config`` evaluates both
models under a training config's agent options (its exemplars, turns, tokens): the prompt the trained
model learned under.

    .venv/bin/python bench/bench_transfer.py --trained runs/learning/final [--n 32] [--trained-on "arithmetic L2"]
    .venv/bin/python bench/bench_transfer.py --trained runs/own-errors/final --config configs/own-errors.toml \\
        --env arithmetic-L1 --env arithmetic-L2 --env arithmetic-L6 --probe injected-errors
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from _common import (
    agent_options,
    command_line,
    env_by_label,
    has_python_tool,
    load1,
    machine,
    options_for,
    utc_now,
    write_section,
)

KEYS = [("Acc@t1", "acc_t1"), ("Acc@t2", "acc_t2"), ("Δi→c", "delta_i_to_c"), ("Δc→i", "delta_c_to_i"),
        ("vacuous", "vacuous_check_rate"), ("vacuous, separable", "vacuous_separable_rate")]
PROBE_KEYS = [("probe fix", "fix_rate"), ("probe false alarm", "false_alarm_rate")]
ENVS = [f"arithmetic-L{level}" for level in (1, 2, 3, 4, 6)] + ["wikiqa", "humaneval"]


def evaluate_model(model: str, names: list[str], n: int, options: dict[str, Any], probes: list[str]
                   ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Per env: the baseline metrics, and the probe results (envs with a python tool only: the probe changes
    the first attempt's code)."""
    from agent.hf_policy import HFPolicy
    from training.eval import evaluate

    envs = [env_by_label(name) for name in names]
    python = [e for e in envs if has_python_tool(e)]
    rest = [e for e in envs if e not in python]
    groups = [(python, probes, options), (rest, [], options_for(rest[0], options) if rest else options)]
    policy = HFPolicy.from_pretrained(model)
    try:
        reports = [evaluate(policy, group, n=n, model=model, probes=p, **opts) for group, p, opts in groups if group]
    finally:
        policy.close()
    metrics = {row.env: row.metrics for r in reports for row in r.rows if row.config == "baseline" and row.env != "all"}
    return metrics, {p.env: p for r in reports for p in r.probes}


def cell(before: Any, after: Any) -> str:
    return f"{100 * before.value:.0f} → {100 * after.value:.0f}" if before.n and after.n else "–"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="smollm2-135m")
    parser.add_argument("--trained", required=True, help="a trained model directory (a run's final/)")
    parser.add_argument("--trained-on", default="arithmetic L2", help="what the trained model was trained on")
    parser.add_argument("--config", type=Path, help="evaluate under this training config's agent options")
    parser.add_argument("--env", action="append", choices=ENVS, help=f"an env to evaluate on (repeatable; "
                        f"default: all of {', '.join(ENVS)})")
    parser.add_argument("--probe", action="append", default=[], help="a probe to run too, e.g. injected-errors")
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--max-turns", type=int, default=6, help="without --config")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    started, load = time.perf_counter(), load1()
    names, options = args.env or ENVS, agent_options(args.config, args.max_turns)
    base, base_probes = evaluate_model(args.base, names, args.n, options, args.probe)
    trained, trained_probes = evaluate_model(args.trained, names, args.n, options, args.probe)
    keys = KEYS + (PROBE_KEYS if base_probes else [])
    lines = ["| env (n) | " + " | ".join(f"{name} base → trained" for name, _ in keys) + " |",
             "|---|" + "---:|" * len(keys)]
    for env, before in base.items():
        cells = [cell(getattr(before, k), getattr(trained[env], k)) for _, k in KEYS]
        if base_probes:
            cells += [cell(getattr(base_probes[env], k), getattr(trained_probes[env], k)) if env in base_probes
                      else "–" for _, k in PROBE_KEYS]
        lines.append(f"| {env} ({before.n}) | " + " | ".join(cells) + " |")
    prompt = (f"the agent options of `{args.config}` (JSON tool calls where an env has no python tool)" if args.config
              else f"the agent's defaults, max {args.max_turns} turns")
    default = args.trained_on == parser.get_default("trained_on")  # the first section had no "from"
    heading = "## Transfer" if default else f"## Transfer from {args.trained_on}"
    section = "\n".join([
        heading, "",
        "  \n".join([f"Command: `{command_line('bench_transfer.py')}`", f"Date: {utc_now()}",
                     f"Machine: {machine()}",
                     f"Wall time: {(time.perf_counter() - started) / 60:.1f} min (load {load:.2f} at the start)"]),
        "", f"Base `{args.base}` against `{Path(args.trained)}` (trained on {args.trained_on}); greedy, "
        f"{args.n} held-out tasks per env, {prompt}; rates in %. A 95% interval at this n is up to "
        f"±{98 / args.n ** 0.5:.0f} points: read only large changes.", "", *lines, ""])
    print(section)
    if not args.no_write:
        write_section(heading, section)


if __name__ == "__main__":
    main()
