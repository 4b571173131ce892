"""The main job, end to end on the embedded model: evaluate → train with self-correction rewards →
evaluate again → write a report, and print the before/after table."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.console import Console

from training.config import TrainConfig


def evaluate_config(policy: Any, config: TrainConfig, out: Path, console: Console, label: str,
                    env: Any = None) -> Any:
    """Greedy evaluation on the config's held-out tasks with its agent options and probes; saved to ``out``.
    ``env``: the config's env, when already built."""
    from agent.policy import SamplingParams
    from training.eval import evaluate

    report = evaluate(policy, [env or config.env.build()], n=config.env.eval_tasks, split="test",
                      seed=config.env.seed, console=console, model=label, probes=config.env.probes,
                      **config.agent.build_options(),
                      sampling=SamplingParams(temperature=0.0, max_new_tokens=config.agent.max_new_tokens))
    report.save(out)
    return report


def before_after_table(before: Any, after: Any) -> Any:
    """The eval table with two rows: the first env's baseline before and after training."""
    from training.eval import eval_table

    rows = [r.rows[0].model_copy(update={"config": f"{label} (n={r.rows[0].metrics.n})"})
            for label, r in (("before", before), ("after", after))]
    return eval_table(rows, title="Held-out tasks, greedy decoding")


def probe_before_after(before: Any, after: Any) -> Any:
    from training.eval import probe_table

    rows = [p.model_copy(update={"env": f"{label}: {p.env}"}) for label, r in (("before", before), ("after", after))
            for p in r.probes]
    return probe_table(rows)


def drop_checkpoints(run_dir: Path) -> None:
    """The demo's training is complete and never resumed: its checkpoints (weights and optimizer state,
    ≈1.6 GB each for SmolLM2) go; the trained model stays in ``final/``."""
    import shutil

    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)


def run_demo(config: TrainConfig, console: Console) -> Path:
    from agent.hf_policy import HFPolicy
    from agent.models import load_model
    from training.report import write_report
    from training.train import train

    run_dir = Path(config.output_dir)
    started = time.perf_counter()
    console.rule(f"1/4 evaluate {config.model.name} on {config.env.eval_tasks} held-out {config.env.name} tasks")
    env = config.env.build()  # a bad env or tool name fails before the model loads
    model, tokenizer = load_model(config.model.name)
    policy = HFPolicy(model, tokenizer)
    try:
        before = evaluate_config(policy, config, run_dir / "eval_before", console, config.model.name, env)
    finally:
        policy.close()
    console.rule(f"2/4 train for {config.training.steps} steps with self-correction rewards")
    train(config, console=console, model=model, tokenizer=tokenizer)
    drop_checkpoints(run_dir)
    console.rule("3/4 evaluate the trained model on the same tasks")
    trained = HFPolicy.from_pretrained(str(run_dir / "final"))
    try:
        after = evaluate_config(trained, config, run_dir / "eval_after", console, "trained", env)
    finally:
        trained.close()
    console.rule("4/4 report")
    html = write_report(run_dir)
    console.print(before_after_table(before, after))
    if before.probes:
        console.print(probe_before_after(before, after))
    console.print(f"report: {html}\nrun dir: {run_dir}   ({(time.perf_counter() - started) / 60:.1f} min in all)")
    return run_dir
