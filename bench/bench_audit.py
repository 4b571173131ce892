"""Benchmark: how far each label-free reward signal can be trusted, audited against the answer key.

Runs ``training.audit.audit`` (what ``anchorloop audit`` runs) on each ``--env`` with one model, under a
training config's agent options and sampling temperature (the runs a training step would sample), and
writes a section per env into BENCHMARKS.md: per signal, the precision and recall of "the signal says
right" against the share of right runs, the AUROC of the graded signals, and the extra model calls and
seconds each cost beside the runs' own; then the self-judge's habits. Each env's ``audit.json``,
``audit.png`` and trajectories go to ``OUT/audit-ENV``.

    .venv/bin/python bench/bench_audit.py --env arithmetic-L2 --env wikiqa --n 128 [--config configs/quickstart.toml]
    .venv/bin/python bench/bench_audit.py --env wikiqa --rescore    # the saved runs, the signals as they are now
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from _common import ROOT, agent_options, command_line, env_by_label, load1, machine, options_for, utc_now, write_section

SECTION = "## Label-free signals against the answer key (audit)"


def pct(rate: Any) -> str:
    """A rate in percent with its 95% interval, or a dash when nothing was counted."""
    if rate.n == 0:
        return "–"
    return f"{100 * rate.value:.1f} [{100 * rate.low:.0f}, {100 * rate.high:.0f}] ({rate.n})"


def env_table(report: Any) -> list[str]:
    """Markdown lines for one env's audit: the signals, then the judge's habits."""
    rollout = report.rollout_seconds
    lines = [f"**{report.env}**: {report.runs} runs ({report.n} tasks × {report.generations}), "
             f"right {pct(report.accuracy)}: the precision of paying every run. Confirmatory verify steps: "
             f"{pct(report.confirmatory_rate)}. The runs themselves: {report.rollout_turns} model turns in "
             f"{rollout:.0f} s.", "",
             "| signal | says right when | paid | precision [95% CI] (n) | recall [95% CI] (n) | AUROC "
             "| extra model calls | seconds (share of rollout + signals) |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    total = rollout + sum(a.cost.seconds for a in report.audits)
    for a in report.audits:
        share = f"{a.cost.seconds:.1f} ({100 * a.cost.seconds / total:.0f}%)" if total else f"{a.cost.seconds:.1f}"
        lines.append(f"| `{a.signal}` | {a.says_right_when} | {a.says_right}/{a.n} | {pct(a.precision)} "
                     f"| {pct(a.recall)} | {'–' if a.auroc is None else f'{a.auroc:.2f}'} | {a.cost.calls} "
                     f"| {share} |")
    if report.judge is not None:
        j = report.judge
        lines += ["", f"Self-judge over {j.pairs} pairs of distinct answers, each judged in both orders:", "",
                  "| consistent | wrong over right (replies) | wrong over right (consistent pairs) "
                  "| sides with its group's commoner answer | chooses the answer shown first | no verdict |",
                  "|---:|---:|---:|---:|---:|---:|",
                  "| " + " | ".join(pct(r) for r in (j.consistency, j.wrong_over_right, j.wrong_over_right_pairs,
                                                   j.prefers_common, j.first_position, j.unparsed)) + " |"]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", action="append", help="an env label, e.g. arithmetic-L2 or wikiqa (repeatable; "
                        "default: arithmetic-L2 and wikiqa)")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "quickstart.toml",
                        help="a training config: its agent options, temperature and group size")
    parser.add_argument("--n", type=int, default=128, help="tasks per env")
    parser.add_argument("--signal", action="append", help="a signal to audit (repeatable; default: all four; with "
                        "--rescore, the others keep their saved values)")
    parser.add_argument("--num-generations", type=int, help="runs per task (default: the config's)")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-audit")
    parser.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    saved = parser.add_mutually_exclusive_group()
    saved.add_argument("--from-saved", action="store_true",
                       help="sample nothing: write the sections from the audits already saved under --out")
    saved.add_argument("--rescore", action="store_true",
                       help="sample nothing: compute the signals again, as they are now, on the runs saved under "
                       "--out (after a signal changed), and save the audits there")
    args = parser.parse_args()

    from rich.console import Console

    from agent.hf_policy import HFPolicy
    from training.audit import AuditReport, audit, rescore
    from training.config import load_config
    from training.signals import SIGNALS

    config = load_config(args.config)
    generations = args.num_generations or config.training.num_generations
    options = agent_options(args.config, config.agent.max_turns, temperature=config.agent.temperature)
    label = args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT) else args.config
    console = Console(stderr=True)  # progress bars
    names = args.env or ["arithmetic-L2", "wikiqa"]
    started, load = time.perf_counter(), load1()
    policy = None if args.from_saved else HFPolicy.from_pretrained(args.model)
    reports = [AuditReport.load(args.out / f"audit-{name}") for name in names] if args.from_saved else []
    try:
        for name in names if policy is not None else []:
            env, folder = env_by_label(name), args.out / f"audit-{name}"
            if args.rescore:
                report = rescore(policy, env, folder, signals=args.signal, model=args.model, console=console)
            else:
                report = audit(policy, env, n=args.n, generations=generations, model=args.model, console=console,
                               signals=args.signal or SIGNALS, **options_for(env, options))
            report.save(folder)
            reports.append(report)
            print("\n".join(env_table(report)), flush=True)
    finally:
        if policy is not None:
            policy.close()
    wall = (time.perf_counter() - started) / 60
    for report in reports:  # a section per env, so one env can be audited again without the others
        folder = args.out / f"audit-{report.env}"
        again = f"; signals computed again {report.created}" if report.sampled else ""
        timing = (f"Runs sampled {report.sampled or report.created}, saved in `{folder}`{again}"
                  + (f" ({wall:.1f} min)" if args.rescore else "") if args.from_saved or args.rescore else
                  f"Wall time: {wall:.1f} min for {', '.join(names)} (1-min load {load:.2f} at the start)")
        heading = f"{SECTION}: {report.env}"
        section = "\n".join([
            heading, "",
            "  \n".join([f"Command: `{command_line('bench_audit.py')}`", f"Date: {utc_now()}",
                         f"Machine: {machine()}", timing]),
            "", f"`{report.model or args.model}`, held-out tasks, {report.generations} runs per task sampled at "
            f"temperature {config.agent.temperature} under the agent options of `{label}` (JSON tool calls where an "
            "env has no python tool). A signal \"says right\" by the rule in its row; its precision is the share of "
            "the runs it pays that the answer key calls right, to set against the share of right runs. Rates in %, "
            "95% Wilson interval, (n) counted.", "", *env_table(report)])
        print(section)
        if not args.no_write:
            write_section(heading, section)


if __name__ == "__main__":
    main()
