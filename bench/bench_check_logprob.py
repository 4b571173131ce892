"""How far is a fix from being sampled? The log-probability a model gives the right check and the copied
check, at the verify turn after a first attempt that lost the question's leading bracket.

On arithmetic level 6, SmolLM2's commonest wrong first attempt drops the bracket a question opens with
(``print(454 + 78 * 430 - 95)`` for ``(454 + 78) * (430 - 95)``). After it, the verify turn is scored, not
sampled, with two continuations: the right check, ``x = <the question's expression>`` then ``print(x)``, and
the copied one, ``x = <the first attempt's expression>``. The two part at one token (`` (`` against `` ``
after ``x =``), where the whole gap tends to sit. Sampling finds a fix in proportion to the right check's
probability, so these numbers move before a sampled fix rate does (``bench_check_exploration.py``).

    .venv/bin/python bench/bench_check_logprob.py --config configs/own-errors.toml --tasks 12 \\
        --model smollm2-135m --model runs/own-errors/final [--exemplars assign --exemplars bracket]

Each model is scored under each exemplar set. Writes its table to BENCHMARKS.md (section "## Check
log-probability: the right check against the copied one").
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time
from pathlib import Path

from _common import command_line, load1, machine, utc_now, write_section

HEADING = "## Check log-probability: the right check against the copied one"


def without_leading_bracket(expression: str) -> str:
    """``expression`` with the bracket it opens with, and its partner, removed."""
    depth = 0
    for i, char in enumerate(expression):
        depth += char == "("
        depth -= char == ")"
        if depth == 0:
            return expression[1:i] + expression[i + 1:]
    raise ValueError(f"unbalanced brackets in {expression!r}")


class RecordingPolicy:
    """Answers every turn with a final answer and keeps the prompts it was given: the verify turn's
    prompt, built by the agent itself."""

    def __init__(self, tokenizer):
        self.tokenizer, self.prompts = tokenizer, []

    async def generate(self, prompt_ids, sampling, *, on_text=None):
        from agent.policy import Generation

        self.prompts.append(list(prompt_ids))
        ids = self.tokenizer("Final answer: 0", add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id]
        return Generation(token_ids=ids, logprobs=[0.0] * len(ids), text="Final answer: 0", finish_reason="eos")


def verify_prompt(agent, policy: RecordingPolicy, question: str, first_code: str, answer: str) -> list[int]:
    """The prompt ``agent`` gives its verify turn after ``first_code`` answered ``answer``."""
    given = {"calls": [{"tool": "python", "arguments": {"code": first_code}}], "answer": answer}
    asyncio.run(agent.ainvoke({"question": question, "first_attempt": given}))
    return policy.prompts[-1]


def scored(model, prompt: list[int], continuation: list[int]) -> list[float]:
    """The log-probability of each continuation token after ``prompt``."""
    import torch

    ids = torch.tensor([prompt + continuation])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(ids).logits[0, len(prompt) - 1:-1].float(), dim=-1)
    return [logprobs[i, token].item() for i, token in enumerate(continuation)]


def measure(model, tokenizer, env, options, tasks) -> dict[str, float]:
    """Means over the tasks: log p of the right and the copied check, and of the right check's token where
    the two part."""
    from training.rollout import build_env_agent

    policy = RecordingPolicy(tokenizer)  # one agent for every task: its exemplars' tool calls run once
    agent = build_env_agent(policy, env, **options | {"self_correct": True})
    right_total, copy_total, at_split = [], [], []
    for task in tasks:
        expression = task.question.removeprefix("What is ").removesuffix("?")
        lost = without_leading_bracket(expression)
        prompt = verify_prompt(agent, policy, task.question, f"print({lost})", str(eval(lost)))  # noqa: S307
        right, copied = ([*tokenizer(f"```python\nx = {body}\nprint(x)\n```", add_special_tokens=False)["input_ids"]]
                         for body in (expression, lost))
        split = next(i for i, (a, b) in enumerate(zip(right, copied, strict=False)) if a != b)
        right_lp, copy_lp = scored(model, prompt, right), scored(model, prompt, copied)
        right_total.append(sum(right_lp))
        copy_total.append(sum(copy_lp))
        at_split.append(right_lp[split])
    n = len(tasks)
    return {"right": sum(right_total) / n, "copy": sum(copy_total) / n, "split": sum(at_split) / n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("configs/own-errors.toml"))
    parser.add_argument("--model", action="append", help="a model (repeatable); default: the config's model.name")
    parser.add_argument("--exemplars", action="append", help="exemplar set (repeatable); default: the config's")
    parser.add_argument("--tasks", type=int, default=12, help="held-out tasks that open with one bracket")
    parser.add_argument("--no-write", action="store_true", help="print the table without writing BENCHMARKS.md")
    args = parser.parse_args()

    from agent.models import load_model
    from training.config import load_config

    config = load_config(args.config)
    env = config.env.build()
    pool = env.tasks("test", n=8 * args.tasks, seed=config.env.seed)
    tasks = [t for t in pool if t.question.startswith("What is (") and not t.question.startswith("What is ((")]
    tasks = tasks[:args.tasks]
    if not tasks:
        raise SystemExit(f"No held-out task of {args.config}'s env opens with one bracket: this benchmark needs them.")
    started, load = time.perf_counter(), load1()
    rows: list[str] = []
    for name in args.model or [config.model.name]:
        model, tokenizer = load_model(name, device="cpu")
        model.eval()
        for exemplars in args.exemplars or [config.agent.exemplars]:
            options = config.agent.build_options() | {"exemplars": exemplars}
            m = measure(model, tokenizer, env, options, tasks)
            rows.append(f"| `{name}` | {exemplars} | {len(tasks)} | {m['right']:.2f} | {m['copy']:.2f} | "
                        f"{m['right'] - m['copy']:.2f} | {m['split']:.2f} ({100 * math.exp(m['split']):.1f}%) |")
            print(rows[-1], flush=True)
    section = "\n".join([
        HEADING, "",
        "  \n".join([f"Command: `{command_line('bench_check_logprob.py')}`", f"Date: {utc_now()}",
                     f"Machine: {machine()}",
                     f"Wall time: {(time.perf_counter() - started) / 60:.1f} min "
                     f"(1-min load {load:.2f} at the start)"]),
        "", f"Env `{config.env.name}` {config.env.kwargs}, held-out tasks that open with one bracket; the first "
        "attempt given is the question's code with that bracket lost, and its real answer. Log-probabilities in "
        "nats, means over the tasks, at temperature 1; the split token is where the right check (`` (`` after "
        "`x =`) and the copied one part, with its probability.", "",
        "| model | exemplars | tasks | log p(right check) | log p(copied check) | right − copied | log p(split "
        "token, right) |", "|---|---|---:|---:|---:|---:|---:|", *rows, ""])
    print(section)
    if not args.no_write:
        write_section(HEADING, section)


if __name__ == "__main__":
    main()
