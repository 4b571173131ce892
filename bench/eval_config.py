"""Evaluate a model exactly as `anchorloop demo` does for a config (held-out tasks, greedy, the config's
agent options and probes), without training: how a prompt change or a checkpoint compares on the demo's
own terms.

    .venv/bin/python bench/eval_config.py --config configs/learning.toml --out runs/eval-base [--model PATH]
    .venv/bin/python bench/eval_config.py --rescore runs/eval-base   # metrics again from its trajectories
    .venv/bin/python bench/eval_config.py --config C --add-probes runs/eval-base --probe failed-calls
        # run a probe on a saved evaluation's baseline runs (same model), saved back into it
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _common import ROOT  # noqa: F401  (puts the project on sys.path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--model", help="a model to evaluate instead of the config's model.name")
    parser.add_argument("--rescore", type=Path, metavar="DIR",
                        help="recompute a saved evaluation's metrics from its trajectories (no model runs)")
    parser.add_argument("--add-probes", type=Path, metavar="DIR",
                        help="run probes on a saved evaluation's baseline runs (evaluated with --model or the "
                        "config's model) and save them into it")
    parser.add_argument("--probe", action="append", help="with --add-probes: the probe to run (repeatable; "
                        "default: the config's probes)")
    args = parser.parse_args()
    from rich.console import Console

    console = Console()
    if args.rescore:
        from training.eval import EvalReport

        report = EvalReport.load(args.rescore).rescored()
        report.save(args.rescore)
        console.print(report.table())
        if report.probes:
            console.print(report.probe_table())
        return
    if not args.config or not (args.out or args.add_probes):
        parser.error("--config and --out are required (or --rescore DIR, or --config and --add-probes DIR)")

    from agent.hf_policy import HFPolicy
    from anchorloop.demo import evaluate_config
    from training.config import load_config

    config = load_config(args.config)
    policy = HFPolicy.from_pretrained(args.model or config.model.name)
    try:
        if args.add_probes:
            report = with_probes(policy, config, args.add_probes, args.probe or config.env.probes, console)
        else:
            report = evaluate_config(policy, config, args.out, console, args.model or config.model.name)
    finally:
        policy.close()
    console.print(report.table())
    if report.probes:
        console.print(report.probe_table())


def with_probes(policy, config, saved: Path, probes: list[str], console):
    """The saved evaluation with ``probes`` added, run with the config's agent options, greedy."""
    from agent.policy import SamplingParams
    from training.eval import EvalReport, add_probes

    sampling = SamplingParams(temperature=0.0, max_new_tokens=config.agent.max_new_tokens)
    report = add_probes(EvalReport.load(saved), policy, [config.env.build()], probes, console=console,
                        **config.agent.build_options(), sampling=sampling)
    report.save(saved)
    return report


if __name__ == "__main__":
    main()
