"""Benchmark: the training loss's forward + backward, TRL's full rows vs the shared prefix encoded once.

One real rollout (``configs/quickstart.toml``: SmolLM2, arithmetic level 2, ``--rows`` trajectories,
temperature from the config) is scored by the trainer exactly as in training
(``_generate_and_score_completions``) and saved. Then every variant — ``share_prefix`` off/on ×
micro-batch sizes — runs the loss and its backward over the same batch in its own subprocess (so
each has its own peak memory), in alternating order over ``--rounds`` rounds. Every variant must
produce the same summed loss and gradient norm: that is checked and printed.

    .venv/bin/python bench/bench_loss.py [--rows 8] [--micro 1 4 8] [--rounds 2] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import ROOT, command_line, load1, machine, peak_rss_mib, utc_now, wait_for_quiet_cpu, write_section

SECTION = "## Training loss: shared prefix"
CONFIG = ROOT / "configs" / "quickstart.toml"


def build(rows: int) -> tuple[Any, Any]:
    from training.config import load_config
    from training.train import build_trainer

    cfg = load_config(CONFIG, {"training.tasks_per_step": rows // 4, "training.num_generations": 4,
                               "training.report_to": [], "training.micro_batch_size": 1})
    trainer, _ = build_trainer(cfg, Path(tempfile.mkdtemp(prefix="bench-loss-")))
    return trainer, cfg


def make_batch(rows: int, path: Path) -> dict[str, Any]:
    """One rollout, scored as in training, saved for the workers; returns its shape."""
    import torch

    trainer, _ = build(rows)
    dataset = trainer.train_dataset
    prompts = [dataset[i] for i in range(rows // 4) for _ in range(4)]
    inputs = trainer._generate_and_score_completions(prompts)
    torch.save(inputs, path)
    from training.shared_prefix import common_prefix_length

    mask = inputs["prompt_mask"].bool()
    prompts_real = [ids[m] for ids, m in zip(inputs["prompt_ids"], mask, strict=True)]
    return {"rows": rows, "prompt tokens": [len(p) for p in prompts_real],
            "completion tokens": inputs["completion_mask"].sum(1).tolist(),
            "shared prefix": common_prefix_length(prompts_real)}


def worker(path: Path, share: bool, micro: int) -> dict[str, float]:
    import torch

    inputs = torch.load(path, weights_only=False)
    rows = inputs["prompt_ids"].shape[0]
    trainer, _ = build(rows)
    trainer.share_prefix = share
    trainer.current_gradient_accumulation_steps = rows // micro
    model = trainer.model
    model.train()
    rss_before = peak_rss_mib()
    started = time.perf_counter()
    loss_sum = 0.0
    for start in range(0, rows, micro):
        part = {k: v[start : start + micro] if isinstance(v, torch.Tensor) and v.dim() and v.shape[0] == rows else v
                for k, v in inputs.items()}
        loss = trainer.compute_loss(model, part)
        loss.backward()
        loss_sum += loss.item()
    seconds = time.perf_counter() - started
    grad_norm = torch.sqrt(sum((p.grad.float() ** 2).sum() for p in model.parameters() if p.grad is not None))
    return {"seconds": seconds, "loss": loss_sum, "grad_norm": grad_norm.item(), "rss_before_mib": rss_before,
            "peak_rss_mib": peak_rss_mib()}


def run_variant(path: Path, share: bool, micro: int) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--worker", str(path), "--micro", str(micro)] + (["--share"] if share else [])
    load = load1()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"worker failed ({' '.join(cmd)}):\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["load"] = (load, load1())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=8, help="trajectories in the batch (a multiple of 4)")
    parser.add_argument("--micro", type=int, nargs="+", default=[1, 4, 8], help="micro-batch sizes to compare")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--share", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.share, args.micro[0])))
        return

    waited, load = wait_for_quiet_cpu()
    path = Path(tempfile.mkdtemp(prefix="bench-loss-")) / "inputs.pt"
    shape = make_batch(args.rows, path)
    print(json.dumps(shape))
    variants = [(share, micro) for micro in args.micro for share in (False, True)]
    results: dict[tuple[bool, int], list[dict[str, float]]] = {v: [] for v in variants}
    for r in range(args.rounds):
        for v in variants if r % 2 == 0 else variants[::-1]:
            res = run_variant(path, *v)
            results[v].append(res)
            print(f"share_prefix={v[0]} micro={v[1]}: {res}", flush=True)

    base = results[(False, args.micro[0])]
    base_s = sum(x["seconds"] for x in base)
    lines = ["| loss path | micro-batch | forward + backward (each round) | vs TRL, micro-batch "
             f"{args.micro[0]} | peak RSS (model loaded: before the loss) | summed loss | gradient norm |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for share, micro in variants:
        runs = results[(share, micro)]
        total = sum(x["seconds"] for x in runs)
        each = " / ".join(f"{x['seconds']:.1f}" for x in runs)
        lines.append(f"| {'shared prefix' if share else 'TRL full rows'} | {micro} | **{total / len(runs):.1f} s** "
                     f"({each}) | {base_s / total:.2f}× | {max(x['peak_rss_mib'] for x in runs) / 1024:.2f} GiB "
                     f"({runs[0]['rss_before_mib'] / 1024:.2f} GiB) | {runs[0]['loss']:.6f} | "
                     f"{runs[0]['grad_norm']:.6f} |")
    table = "\n".join(lines)
    print(table)
    if args.no_write:
        return
    prompts, completions = shape["prompt tokens"], shape["completion tokens"]
    loads = ", ".join(f"{x['load'][0]:.2f}/{x['load'][1]:.2f}" for v in variants for x in results[v])
    header = "  \n".join([
        f"Command: `{command_line('bench_loss.py')}`", f"Date: {utc_now()}", f"Machine: {machine()}",
        f"Load average (1 min) when the measurements started: {load:.2f} (after waiting {waited:.0f} s for < 1.0); "
        f"each run's load before/after: {loads}"])
    section = f"""{SECTION}

{header}

One real rollout of {shape["rows"]} trajectories (`configs/quickstart.toml`: SmolLM2-135M-Instruct, `arithmetic` \
level 2, 4 per task), scored by the trainer as in training; then TRL's loss (`compute_loss`) and its backward over \
that same batch, in micro-batches, each variant in its own process (peak RSS is that process's), \
{args.rounds} rounds in alternating order. Prompts {min(prompts)}–{max(prompts)} tokens, of which \
{shape["shared prefix"]} are common to all rows (system prompt and exemplars); completions \
{min(completions)}–{max(completions)} tokens (model turns, tool outputs and verify requests). The shared-prefix path \
(`training.share_prefix`, `training/shared_prefix.py`) encodes the common prefix once per micro-batch and runs only \
each row's own suffix; with micro-batch 1 there is nothing to share. Equal summed losses and gradient norms show \
every variant computes the same thing.

{table}
"""
    write_section(SECTION, section)


if __name__ == "__main__":
    main()
