"""Benchmark: what training does to held-out self-correction — the demo loop on a config, summarized.

Runs ``anchorloop demo --config CONFIG`` (evaluate greedy on held-out tasks → train → evaluate the
same tasks again) unless ``--run-dir`` points at a finished run, then writes the before/after table
with 95% intervals, the 2×2 transitions, and the per-step training log into BENCHMARKS.md.

    .venv/bin/python bench/bench_learning.py [--config configs/learning.toml] [--run-dir runs/learning]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

from _common import ROOT, load1, machine, utc_now, wait_for_quiet_cpu, write_section

COLUMNS = [("Acc@t1", "acc_t1"), ("Acc@t2", "acc_t2"), ("Δ", "delta"), ("Δi→c", "delta_i_to_c"),
           ("Δc→i", "delta_c_to_i"), ("confirmatory", "confirmatory_rate"),
           ("verification precision", "verification_precision"), ("vacuous checks", "vacuous_check_rate"),
           ("vacuous, separable", "vacuous_separable_rate")]
STEP_COLUMNS = [("stage", "stage", "{}"), ("reward", "reward_mean", "{:+.2f}"), ("Acc@t1", "acc_t1", "{:.0%}"),
                ("Acc@t2", "acc_t2", "{:.0%}"), ("Δi→c", "delta_i_to_c", "{:.0%}"), ("Δc→i", "delta_c_to_i", "{:.0%}"),
                ("vacuous", "vacuous_check_rate", "{:.0%}"), ("injected fixed", "injected_fix_rate", "{:.0%}"),
                ("no-signal groups", "no_signal_fraction", "{:.0%}"), ("rollout", "rollout_s", "{:.0f} s")]


def before_after(run_dir: Path) -> list[str]:
    from training.eval import EvalReport

    lines = ["| | " + " | ".join(name for name, _ in COLUMNS) + " | right→right / right→wrong / wrong→right / "
             "wrong→wrong |", "|---|" + "---:|" * (len(COLUMNS) + 1)]
    for label in ("before", "after"):
        report = EvalReport.load(run_dir / f"eval_{label}")
        row = report.rows[0]
        m, t = row.metrics, row.transitions
        cells = [str(getattr(m, key)) if getattr(m, key).n else "–" for _, key in COLUMNS]
        lines.append(f"| {label} (n={m.n}) | " + " | ".join(cells)
                     + f" | {t.right_right} / {t.right_wrong} / {t.wrong_right} / {t.wrong_wrong} |")
    return lines


def steps_table(run_dir: Path) -> list[str]:
    steps = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines() if line.strip()]
    lines = ["| step | " + " | ".join(name for name, _, _ in STEP_COLUMNS) + " |",
             "|---:|" + "---:|" * len(STEP_COLUMNS)]
    for s in steps:
        lines.append(f"| {s['step']} | " + " | ".join(fmt.format(s[key]) if key in s else "–"
                                                     for _, key, fmt in STEP_COLUMNS) + " |")
    return lines


def probe_rows(run_dir: Path) -> list[str]:
    """The injected-error probes before and after, when the run's evaluations ran them."""
    from training.eval import EvalReport

    lines = ["| | probe | injected | skipped | fix rate | false alarms | vacuous checks (injected runs) |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for label in ("before", "after"):
        for p in EvalReport.load(run_dir / f"eval_{label}").probes:
            lines.append(f"| {label} | {p.probe} | {p.injected} | {p.skipped} | {p.fix_rate} | {p.false_alarm_rate} | "
                         f"{p.vacuous_check_rate} |")
    return lines if len(lines) > 2 else []


def curve_rows(run_dir: Path) -> list[str]:
    """The held-out learning curve (greedy, curve_tasks held-out tasks), when the run logged one."""
    path = run_dir / "heldout_log.jsonl"
    if not path.is_file():
        return []
    lines = ["| step | Acc@t1 | Acc@t2 | Δi→c | Δc→i | vacuous checks |", "|---:|---:|---:|---:|---:|---:|"]
    for line in path.read_text().splitlines():
        p = json.loads(line)
        lines.append(f"| {p['step']} | {p['acc_t1']:.0%} | {p['acc_t2']:.0%} | {p['delta_i_to_c']:.0%} | "
                     f"{p['delta_c_to_i']:.0%} | {p['vacuous_check_rate']:.0%} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "learning.toml")
    parser.add_argument("--run-dir", type=Path, help="summarize this finished run instead of running one")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    from training.config import load_config

    config = load_config(args.config)
    run_dir = args.run_dir or ROOT / config.output_dir
    command = f"anchorloop demo --config {args.config.relative_to(ROOT) if args.config.is_absolute() else args.config}"
    wall = None
    if args.run_dir is None:
        waited, load = wait_for_quiet_cpu()
        started = time.perf_counter()
        subprocess.run([str(ROOT / ".venv" / "bin" / "anchorloop"), "demo", "--config", str(args.config),
                        "--output-dir", str(run_dir)], check=True)
        wall = f"{(time.perf_counter() - started) / 60:.1f} min in all (load {load:.2f} at the start, {load1():.2f} " \
               f"at the end, after waiting {waited:.0f} s for a quiet CPU)"
    tr, agent = config.training, config.agent
    recipe = (f"`{config.model.name}`, `{config.env.name}` {config.env.kwargs}, {tr.steps} steps of "
              f"{tr.tasks_per_step} tasks × {tr.num_generations} generations at temperature {agent.temperature} "
              f"(SCoRe Stage I for the first {tr.stage1_steps} steps, β = {tr.beta}), lr {tr.learning_rate:g}, "
              f"injected wrong first attempts in {tr.injected_errors:.0%} of the groups, "
              f"rewards {config.rewards.model_dump()}, micro-batches of {tr.micro_batch}, "
              f"{'LoRA' if config.model.lora else 'full fine-tuning'}")
    section = "\n".join([
        f"## Learning: {args.config.name}", "",
        "  \n".join([f"Command: `{command}` (summarized by `.venv/bin/python bench/bench_learning.py`)",
                     f"Date: {utc_now()}", f"Machine: {machine()}"] + ([f"Wall time: {wall}"] if wall else [])),
        "",
        f"Recipe: {recipe}. Before and after: the same {config.env.eval_tasks} held-out test tasks, greedy decoding, "
        "95% intervals (Wilson for rates, Newcombe for paired differences).",
        "", *before_after(run_dir), "",
        *(["Injected-error probe on the same tasks (each baseline run's own first-attempt code changed in one "
           "place so that its real output is wrong; fix rate = made right by the verify step; false alarms = "
           "right first attempts made wrong):", "", *probe_rows(run_dir), ""] if probe_rows(run_dir) else []),
        *([f"Held-out learning curve (greedy, {config.training.curve_tasks} held-out tasks):", "",
           *curve_rows(run_dir), ""] if curve_rows(run_dir) else []),
        "Training rollouts, per step (sampled, on training tasks; stage 1 = SCoRe Stage I):", "",
        *steps_table(run_dir), "",
    ])
    print(section)
    if not args.no_write:
        write_section(f"## Learning: {args.config.name}", section)


if __name__ == "__main__":
    main()
