"""Benchmark: rollout throughput of the agent engine against a naive loop, TRL's ``tools=`` loop and the
plain batched-``generate`` ceiling, on the same model, tasks, prompts, sampling and turn budget.

(a) engine   ``training.rollout.rollout`` over the agent graph with ``HFPolicy``, all trajectories at once.
(b) naive    the same agent graph, one trajectory after another, each turn a plain ``model.generate``.
(c) TRL      ``GRPOTrainer(tools=[python])``: its own generate → tools → generate loop, lockstep over
             the batch; only its generation + tool loop (``GRPOTrainer._generate``) is timed.
(d) ceiling  one left-padded ``model.generate`` of the first prompts, as many tokens as (a) produced.

Everyone sees the same conversation: SmolLM2 with TRL's Qwen2.5 tool template, the agent's system
prompt and its two worked exemplars, the ``json`` tool-call protocol, the same ``python`` sandbox
and the same observation text. (a) and (c) are repeated with a tool whose latency varies (a seeded
0–200 ms sleep per distinct piece of code). Results go to stdout and replace the
``## Rollout throughput`` section of BENCHMARKS.md.

    .venv/bin/python bench/bench_rollout.py [--tasks 16] [--level 1] [--max-new-tokens 64]
        [--max-turns 4] [--naive-variable] [--no-write]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

from _common import command_line, in_worker_thread, load1, machine, utc_now, wait_for_quiet_cpu, write_section

SECTION = "## Rollout throughput"
MODEL = "smollm2-135m"
MODEL_NAMES = {MODEL: "SmolLM2-135M-Instruct"}


# -- the tool, with optional variable latency -------------------------------------------------------


@dataclass
class ToolLatency:
    """A sleep before each tool call, uniform in [0, max_s], fixed per piece of code (seeded), so the
    engines that run the same code wait the same time. Also counts calls and tool seconds."""

    max_s: float = 0.0
    seed: int = 0
    calls: int = 0
    seconds: float = 0.0

    def delay(self, code: str) -> float:
        return random.Random(f"{self.seed}/{code}").uniform(0.0, self.max_s) if self.max_s > 0 else 0.0

    def reset(self, max_s: float) -> None:
        self.max_s, self.calls, self.seconds = max_s, 0, 0.0


def delayed_tool(inner: Any, latency: ToolLatency) -> Any:
    """The agent-facing ``python`` tool, sleeping ``latency.delay(code)`` first."""
    from tools import Tool

    class DelayedPython(Tool):
        name, description, args_schema = inner.name, inner.description, inner.args_schema

        async def arun(self, args: Any) -> Any:
            started = time.perf_counter()
            try:
                await asyncio.sleep(latency.delay(args.code))
                return await inner.arun(args)
            finally:
                latency.calls += 1
                latency.seconds += time.perf_counter() - started

    return DelayedPython()


def trl_python_function(sandbox: Any, description: str, latency: ToolLatency) -> Any:
    """The same tool as a plain function, the form TRL's ``tools=`` takes (schema from the docstring)."""
    from tools.python_exec import format_result, strip_code_fences

    def python(code: str) -> str:
        started = time.perf_counter()
        try:
            time.sleep(latency.delay(code))
            return format_result(sandbox.run(strip_code_fences(code)), sandbox)
        finally:
            latency.calls += 1
            latency.seconds += time.perf_counter() - started

    python.__doc__ = f"{description}\n\nArgs:\n    code: Python 3 source code to run. Use print() to show results.\n"
    return python


# -- (b): a policy that is one plain model.generate per turn ----------------------------------------


