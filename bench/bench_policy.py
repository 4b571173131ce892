"""Benchmark: generation backends on CPU, same prompts, same number of new tokens.

(i)   one sequence at a time with ``model.generate``;
(ii)  one left-padded batch of all prompts with ``model.generate``;
(iii) transformers' continuous batching, ``model.generate_batch``;
(iv)  ``HFPolicy`` with all prompts submitted as concurrent ``generate`` calls.

Greedy decoding, and no early stop anywhere (EOS suppressed or disabled), so every backend produces
exactly ``--new-tokens`` tokens per prompt. Each backend gets one untimed warm-up call first. Results
go to stdout and replace the ``## Generation backends`` section of BENCHMARKS.md.

    .venv/bin/python bench/bench_policy.py [--prompts 16] [--new-tokens 64] [--no-write]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from _common import command_line, in_worker_thread, load1, machine, utc_now, wait_for_quiet_cpu, write_section

SECTION = "## Generation backends"
MODEL_NAMES = {"smollm2-135m": "SmolLM2-135M-Instruct"}


def left_padded(prompts: list[list[int]], pad: int) -> tuple[Any, Any]:
    import torch

    width = max(map(len, prompts))
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask


def paged_cache_for(prompts: list[list[int]], new_tokens: int, page_size: int = 256) -> Any:
    """A paged KV cache sized for this workload. Left to itself, ``generate_batch`` sizes the cache from
    free memory (~15 GB here), which costs seconds per call on CPU and fails when memory is short."""
    from transformers.generation.configuration_utils import ContinuousBatchingConfig

    per_request = math.ceil((max(map(len, prompts)) + new_tokens) / page_size)
    return ContinuousBatchingConfig(page_size=page_size, num_blocks=len(prompts) * (per_request + 1),
                                    max_batch_tokens=max(page_size, sum(map(len, prompts))))


def backends(model: Any, tok: Any, new_tokens: int) -> dict[str, Callable[[list[list[int]]], list[int]]]:
    """name → function(prompts) returning the number of new tokens produced per prompt."""
    import torch
    from transformers import GenerationConfig

    from agent.hf_policy import HFPolicy
    from agent.policy import SamplingParams

    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    config = GenerationConfig(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                              eos_token_id=tok.eos_token_id, pad_token_id=pad)

    def one_at_a_time(prompts: list[list[int]]) -> list[int]:
        counts = []
        with torch.inference_mode():
            for p in prompts:
                ids = torch.tensor([p])
                out = model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=config)
                counts.append(out.shape[1] - len(p))
        return counts

    def padded_batch(prompts: list[list[int]]) -> list[int]:
        ids, mask = left_padded(prompts, pad)
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=mask, generation_config=config)
        return [out.shape[1] - ids.shape[1]] * len(prompts)

    # generate_batch has no min_new_tokens; without an eos id it never stops early
    cb_config = GenerationConfig(max_new_tokens=new_tokens, do_sample=False, eos_token_id=None, pad_token_id=pad)

    def continuous_batching(prompts: list[list[int]]) -> list[int]:
        out = model.generate_batch(inputs=prompts, generation_config=cb_config, progress_bar=False,
                                   continuous_batching_config=paged_cache_for(prompts, new_tokens))
        return [len(o.generated_tokens) for o in out.values()]

    sampling = SamplingParams(temperature=0.0, max_new_tokens=new_tokens)

    def hf_policy(prompts: list[list[int]]) -> list[int]:
        policy = HFPolicy(model, tok, max_batch_size=len(prompts))
        policy.eos_ids = set()  # no early stop: every request runs to max_new_tokens

        async def all_at_once() -> list:
            return await asyncio.gather(*[policy.generate(p, sampling) for p in prompts])

        try:
            return [len(g.token_ids) for g in asyncio.run(all_at_once())]
        finally:
            policy.close()

    return {
        "(i) `model.generate`, one sequence at a time": one_at_a_time,
        "(ii) `model.generate`, one padded batch": padded_batch,
        "(iii) `model.generate_batch` (transformers continuous batching)": continuous_batching,
        "(iv) `HFPolicy`, concurrent `generate` calls": hf_policy,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", help="model spec for agent.models.load_model")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=4,
                        help="repeat every backend this many times, alternating the order; totals are reported")
    parser.add_argument("--max-wait", type=float, default=900.0, help="seconds to wait for a quiet CPU")
    parser.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    args = parser.parse_args()

    import torch

    from agent.models import load_model
    from envs.arithmetic import ArithmeticEnv

    logging.getLogger("ContinuousBatchingLogger").setLevel(logging.ERROR)
    model, tok = load_model(args.model, device="cpu")
    tasks = ArithmeticEnv(level=1).tasks("test", n=args.prompts, seed=0)
    prompts = [list(tok.apply_chat_template([{"role": "user", "content": t.question}], add_generation_prompt=True,
                                            tokenize=True, return_dict=False)) for t in tasks]
    runs = backends(model, tok, args.new_tokens)
    for run in runs.values():  # warm-up: first-call allocations, kernel choices, the CB manager's setup
        run(prompts[:2])

    waited, load_start = wait_for_quiet_cpu(max_wait_s=args.max_wait)
    sequential = next(iter(runs))
    names = list(runs)
    results: dict[str, dict[str, list]] = {name: {"s": [], "n": [], "per": [], "load": []} for name in names}
    for round_ in range(args.rounds):
        for name in names if round_ % 2 == 0 else names[::-1]:  # alternate the order: linear drift cancels
            # one sequence at a time: a different slice of the prompts each round (all once in total)
            batch = prompts[round_::args.rounds] if name == sequential else prompts
            before = load1()
            started = time.perf_counter()
            counts = in_worker_thread(lambda run=runs[name], batch=batch: run(batch))
            seconds = time.perf_counter() - started
            r = results[name]
            r["s"].append(seconds)
            r["n"].append(sum(counts))
            r["per"].extend(counts)
            r["load"] += [before, load1()]
            print(f"round {round_ + 1}, {name}: {sum(counts)} tokens in {seconds:.1f} s = "
                  f"{sum(counts) / seconds:.1f} tok/s", flush=True)

    def rate(name: str) -> float:
        return sum(results[name]["n"]) / sum(results[name]["s"])

    base_rate = rate("(ii) `model.generate`, one padded batch")
    table = ["| backend | wall (all rounds) | new tokens (per prompt) | tokens/s (each round) | vs (ii) | load 1-min |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        per = f"{min(r['per'])}" if min(r["per"]) == max(r["per"]) else f"{min(r['per'])}–{max(r['per'])}"
        rounds = " / ".join(f"{n / s:.1f}" for n, s in zip(r["n"], r["s"]))
        table.append(f"| {name} | {sum(r['s']):.1f} s | {sum(r['n'])} ({per}) | **{rate(name):.1f}** ({rounds}) | "
                     f"{rate(name) / base_rate:.2f}× | {min(r['load']):.2f}–{max(r['load']):.2f} |")
    print("\n".join(table))
    if args.no_write:
        return
    lens = sorted(map(len, prompts))
    span = f"{lens[0]}" if lens[0] == lens[-1] else f"{lens[0]}–{lens[-1]}"
    section = "\n".join([
        SECTION,
        "",
        f"Command: `{command_line('bench_policy.py')}`  ",
        f"Date: {utc_now()}  ",
        f"Machine: {machine()}, torch {torch.__version__} ({torch.get_num_threads()} threads), CPU only  ",
        f"Load average (1 min) when the measurements started: {load_start:.2f} (after waiting {waited:.0f} s for "
        "< 1.0; other jobs may share the machine)",
        "",
        f"{MODEL_NAMES.get(args.model, args.model)} (fp32), {len(prompts)} prompts (`arithmetic` level-1 questions "
        f"in the model's own chat template, {span} tokens), greedy, exactly {args.new_tokens} new "
        "tokens per prompt in every backend (EOS suppressed with `min_new_tokens`, disabled for `generate_batch`, "
        "removed from `HFPolicy.eos_ids`). `generate_batch` gets a paged cache sized for the workload "
        "(`ContinuousBatchingConfig(num_blocks=…, max_batch_tokens=…)`): by default it sizes the cache from free "
        "memory, ≈15 GB here, which costs seconds per call on CPU and fails when other jobs hold memory. "
        "Each backend had one untimed warm-up call on two prompts. Every backend runs "
        f"{args.rounds}× in alternating order (forward, backward, …), so a linear drift in machine load hits all "
        "alike; tokens/s is the total over the rounds (each round's rate in brackets), ratios are against the "
        "padded batch (ii). (i) runs a different slice of the prompts each round (all once in total): its rate "
        "does not depend on the count. Each measurement runs in a fresh worker thread (see `bench/_common.py`).",
        "",
        *table,
        "",
    ])
    write_section(SECTION, section)
    print(f"updated BENCHMARKS.md ({SECTION})")


if __name__ == "__main__":
    main()
