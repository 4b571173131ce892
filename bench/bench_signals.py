"""Benchmark: train on each label-free signal in place of the answer key, then evaluate against the key.

Each ``--signal`` gets a run derived from ``--config``, with the same recipe and budget. Its rewards are the
signal at weight 1 and the config's ``format`` term; the terms that read the answer key (``correctness``,
``progress``, ``check``) are 0. There are no injected first attempts, since those are made with the answer
key. The ``answer-key`` row keeps the config's rewards and also drops injection, so every row samples the same
kind of batch. Each run is trained (``training.train.train``) and evaluated on the config's held-out tasks,
greedy, as ``anchorloop demo`` evaluates. One table goes into BENCHMARKS.md, with per signal:
- its audited precision (from ``--audit DIR``'s ``audit.json``, when given);
- held-out Acc@t1, Acc@t2, Δi→c and Δc→i against the base model;
- answer diversity and the share of groups without signal over the training steps;
- minutes (training and evaluation, as first measured).

A killed benchmark picks up where it stopped: finished runs and evaluations under ``--out`` are reused, and an
unfinished run resumes from its checkpoint.

    .venv/bin/python bench/bench_signals.py --config configs/quickstart.toml \\
        --audit runs/bench-audit/audit-arithmetic-L2 [--signal majority --signal tool_check ...]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

from _common import ROOT, command_line, load1, machine, utc_now, write_section

SECTION = "## Training on each label-free signal"
KEY = "answer-key"
KEY_TERMS = {"correctness": 0.0, "progress": 0.0, "check": 0.0}  # the reward terms that read the answer key


def signal_config(config: Any, signal: str, out: Path) -> Any:
    """``config`` with ``signal`` at weight 1 in place of the terms that read the answer key (``KEY_TERMS``), the
    other signals at 0, no injected first attempts, and its run in ``out/signal``. The config's other terms
    (``format``, ``tool``) and ``training.belief_turns`` stay as they are."""
    from training.config import RewardConfig
    from training.signals import SIGNALS

    rewards = config.rewards if signal == KEY else RewardConfig.model_validate(
        config.rewards.model_dump() | KEY_TERMS | dict.fromkeys(SIGNALS, 0.0) | {signal: 1.0})
    training = config.training.model_copy(update={"injected_errors": 0.0})
    return config.model_copy(update={"rewards": rewards, "training": training, "output_dir": str(out / signal)})


def train_once(config: Any, console: Any) -> Path:
    """The run's model, trained unless a finished one is there (an unfinished one resumes); its checkpoints
    are dropped once the model is saved (1.6 GB each for SmolLM2)."""
    from training.train import train

    run = Path(config.output_dir)
    if not (run / "final" / "config.json").is_file():
        train(config, resume=(run / "train_log.jsonl").exists(), console=console)
    shutil.rmtree(run / "checkpoints", ignore_errors=True)
    return run / "final"


def evaluate_once(model: str, config: Any, out: Path, console: Any) -> Any:
    """The held-out evaluation of ``model`` under ``config``, saved in ``out`` (reused when already there)."""
    from agent.hf_policy import HFPolicy
    from anchorloop.demo import evaluate_config
    from training.eval import EVAL_FILE, EvalReport

    if (out / EVAL_FILE).is_file():
        return EvalReport.load(out)
    policy = HFPolicy.from_pretrained(model)
    try:
        return evaluate_config(policy, config, out, console, model)
    finally:
        policy.close()


def training_log(run: Path) -> list[dict[str, Any]]:
    path = run / "train_log.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    return [r for r in rows if "answer_diversity" in r]


def audited_precision(audit: Path | None, signal: str) -> str:
    if signal == KEY:
        return "100 (the key)"
    if audit is None or not (audit / "audit.json").is_file():
        return "–"
    from training.audit import AuditReport

    found = [a for a in AuditReport.load(audit).audits if a.signal == signal]
    if not found or not found[0].precision.n:
        return "–"
    p = found[0].precision
    return f"{100 * p.value:.1f} [{100 * p.low:.0f}, {100 * p.high:.0f}]"


def pct(rate: Any) -> str:
    return f"{100 * rate.value:.1f}" if rate.n else "–"


def row(signal: str, audit: Path | None, before: Any, after: Any, log: list[dict[str, Any]],
        minutes: float | None) -> str:
    b, a = before.rows[0].metrics, after.rows[0].metrics
    change = f"{100 * (a.acc_t2.value - b.acc_t2.value):+.1f}"
    diversity = f"{log[0]['answer_diversity']:.2f} → {log[-1]['answer_diversity']:.2f}" if log else "–"
    no_signal = f"{100 * sum(r['no_signal_fraction'] for r in log) / len(log):.0f}" if log else "–"
    interval = f"[{100 * a.acc_t2.low:.0f}, {100 * a.acc_t2.high:.0f}]"
    return (f"| `{signal}` | {audited_precision(audit, signal)} | {pct(a.acc_t1)} | {pct(a.acc_t2)} {interval} "
            f"| {change} | {pct(a.delta_i_to_c)} | {pct(a.delta_c_to_i)} | {diversity} "
            f"| {no_signal} | {'–' if minutes is None else f'{minutes:.1f}'} |")


def row_minutes(evaluation: Path, seconds: float, *, measured: bool) -> float | None:
    """Minutes of a row's training and evaluation, kept beside its evaluation: a row reused from an earlier
    run reports the minutes it took then (``None`` when that run kept none). ``measured``: the row was
    evaluated now, so ``seconds`` is its time."""
    path = evaluation / "minutes.json"
    if measured:
        path.write_text(json.dumps({"minutes": seconds / 60}))
        return seconds / 60
    return json.loads(path.read_text())["minutes"] if path.is_file() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "quickstart.toml",
                        help="the recipe every run shares (steps, batch, learning rate, agent options)")
    parser.add_argument("--signal", action="append", help=f"{KEY} or a label-free signal (repeatable; default: "
                        f"{KEY}, majority, tool_check, belief, self_judge)")
    parser.add_argument("--audit", type=Path, help="a saved audit (bench_audit.py's OUT/audit-ENV) of the same env "
                        "and agent options: its precision per signal goes in the table")
    parser.add_argument("--eval-tasks", type=int, help="held-out tasks per evaluation (default: the config's "
                        "env.eval_tasks); trained models under --out are reused, evaluated again at this size")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-signals")
    parser.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    args = parser.parse_args()

    from rich.console import Console

    from training.config import load_config
    from training.eval import EVAL_FILE
    from training.signals import SIGNALS

    signals = args.signal or [KEY, "majority", "tool_check", "belief", "self_judge"]
    unknown = [s for s in signals if s != KEY and s not in SIGNALS]
    if unknown:
        parser.error(f"unknown signal {unknown[0]!r}: choose from {KEY}, {', '.join(SIGNALS)}")
    config = load_config(args.config)
    if args.eval_tasks:
        config = config.model_copy(update={"env": config.env.model_copy(update={"eval_tasks": args.eval_tasks})})
    console = Console(stderr=True)
    started, load = time.perf_counter(), load1()
    size = f"n{config.env.eval_tasks}"  # evaluations of each size kept apart
    before = evaluate_once(config.model.name, config, args.out / f"eval-base-{size}", console)
    lines = []
    for signal in signals:
        run_config = signal_config(config, signal, args.out)
        clock, evaluation = time.perf_counter(), args.out / f"eval-{signal}-{size}"
        measured = not (evaluation / EVAL_FILE).is_file()
        final = train_once(run_config, console)
        after = evaluate_once(str(final), run_config, evaluation, console)
        lines.append(row(signal, args.audit, before, after, training_log(final.parent),
                         row_minutes(evaluation, time.perf_counter() - clock, measured=measured)))
        print(lines[-1], flush=True)
    b = before.rows[0].metrics
    label = args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT) else args.config
    tr = config.training
    section = "\n".join([
        SECTION, "",
        "  \n".join([f"Command: `{command_line('bench_signals.py')}`", f"Date: {utc_now()}", f"Machine: {machine()}",
                     f"Wall time: {(time.perf_counter() - started) / 60:.1f} min (1-min load {load:.2f} at the start; "
                     "minutes per row include its evaluation, as measured when the row was first run)"]), "",
        f"Recipe: `{label}` ({config.env.name} {config.env.kwargs}, {tr.steps} steps of {tr.tasks_per_step} tasks × "
        f"{tr.num_generations} runs, lr {tr.learning_rate}), no injected first attempts. Each row trains with its "
        "signal at weight 1 and `format` and `tool` as configured; `correctness`, `progress` and `check` (they "
        f"read the answer key) are 0, except in the `{KEY}` row. Evaluation: {b.n} held-out tasks, greedy, "
        "against the answer key. "
        f"Base model: Acc@t1 {pct(b.acc_t1)}, Acc@t2 {pct(b.acc_t2)}. Precision: the share of runs the signal "
        "paid that were right, in the audit named in the command. Diversity: distinct final answers per group "
        "over the group size, first → last training step (1/G would be collapse). No signal: the share of groups "
        "whose rewards were all equal, mean over steps.", "",
        "| reward | audited precision | Acc@t1 | Acc@t2 [95% CI] | Acc@t2 change | Δi→c | Δc→i | diversity "
        "| no signal (%) | minutes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|", *lines])
    print(section)
    if not args.no_write:
        write_section(SECTION, section)


if __name__ == "__main__":
    main()
