"""Benchmark: does "check with the tool" carry over? A trained model against its base, on envs it was
not trained on.

Evaluates the base model and a trained one (greedy, the same held-out tasks) on arithmetic levels
1–4 and 6, wikiqa and humaneval, and writes the change in Acc@t1, Acc@t2, Δi→c, Δc→i and vacuous checks
per env into BENCHMARKS.md.

    .venv/bin/python bench/bench_transfer.py --trained runs/learning/final [--n 32] [--trained-on "arithmetic L2"]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _common import command_line, load1, machine, utc_now, write_section

KEYS = [("Acc@t1", "acc_t1"), ("Acc@t2", "acc_t2"), ("Δi→c", "delta_i_to_c"), ("Δc→i", "delta_c_to_i"),
        ("vacuous", "vacuous_check_rate"), ("vacuous, separable", "vacuous_separable_rate")]


def targets() -> list:
    from envs import get_env

    envs = []
    for level in (1, 2, 3, 4, 6):
        env = get_env("arithmetic", level=level)
        env.name = f"arithmetic-L{level}"  # a label for the rows; the env is the built-in one
        envs.append(env)
    return envs + [get_env("wikiqa"), get_env("humaneval")]


def evaluate_model(model: str, n: int, max_turns: int) -> dict[str, object]:
    from agent.hf_policy import HFPolicy
    from training.eval import evaluate

    policy = HFPolicy.from_pretrained(model)
    try:
        report = evaluate(policy, targets(), n=n, model=model, max_turns=max_turns, max_tool_calls=4)
    finally:
        policy.close()
    return {row.env: row.metrics for row in report.rows if row.config == "baseline" and row.env != "all"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="smollm2-135m")
    parser.add_argument("--trained", required=True, help="a trained model directory (a run's final/)")
    parser.add_argument("--trained-on", default="arithmetic L2", help="what the trained model was trained on")
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--max-turns", type=int, default=6)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    started, load = time.perf_counter(), load1()
    base = evaluate_model(args.base, args.n, args.max_turns)
    trained = evaluate_model(args.trained, args.n, args.max_turns)
    head = "| env (n) | " + " | ".join(f"{name} base → trained" for name, _ in KEYS) + " |"
    lines = [head, "|---|" + "---:|" * len(KEYS)]
    for env, before in base.items():
        after = trained[env]
        cells = [f"{100 * getattr(before, k).value:.0f} → {100 * getattr(after, k).value:.0f}"
                 if getattr(before, k).n and getattr(after, k).n else "–" for _, k in KEYS]
        lines.append(f"| {env} ({before.n}) | " + " | ".join(cells) + " |")
    section = "\n".join([
        "## Transfer", "",
        "  \n".join([f"Command: `{command_line('bench_transfer.py')}`", f"Date: {utc_now()}",
                     f"Machine: {machine()}",
                     f"Wall time: {(time.perf_counter() - started) / 60:.1f} min (load {load:.2f} at the start)"]),
        "", f"Base `{args.base}` against `{Path(args.trained)}` (trained on {args.trained_on}); greedy, "
        f"{args.n} held-out tasks per env, max {args.max_turns} turns; rates in %. Intervals at this n are about "
        "±15 points: read only large changes.", "", *lines, ""])
    print(section)
    if not args.no_write:
        write_section("## Transfer", section)


if __name__ == "__main__":
    main()
