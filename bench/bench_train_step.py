"""Benchmark: where the time of a GRPO training step goes (rollout, tools, TRL's loss and optimizer).

Builds the trainer exactly as ``anchorloop train`` does (``training.train.build_trainer``) from
``configs/quickstart.toml`` (SmolLM2, arithmetic level 2, 2 tasks × 4 generations per step), runs
``--steps`` steps in a temporary run directory with ``report_to=[]``, and times each step's parts by
wrapping the trainer's own methods (no product code is changed):

- rollout: the ``rollout_func`` call (agent graphs + policy + tools), and inside it the policy's
  busy time (``HFPolicy.stats.busy_s``: prefill + decode forward passes and sampling);
- tools: every ``python`` tool call's interval (a wrapper on ``PythonTool.arun``): their sum
  (tool-seconds) and their union (wall seconds during which at least one tool ran);
- TRL scoring: the rest of ``_generate_and_score_completions`` (rewards, advantages, and the no-grad
  forward passes for old/reference log-probs when the config needs them);
- loss forward (``compute_loss``) and backward (the rest of ``training_step``);
- optimizer and bookkeeping: the rest of the step (``on_step_begin`` → ``on_step_end``).

Peak memory is ``ru_maxrss`` of the process. Results go to stdout and replace the
``## Training step`` section of BENCHMARKS.md.

    .venv/bin/python bench/bench_train_step.py [--config configs/quickstart.toml] [--steps 2] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import ROOT, command_line, load1, machine, peak_rss_mib, utc_now, wait_for_quiet_cpu, write_section

SECTION = "## Training step"


class StepClock:
    """Per-step accumulators, filled by the wrappers below."""

    def __init__(self) -> None:
        self.steps: list[dict[str, float]] = []
        self.tool_intervals: list[tuple[float, float]] = []
        self.current: dict[str, float] = {}

    def add(self, key: str, seconds: float) -> None:
        self.current[key] = self.current.get(key, 0.0) + seconds


def union_length(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b > end:
            total += b - max(a, end)
            end = b
    return total


def instrument(trainer: Any, rollout: Any, clock: StepClock) -> None:
    from transformers import TrainerCallback

    from tools.python_exec import PythonTool

    original_arun = PythonTool.arun

    async def timed_arun(self: Any, args: Any) -> Any:
        started = time.perf_counter()
        try:
            return await original_arun(self, args)
        finally:
            clock.tool_intervals.append((started, time.perf_counter()))

    PythonTool.arun = timed_arun

    def wrap(name: str, key: str, before: Any = None, after: Any = None) -> None:
        inner = getattr(trainer, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            state = before() if before else None
            started = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                clock.add(key, time.perf_counter() - started)
                if after:
                    after(state)

        setattr(trainer, name, timed)

    def busy() -> float:
        return rollout.policy.stats.busy_s if rollout._inner is not None else 0.0

    def tools_before() -> tuple[int, float]:
        return len(clock.tool_intervals), busy()

    def tools_after(state: tuple[int, float]) -> None:
        start, busy_before = state
        calls = clock.tool_intervals[start:]
        clock.add("policy_busy", busy() - busy_before)
        clock.add("tool_sum", sum(b - a for a, b in calls))
        clock.add("tool_union", union_length(calls))
        clock.add("tool_calls", len(calls))

    wrap("rollout_func", "rollout", tools_before, tools_after)
    wrap("_generate_and_score_completions", "generate_and_score")
    wrap("compute_loss", "loss_forward")
    wrap("training_step", "training_step")

    class Clock(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            clock.current = {"started": time.perf_counter(), "load_before": load1()}

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            clock.current["step"] = time.perf_counter() - clock.current.pop("started")
            clock.current["load_after"] = load1()
            clock.current["rss_mib"] = peak_rss_mib()
            clock.steps.append(clock.current)

    trainer.add_callback(Clock())


def breakdown(step: dict[str, float]) -> dict[str, float]:
    rollout = step.get("rollout", 0.0)
    training_step = step.get("training_step", 0.0)
    prepare = step.get("generate_and_score", 0.0)
    return {
        "rollout (rollout_func)": rollout,
        "  policy busy (prefill + decode)": step.get("policy_busy", 0.0),
        "  policy idle (graph, tools, scoring waits)": rollout - step.get("policy_busy", 0.0),
        "TRL scoring (rewards, advantages, old/ref log-probs if needed)": prepare - rollout,
        "loss forward (compute_loss)": step.get("loss_forward", 0.0),
        "backward": training_step - prepare - step.get("loss_forward", 0.0),
        "optimizer step and bookkeeping": step["step"] - training_step,
        "whole step": step["step"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "quickstart.toml")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--model", default=None, help="override model.name (e.g. tiny-random for a dry run)")
    parser.add_argument("--max-wait", type=float, default=900.0, help="seconds to wait for a quiet CPU")
    parser.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    args = parser.parse_args()

    import torch

    from training.config import load_config
    from training.train import build_trainer

    run_dir = Path(tempfile.mkdtemp(prefix="bench-train-step-"))
    overrides: dict[str, Any] = {"output_dir": str(run_dir), "training.steps": args.steps,
                                 "training.report_to": [], "training.save_steps": 10_000}
    if args.model:
        overrides["model.name"] = args.model
    config = load_config(args.config, overrides)
    rss_start = peak_rss_mib()
    started = time.perf_counter()
    trainer, rollout = build_trainer(config, run_dir)
    policy = rollout.policy  # build policy and agent now (the exemplars run the tool once), not inside step 1
    build_s = time.perf_counter() - started
    rss_built = peak_rss_mib()
    clock = StepClock()
    instrument(trainer, rollout, clock)

    waited, load_start = wait_for_quiet_cpu(max_wait_s=args.max_wait)
    started = time.perf_counter()
    try:
        trainer.train()
    finally:
        policy.close()
    train_s = time.perf_counter() - started
    logged = [h for h in trainer.state.log_history if "step_time" in h]
    trajectories = []
    for step in range(args.steps):
        path = run_dir / "trajectories" / f"step_{step:05d}.jsonl"
        trajectories.append([json.loads(line) for line in path.read_text().splitlines()] if path.exists() else [])
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]

    parts = [breakdown(s) for s in clock.steps]
    header = "| part | " + " | ".join(f"step {i + 1}" for i in range(len(parts))) + " | share (all steps) |"
    rows = [header, "|---|" + "---:|" * (len(parts) + 1)]
    total = sum(p["whole step"] for p in parts)
    for name in parts[0]:
        values = " | ".join(f"{p[name]:.1f} s" for p in parts)
        share = sum(p[name] for p in parts) / total
        label = f"**{name}**" if name == "whole step" else name.replace("  ", "↳ ")
        rows.append(f"| {label} | {values} | {share:.0%} |")
    extra = ["| measure | " + " | ".join(f"step {i + 1}" for i in range(len(parts))) + " |",
             "|---|" + "---:|" * len(parts)]

    def line(label: str, values: list[str]) -> None:
        extra.append(f"| {label} | " + " | ".join(values) + " |")

    line("trajectories", [str(len(t)) for t in trajectories])
    line("model tokens (sampled)", [str(sum(sum(x["env_mask"]) for x in t)) for t in trajectories])
    line("rollout tokens/s (train_log)", [f"{e['tokens_per_s']:.1f}" for e in log])
    vocab = trainer.model.config.vocab_size

    def widths(t: list) -> tuple[int, int]:
        return max(len(x["prompt_ids"]) for x in t), max(len(x["completion_ids"]) for x in t)

    line("loss batch: rows × (longest prompt + longest completion)",
         [f"{len(t)} × ({widths(t)[0]} + {widths(t)[1]})" for t in trajectories])
    line("fp32 logits over the completions (rows × longest × vocab)",
         [f"{len(t) * widths(t)[1] * vocab * 4 / 2**30:.2f} GiB" for t in trajectories])
    line("python tool calls", [f"{s.get('tool_calls', 0):.0f}" for s in clock.steps])
    line("tool-seconds (sum of call intervals)", [f"{s.get('tool_sum', 0):.2f} s" for s in clock.steps])
    line("Σ trajectory `timings.tools_s`", [f"{sum(x['timings']['tools_s'] for x in t):.2f} s" for t in trajectories])
    line("wall with ≥ 1 tool running (union of intervals)", [f"{s.get('tool_union', 0):.2f} s" for s in clock.steps])
    line("TRL `step_time` (its `training_step` timer)", [f"{h['step_time']:.1f} s" for h in logged])
    line("peak RSS after the step", [f"{s['rss_mib'] / 1024:.2f} GiB" for s in clock.steps])
    line("load 1-min before / after", [f"{s['load_before']:.2f} / {s['load_after']:.2f}" for s in clock.steps])
    print("\n".join(rows + [""] + extra))
    if args.no_write:
        return
    cfg = config
    shown = args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT) else args.config
    section = "\n".join([
        SECTION,
        "",
        f"Command: `{command_line('bench_train_step.py')}`  ",
        f"Date: {utc_now()}  ",
        f"Machine: {machine()}, torch {torch.__version__} ({torch.get_num_threads()} threads), CPU only  ",
        f"Load average (1 min) when training started: {load_start:.2f} (after waiting {waited:.0f} s for < 1.0; "
        "other jobs may share the machine)",
        "",
        f"`training.train.build_trainer` on `{shown}` ({cfg.model.name}, {cfg.env.name} {cfg.env.kwargs}, "
        f"{cfg.training.tasks_per_step} tasks × {cfg.training.num_generations} generations per step, "
        f"`{cfg.agent.protocol}` protocol, ≤ {cfg.agent.max_turns} turns of ≤ {cfg.agent.max_new_tokens} tokens, "
        f"temperature {cfg.agent.temperature}, self-correct "
        f"{'on' if cfg.agent.self_correct else 'off'}, {'LoRA' if cfg.model.lora else 'full fine-tuning'}, "
        f"`activation_checkpointing=False`), {args.steps} steps, `report_to=[]`, temporary run directory. Times "
        "come from wrappers around the trainer's own methods: rollout = the `rollout_func` call; policy busy = "
        "`HFPolicy.stats.busy_s` during it (forward passes and sampling), policy idle = the rest of the rollout "
        "(waiting on tools, graph steps, scoring); TRL scoring = `_generate_and_score_completions` minus the "
        "rollout (rewards and advantages; TRL adds a no-grad forward for old log-probs only when generation and "
        "optimizer steps are out of step or with vLLM, and for reference log-probs only when `beta` > 0, "
        f"here {cfg.training.beta:g}); loss forward = "
        "`compute_loss`; backward = `training_step` minus those two; optimizer and bookkeeping = the rest of "
        "the step (`on_step_begin` → `on_step_end`). Tools: every `python` call's interval is recorded (a wrapper "
        "on `PythonTool.arun`); their sum is tool-seconds, their union the wall time during which at least one "
        "tool ran, which overlaps with decoding of the other trajectories.",
        "",
        *rows,
        "",
        *extra,
        "",
        f"Model load, trainer construction and the agent's build (done before step 1, as the first rollout would "
        f"otherwise do): {build_s:.1f} s, not part of any step. Peak RSS: "
        f"{rss_start / 1024:.2f} GiB at start, {rss_built / 1024:.2f} GiB with the trainer built, "
        f"{peak_rss_mib() / 1024:.2f} GiB at the end ({train_s:.0f} s of training in all).",
        "",
    ])
    write_section(SECTION, section)
    print(f"updated BENCHMARKS.md ({SECTION})")


if __name__ == "__main__":
    main()