def eos_ids(model: Any, tokenizer: Any) -> list[int]:
    ids = {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")}
    configured = model.generation_config.eos_token_id
    ids.update(configured if isinstance(configured, list) else [configured] if configured is not None else [])
    return sorted(i for i in ids if isinstance(i, int))


class NaiveGeneratePolicy:
    """The Policy protocol on plain ``model.generate``, one sequence at a time, no cache between turns."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.eos = eos_ids(model, tokenizer)
        self.prefill_tokens = 0

    async def generate(self, prompt_ids: list[int], sampling: Any, *, on_text: Any = None) -> Any:
        return await asyncio.to_thread(self._generate, prompt_ids, sampling)

    def _generate(self, prompt_ids: list[int], sampling: Any) -> Any:
        import torch
        from transformers import GenerationConfig

        from agent.policy import Generation

        greedy = sampling.temperature == 0
        config = GenerationConfig(
            max_new_tokens=sampling.max_new_tokens, do_sample=not greedy, eos_token_id=self.eos,
            pad_token_id=self.tokenizer.pad_token_id or self.eos[0], stop_strings=sampling.stop or None,
            return_dict_in_generate=True, output_scores=True,
            **({} if greedy else {"temperature": sampling.temperature, "top_p": sampling.top_p,
                                  "top_k": sampling.top_k or None}),
        )
        ids = torch.tensor([prompt_ids], device=self.model.device)
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        with torch.inference_mode():
            out = self.model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=config,
                                      tokenizer=self.tokenizer)
            logprobs = self.model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
        tokens = out.sequences[0, len(prompt_ids):].tolist()
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        if tokens and tokens[-1] in self.eos:
            reason = "eos"
        elif any(s in self.tokenizer.decode(tokens[-24:]) for s in sampling.stop):
            reason = "stop"
        else:
            reason = "length"
        self.prefill_tokens += len(prompt_ids)
        return Generation(token_ids=tokens, logprobs=logprobs[0].tolist(), text=text, finish_reason=reason)


# -- measurements -----------------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    latency: str
    seconds: float
    tokens: int
    trajectories: int
    turns: int = 0  # model turns (generate calls per trajectory, summed)
    prefill: int = 0  # prompt tokens run through the model before decoding (padding excluded)
    tool_calls: int = 0
    tool_s: float = 0.0
    correct: int = 0
    loads: list[float] = field(default_factory=list)  # 1-min load before and after each round
    notes: dict[str, float] = field(default_factory=dict)  # counters, summed over rounds
    rates: list[float] = field(default_factory=list)  # tokens/s of each round

    @property
    def tok_s(self) -> float:
        return self.tokens / self.seconds

    @property
    def traj_s(self) -> float:
        return self.trajectories / self.seconds

    def merge(self, other: Result) -> Result:
        notes = {k: self.notes.get(k, 0) + other.notes.get(k, 0) for k in {**self.notes, **other.notes}}
        return Result(self.name, self.latency, self.seconds + other.seconds, self.tokens + other.tokens,
                      self.trajectories + other.trajectories, self.turns + other.turns, self.prefill + other.prefill,
                      self.tool_calls + other.tool_calls, self.tool_s + other.tool_s, self.correct + other.correct,
                      self.loads + other.loads, notes, self.rates + other.rates)


def timed(fn: Any) -> tuple[Any, float, list[float]]:
    before = load1()
    started = time.perf_counter()
    value = in_worker_thread(fn)
    seconds = time.perf_counter() - started
    return value, seconds, [before, load1()]


def summarize(name: str, latency: str, trajs: list, seconds: float, loads: list[float],
              tool: ToolLatency) -> Result:
    tokens = sum(t.num_model_tokens for t in trajs)
    return Result(name, latency, seconds, tokens, len(trajs), turns=sum(t.turns for t in trajs),
                  tool_calls=tool.calls, tool_s=tool.seconds, correct=sum(t.last_score >= 0.5 for t in trajs),
                  loads=loads, rates=[tokens / seconds])


def run_engine(ctx: dict, latency_s: float) -> tuple[Result, list]:
    from agent.graph import build_agent
    from agent.hf_policy import HFPolicy
    from training.rollout import rollout

    env, tasks, tool = ctx["env"], ctx["tasks"], ctx["tool"]
    policy = HFPolicy(ctx["model"], ctx["tok"], max_batch_size=len(tasks))  # fresh: nothing cached
    agent = build_agent(policy, [tool], system_hint=env.system_hint, **ctx["agent_kwargs"])
    ctx["latency"].reset(latency_s)
    ctx["model"].eval()
    trajs, seconds, load = timed(lambda: asyncio.run(rollout(agent, env, tasks, max_concurrency=len(tasks))))
    policy.close()
    result = summarize("(a) engine: `rollout` + `HFPolicy`", _latency_label(latency_s), trajs, seconds, load,
                       ctx["latency"])
    s = policy.stats
    result.prefill = s.prefill_tokens
    result.notes = {"forward passes": s.forward_passes, "batch rows": s.batch_rows_sum,
                    "prefill tokens": s.prefill_tokens, "reused prefix tokens": s.reused_prefix_tokens,
                    "policy busy s": s.busy_s, "wall s": seconds}
    return result, trajs


def run_naive(ctx: dict, latency_s: float, tasks: list) -> Result:
    from agent.graph import build_agent
    from training.rollout import run_one

    env = ctx["env"]
    policy = NaiveGeneratePolicy(ctx["model"], ctx["tok"])
    agent = build_agent(policy, [ctx["tool"]], system_hint=env.system_hint, **ctx["agent_kwargs"])
    ctx["latency"].reset(latency_s)
    ctx["model"].eval()

    async def one_by_one() -> list:
        return [await run_one(agent, env, task) for task in tasks]

    trajs, seconds, load = timed(lambda: asyncio.run(one_by_one()))
    result = summarize("(b) naive: graphs one by one, `model.generate`", _latency_label(latency_s), trajs, seconds,
                       load, ctx["latency"])
    result.prefill = policy.prefill_tokens
    return result


def build_trl(ctx: dict, args: argparse.Namespace, run_dir: str) -> tuple[Any, list, Any]:
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from agent.chat_format import ChatFormat
    from agent.prompts import EXEMPLARS, exemplar_messages, system_prompt
    from agent.protocols import get_protocol
    from agent.sync import run_sync

    env, tasks, tok, tool = ctx["env"], ctx["tasks"], ctx["tok"], ctx["tool"]
    proto, fmt = get_protocol("json"), ChatFormat(tok)
    preamble = [{"role": "system", "content": system_prompt(proto, [tool], fmt, env.system_hint)}]
    preamble += run_sync(exemplar_messages(EXEMPLARS, proto, [tool], fmt, None))
    prompts = [preamble + [{"role": "user", "content": t.question}] for t in tasks]
    function = trl_python_function(ctx["sandbox"], tool.description, ctx["latency"])

    def no_reward(completions: list, **kwargs: Any) -> list[float]:
        return [0.0] * len(completions)

    config = GRPOConfig(
        output_dir=run_dir, use_cpu=True, bf16=False, activation_checkpointing=False, report_to=[],
        per_device_train_batch_size=len(tasks), num_generations=2,
        max_completion_length=args.max_turns * (args.max_new_tokens + 128),  # the per-turn cap binds, not this
        max_tool_calling_iterations=args.max_turns - 1,
        generation_kwargs={"max_new_tokens": args.max_new_tokens, "do_sample": args.temperature > 0},
        temperature=args.temperature or 1.0, logging_steps=1, disable_tqdm=True, seed=args.seed,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = GRPOTrainer(model=ctx["model"], reward_funcs=no_reward, args=config,
                              train_dataset=Dataset.from_dict({"prompt": prompts}), processing_class=tok,
                              tools=[function])
    # what GRPOTrainer._generate_and_score_completions sets up before it calls _generate
    trainer._sync_tool_dicts = [{"python": function} for _ in tasks]
    trainer._async_tool_dicts = [{} for _ in tasks]
    return trainer, prompts, function


def run_trl(ctx: dict, trainer: Any, prompts: list, latency_s: float) -> Result:
    from agent.protocols import find_final_answer

    turns: list[tuple[int, int, int, int]] = []  # per generate call: rows, longest completion, kept, prompt tokens
    single_turn = trainer._generate_single_turn

    def counting(prompt_ids: list, *a: Any, **kw: Any) -> Any:
        ids, logprobs = single_turn(prompt_ids, *a, **kw)
        turns.append((len(ids), max(map(len, ids)), sum(map(len, ids)), sum(map(len, prompt_ids))))
        return ids, logprobs

    trainer._generate_single_turn = counting
    ctx["latency"].reset(latency_s)
    trainer.model.eval()
    out, seconds, load = timed(lambda: trainer._generate(prompts))
    del trainer._generate_single_turn
    _, _, tool_mask, completions, *_ = out
    correct = 0
    for task, messages in zip(ctx["tasks"], completions):
        texts = [m.get("content") or "" for m in messages if m.get("role") == "assistant"]
        answer = next((a for a in map(find_final_answer, reversed(texts)) if a), None)
        correct += answer is not None and ctx["env"].score(task, answer) >= 0.5
    slots = sum(rows * longest for rows, longest, *_ in turns)
    tokens = sum(map(sum, tool_mask))
    result = Result("(c) TRL `GRPOTrainer(tools=…)` loop", _latency_label(latency_s), seconds, tokens, len(prompts),
                    turns=sum(r for r, *_ in turns), prefill=sum(t[3] for t in turns), tool_calls=ctx["latency"].calls,
                    tool_s=ctx["latency"].seconds,
                    correct=correct, loads=load, rates=[tokens / seconds])
    result.notes = {"generate calls": len(turns), "decoded slots": slots, "useful tokens": sum(t[2] for t in turns)}
    return result


def run_ceiling(ctx: dict, prompts: list[list[int]], new_tokens: int) -> Result:
    import torch
    from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

    class FirstStep(LogitsProcessor):
        """Notes when the first logits arrive: the end of the prefill forward pass."""

        at: float | None = None

        def __call__(self, input_ids: Any, scores: Any) -> Any:
            self.at = self.at or time.perf_counter()
            return scores

    tok, model = ctx["tok"], ctx["model"]
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    width = max(map(len, prompts))
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    config = GenerationConfig(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                              eos_token_id=eos_ids(model, tok), pad_token_id=pad)
    model.eval()

    hook = FirstStep()

    def generate() -> Any:
        with torch.inference_mode():
            started = time.perf_counter()
            out = model.generate(ids, attention_mask=mask, generation_config=config,
                                 logits_processor=LogitsProcessorList([hook]))
            return out, hook.at - started, time.perf_counter() - hook.at

    (out, prefill_s, decode_s), seconds, load = timed(generate)
    produced = (out.shape[1] - width) * len(prompts)
    result = Result("(d) ceiling: one padded `model.generate`", "no tools", seconds, produced, len(prompts),
                    turns=len(prompts), prefill=sum(map(len, prompts)), loads=load, rates=[produced / seconds])
    # decode only: the tokens after the first (which the prefill pass produced), over the time after it
    result.notes = {"prefill s": prefill_s, "decode s": decode_s, "decode tokens": produced - len(prompts)}
    return result


def span(values: Any) -> str:
    ordered = sorted(values)
    return f"{ordered[0]}" if ordered[0] == ordered[-1] else f"{ordered[0]}–{ordered[-1]}"


def _latency_label(latency_s: float) -> str:
    return f"0–{latency_s * 1000:.0f} ms extra" if latency_s else "fixed (sandbox only)"


# -- report -----------------------------------------------------------------------------------------


def table(results: list[Result]) -> list[str]:
    rows = ["| engine | tool latency | wall | model tokens | tokens/s (each round) | trajectories/s | turns/traj "
            "| prompt tokens encoded | tool calls (tool s) | right | load 1-min |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        tools = f"{r.tool_calls} ({r.tool_s:.1f} s)" if r.tool_calls else "—"
        right = f"{r.correct}/{r.trajectories}" if r.tool_calls or r.correct else "—"
        rounds = " / ".join(f"{x:.1f}" for x in r.rates)
        rows.append(f"| {r.name} | {r.latency} | {r.seconds:.1f} s | {r.tokens} | **{r.tok_s:.1f}** ({rounds}) | "
                    f"{r.traj_s:.3f} | {r.turns / r.trajectories:.2f} | {r.prefill} | {tools} | {right} | "
                    f"{min(r.loads):.2f}–{max(r.loads):.2f} |")
    return rows


def ratio_rows(res: dict[str, Result]) -> list[str]:
    def row(label: str, ours: Result, theirs: Result, target: float) -> str:
        value = ours.tok_s / theirs.tok_s
        traj = ours.traj_s / theirs.traj_s
        if target < 1:
            goal, shown = f"≥ {target:.0%}", f"{value:.0%}"
            met = "met" if value >= target else f"missed by {100 * (target - value):.0f} points"
        else:
            goal, shown = f"≥ {target:g}×", f"{value:.2f}×"
            met = "met" if value >= target else f"missed by {target - value:.2f}×"
        return f"| {label} | {shown} | {traj:.2f}× | {goal} | {met} |"

    rows = ["| comparison | tokens/s ratio | trajectories/s ratio | target (tokens/s) | |", "|---|---:|---:|---:|---|"]
    if "b" in res:
        rows.append(row("(a) / (b) naive, fixed tool latency", res["a"], res["b"], 4.0))
    if "b_var" in res:
        rows.append(row("(a) / (b) naive, variable tool latency", res["a_var"], res["b_var"], 4.0))
    rows.append(row("(a) / (c) TRL, fixed tool latency", res["a"], res["c"], 1.5))
    rows.append(row("(a) / (c) TRL, variable tool latency", res["a_var"], res["c_var"], 1.5))
    rows.append(row("(a) / (d) ceiling", res["a"], res["d"], 0.8))
    n = res["d"].notes
    decode_only = n["decode tokens"] / n["decode s"]
    rows.append(f"| (a) / (d) decode only (its prefill time left out) | {res['a'].tok_s / decode_only:.0%} | — | "
                "(no target) | |")
    return rows


def reading(res: dict[str, Result]) -> list[str]:
    """Plain sentences computed from the numbers: what each engine spent its time on."""
    a, c, d = res["a"], res["c"], res["d"]
    n = a.notes
    lines = [
        f"- Prompt tokens encoded (padding excluded): (a) {a.prefill}, (c) {c.prefill} "
        f"({c.prefill / a.prefill:.1f}×), (d) {d.prefill}"
        + (f", (b) {res['b'].prefill} ({res['b'].prefill / a.prefill:.1f}×)" if "b" in res else "")
        + f". (a) encodes the shared system prompt and exemplars once and keeps every trajectory's cache "
        f"between turns ({n['reused prefix tokens']:.0f} tokens reused); (b), (c) and (d) encode every prompt "
        "in full, and (b) and (c) again at every turn.",
        f"- Decoding: (a) ran {n['forward passes']:.0f} forward passes with "
        f"{n['batch rows'] / n['forward passes']:.1f} rows on average out of {a.trajectories}; "
        f"(c) decoded {c.notes['decoded slots']:.0f} row-steps to keep "
        f"{c.notes['useful tokens']:.0f} tokens ({c.notes['useful tokens'] / c.notes['decoded slots']:.0%}): "
        "each lockstep `generate` runs until its longest row stops; (d) decoded at "
        f"{d.notes['decode tokens'] / d.notes['decode s']:.1f} tokens/s with all {d.trajectories} rows, after a "
        f"{d.notes['prefill s']:.1f} s prefill.",
        f"- Tools: {a.tool_calls / a.trajectories:.2f} calls per trajectory in (a), "
        f"{c.tool_calls / c.trajectories:.2f} in (c); the variable latency added "
        f"{res['a_var'].tool_s - a.tool_s:.1f} tool-seconds to (a) "
        f"(overlapped with other rows' decoding) and {res['c_var'].tool_s - c.tool_s:.1f} s to (c) (serial, "
        "the whole batch waits).",
    ]
    return lines


def notes_table(res: dict[str, Result]) -> list[str]:
    rows = ["| run | where the time went (all rounds) |", "|---|---|"]
    for key, label in (("a", "(a) fixed"), ("a_var", "(a) variable")):
        n = res[key].notes
        mean_batch = n["batch rows"] / n["forward passes"]
        rows.append(
            f"| {label} | {n['forward passes']:.0f} forward passes, mean batch {mean_batch:.1f} rows; "
            f"prefill {n['prefill tokens']:.0f} tokens, {n['reused prefix tokens']:.0f} reused from the prefix "
            f"cache; policy busy {n['policy busy s']:.1f} s of {n['wall s']:.1f} s wall "
            f"({n['policy busy s'] / n['wall s']:.0%}) |")
    n = res["d"].notes
    rows.append(f"| (d) | prefill {n['prefill s']:.1f} s, then {n['decode tokens']:.0f} tokens decoded in "
                f"{n['decode s']:.1f} s = {n['decode tokens'] / n['decode s']:.1f} tokens/s decode only |")
    for key, label in (("c", "(c) fixed"), ("c_var", "(c) variable")):
        n = res[key].notes
        rows.append(f"| {label} | {n['generate calls']:.0f} batched `generate` calls; rows × decode steps = "
                    f"{n['decoded slots']:.0f} slots for {n['useful tokens']:.0f} kept tokens "
                    f"({n['useful tokens'] / n['decoded slots']:.0%} useful) |")
    return rows


# -- main -------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=MODEL, help="model spec for agent.models.load_model")
    parser.add_argument("--tasks", type=int, default=16, help="trajectories per run (all concurrent in (a))")
    parser.add_argument("--level", type=int, default=1, help="arithmetic level")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-new-tokens", type=int, default=64, help="per model turn, every engine")
    parser.add_argument("--max-turns", type=int, default=4, help="model turns per trajectory, every engine")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    parser.add_argument("--latency-ms", type=float, default=200.0, help="variable tool latency: uniform 0..this")
    parser.add_argument("--naive-variable", action="store_true", help="also run (b) with the variable latency")
    parser.add_argument("--skip-naive", action="store_true", help="leave out (b) (the slowest run)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat every run this many times, alternating the order; totals are reported")
    parser.add_argument("--max-wait", type=float, default=900.0, help="seconds to wait for a quiet CPU")
    parser.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    args = parser.parse_args()

    import torch
    from trl.chat_template_utils import add_response_schema, qwen2_5_chat_template

    from agent.models import load_model
    from agent.policy import SamplingParams
    from envs.arithmetic import ArithmeticEnv
    from tools.python_exec import PythonSandbox, python_tool

    warnings.filterwarnings("ignore", message=".*generation flags.*")
    model, tok = load_model(args.model, device="cpu")
    tok.chat_template = qwen2_5_chat_template  # tool-capable, prefix-preserving; TRL can parse its calls
    tok = add_response_schema(tok)
    env = ArithmeticEnv(level=args.level)
    tasks = env.tasks("test", n=args.tasks, seed=args.seed)
    sandbox = PythonSandbox()
    latency = ToolLatency(seed=args.seed)
    tool = delayed_tool(python_tool(sandbox), latency)
    sampling = SamplingParams(temperature=args.temperature, max_new_tokens=args.max_new_tokens,
                              seed=args.seed if args.temperature > 0 else None)
    ctx = {"model": model, "tok": tok, "env": env, "tasks": tasks, "tool": tool, "sandbox": sandbox,
           "latency": latency, "agent_kwargs": {"protocol": "json", "max_turns": args.max_turns,
                                                "self_correct": False, "sampling": sampling}}
    run_dir = tempfile.mkdtemp(prefix="bench-rollout-")
    trainer, trl_prompts, _ = build_trl(ctx, args, run_dir)
    # warm-up on prompts of the real shape: first-call allocations and kernel choices stay out of the timings
    run_ceiling(ctx, trainer._tokenize_prompts(trl_prompts)[0], 2)

    waited, load_start = wait_for_quiet_cpu(max_wait_s=args.max_wait)
    started = time.perf_counter()
    var_s = args.latency_ms / 1000
    plan = ["a", "d", "c", "b", "a_var", "c_var", "b_var"]
    if args.skip_naive:
        plan = [k for k in plan if not k.startswith("b")]
    elif not args.naive_variable:
        plan.remove("b_var")
    res: dict[str, Result] = {}
    first: list = []  # (a)'s trajectories of the first round: their first prompts feed (d)
    for round_ in range(args.rounds):
        for key in plan if round_ % 2 == 0 else plan[::-1]:  # alternate the order: linear drift cancels
            latency_s = var_s if key.endswith("_var") else 0.0
            if key.startswith("a"):
                result, trajs = run_engine(ctx, latency_s)
                first = first or trajs
            elif key == "d":
                if not first:
                    _, first = run_engine(ctx, 0.0)  # only if (d) comes first: it needs (a)'s prompts and length
                per_row = math.ceil(sum(t.num_model_tokens for t in first) / len(first))
                result = run_ceiling(ctx, [t.prompt_ids for t in first], per_row)
            elif key.startswith("c"):
                result = run_trl(ctx, trainer, trl_prompts, latency_s)
            else:  # the naive loop takes one slice of the tasks per round: its rate does not depend on how many
                result = run_naive(ctx, latency_s, tasks[round_::args.rounds])
            res[key] = res[key].merge(result) if key in res else result
            print(f"round {round_ + 1}: " + table([result])[-1], flush=True)
    total = time.perf_counter() - started

    order = ["a", "b", "c", "d", "a_var", "b_var", "c_var"]
    results = [res[k] for k in order if k in res]
    prompt_lens = span(len(t.prompt_ids) for t in first)
    trl_lens = span(len(ids) for ids in trainer._tokenize_prompts(trl_prompts)[0])
    lines = [*table(results), "", *ratio_rows(res), "", *notes_table(res), "", *reading(res)]
    print("\n".join(lines))
    if args.no_write:
        return
    section = "\n".join([
        SECTION,
        "",
        f"Command: `{command_line('bench_rollout.py')}`  ",
        f"Date: {utc_now()}  ",
        f"Machine: {machine()}, torch {torch.__version__} ({torch.get_num_threads()} threads), CPU only  ",
        f"Load average (1 min) when the measurements started: {load_start:.2f} (after waiting {waited:.0f} s for "
        f"< 1.0; other jobs may share the machine); all runs: {total:.0f} s",
        "",
        f"{MODEL_NAMES.get(args.model, args.model)} (fp32), {len(tasks)} `arithmetic` level-{args.level} test tasks, "
        f"{'greedy decoding' if args.temperature == 0 else f'temperature {args.temperature}, seeded'}, at most "
        f"{args.max_new_tokens} new tokens per model turn and {args.max_turns} model turns per trajectory in every "
        "engine. Every engine sees the same conversation: TRL's Qwen2.5 tool template on SmolLM2's tokenizer, the "
        "agent's system prompt and two worked exemplars, the `json` tool-call protocol (no verify step, so the "
        "loop is the same as TRL's: call tools until the model answers), the same `PythonSandbox` and the same "
        f"observation text. First prompts: {prompt_lens} tokens for the agent, "
        f"{trl_lens} as TRL renders them (TRL writes the tool's schema from the function's signature). "
        "Model tokens are the tokens the model sampled "
        "(`env_mask`/`tool_mask` = 1), observations excluded. The variable-latency runs sleep a seeded "
        f"uniform 0–{args.latency_ms:.0f} ms before each tool call, fixed per piece of code so engines that run "
        "the same code wait the same. (c) is `GRPOTrainer._generate` on one batch of the same prompts: its "
        "generate → tools → generate loop, with no reward or loss computation; (d) generates exactly "
        f"{per_row} tokens per prompt ((a)'s mean), left-padded, EOS suppressed. (a)'s policy cache starts empty "
        "in each run. Each measurement runs in a fresh worker thread (see `bench/_common.py`)."
        + (f" Every run is repeated {args.rounds}× in alternating order (forward, then backward, so a linear "
           "drift in machine load hits every engine alike); the table shows totals over the rounds and each "
           f"round's tokens/s. The naive loop (b) runs a different {len(tasks) // args.rounds}-task slice per "
           "round (all tasks once in total): one-at-a-time throughput does not depend on the count."
           if args.rounds > 1 else " `--rounds N` repeats every run N times in alternating order."),
        "",
        *lines,
        "",
    ])
    write_section(SECTION, section)
    print(f"updated BENCHMARKS.md ({SECTION})")


if __name__ == "__main__":
    main()
