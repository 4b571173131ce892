"""Benchmark: does the embedded model call a custom tool? Before and after tools became functions in code.

On the ``dates`` env (``examples/dates.py``: "how many days from A to B?", tools ``python`` and
``days_between``), the same tasks are run greedily under the ``code`` format twice: with
``days_between`` only a ``<tool_call>`` tool (``code_functions=False``, as before) and with it also
a function the model's Python can call (the default). Per side: the share of runs that called the
custom tool at all, that got an answer from it, Acc@t1 and Acc@t2, runs without an answer; written
into BENCHMARKS.md.

    nice -n 19 .venv/bin/python bench/bench_custom_tool.py [--n 16] [--model smollm2-135m] [--no-example]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from _common import command_line, load1, machine, utc_now, write_section

HEADING = "## Custom tools: called as a tool, or as a function in code"
CUSTOM = "days_between"


def used_custom_tool(state: dict) -> tuple[bool, bool]:
    """(called it at all, got a result from it without an error), from the run's transcript."""
    called = ok = False
    for message in state.get("messages", []):
        if message.get("role") != "tool":
            continue
        calls = [{"name": message["name"], "error": message.get("error")}] + message.get("function_calls", [])
        for call in calls:
            if call["name"] == CUSTOM:
                called = True
                ok = ok or not call["error"]
    return called, ok


async def run_side(policy, env, tasks, *, code_functions: bool, exemplar: bool, max_turns: int) -> dict:
    from agent import build_agent
    from agent.policy import SamplingParams
    from agent.prompts import EXEMPLARS

    # the default shows the tool's own example (examples.dates.EXAMPLE) after the first arithmetic one
    agent = build_agent(policy, env.tools(), protocol="code", max_turns=max_turns, max_tool_calls=4,
                        sampling=SamplingParams(temperature=0.0, max_new_tokens=160),
                        code_functions=code_functions, exemplars=None if exemplar else list(EXEMPLARS))
    started = time.perf_counter()
    states = await asyncio.gather(*(agent.ainvoke({"question": t.question}) for t in tasks))
    rows = []
    for task, state in zip(tasks, states):
        attempts = state.get("attempts", [])
        called, ok = used_custom_tool(state)
        rows.append({
            "called": called, "called_ok": ok, "answered": bool(attempts),
            "t1": env.score(task, attempts[0]["answer"]) if attempts else 0.0,
            "t2": env.score(task, attempts[-1]["answer"]) if attempts else 0.0,
            "python": sum(m.get("role") == "tool" and m.get("name") == "python" for m in state["messages"]),
        })
    n = len(rows)
    share = {key: sum(r[key] for r in rows) for key in ("called", "called_ok", "answered", "t1", "t2")}
    return {"n": n, **share, "python_calls": sum(r["python"] for r in rows),
            "seconds": time.perf_counter() - started, "example": _example(states)}


def _example(states: list[dict]) -> str:
    """The first model turn that called the custom tool (or the first code turn), for the section."""
    for state in states:
        for message in state["messages"]:
            if message["role"] == "assistant" and CUSTOM in message["content"]:
                return message["content"].strip()
    return next((m["content"].strip() for s in states for m in s["messages"] if m["role"] == "assistant"), "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--max-turns", type=int, default=6)
    parser.add_argument("--no-example", action="store_true",
                        help="leave out the tool's own worked example (the two arithmetic exemplars only)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    from agent.hf_policy import HFPolicy
    from examples.dates import DatesEnv

    env = DatesEnv()
    tasks = env.tasks("test", n=args.n)
    started, load = time.perf_counter(), load1()
    policy = HFPolicy.from_pretrained(args.model)
    try:
        sides = [asyncio.run(run_side(policy, env, tasks, code_functions=functions, exemplar=not args.no_example,
                                      max_turns=args.max_turns)) for functions in (False, True)]
        before, after = sides
    finally:
        policy.close()
    total_s = time.perf_counter() - started

    def row(label: str, r: dict) -> str:
        n = r["n"]
        pct = lambda k: f"{r[k]:.0f}/{n} ({100 * r[k] / n:.0f}%)"  # noqa: E731
        return (f"| {label} | {pct('called')} | {pct('called_ok')} | {pct('t1')} | {pct('t2')} | "
                f"{n - r['answered']} | {r['python_calls']} | {r['seconds']:.0f} s |")

    lines = [
        "| days_between offered as | runs calling it | … with a result | Acc@t1 | Acc@t2 | no answer | "
        "python calls | time |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        row("`<tool_call>` tool only (before)", before),
        row("function in code (after)", after),
    ]
    print("\n".join(lines))
    print("\nbefore, example turn:\n" + before["example"] + "\n\nafter, example turn:\n" + after["example"])
    if args.no_write:
        return
    exemplars = ("a worked dates question whose first attempt calls `days_between` and whose check "
                 "recomputes with `datetime` (the tool's own `example`, `examples.dates.EXAMPLE`, shown in each "
                 "side's own format), after the first arithmetic one" if not args.no_example
                 else "the two arithmetic ones (none shows the custom tool)")
    shared = " (other jobs shared the cores)" if load > 1 else ""
    section = f"""{HEADING}

Whether {args.model} uses a tool it was never shown, on the `dates` env (`examples/dates.py`: "How many
days are there from A to B?", random dates 1990–2030, scored numerically; tools `python` and
`days_between`), greedy, `code` format, {args.n} tasks, the same on both sides. *Before*: `days_between`
is described as a `<tool_call>` tool (`build_agent(..., code_functions=False)`); *after* (the default):
the system prompt lists `days_between(date_a: str, date_b: str) -> int` as a function the model's code
can call, and a call from the sandbox runs the real tool on the host (`tools/code_functions.py`). A run
"calls it" when any of its turns called `days_between`, as a tool call or from code; "with a result"
when such a call succeeded. Exemplars, the same on both sides: {exemplars}.

{chr(10).join(lines)}

A first turn that called it, after:

~~~
{after["example"]}
~~~

Machine: {machine()}; 1-min load {load:.2f} at the start{shared}; {total_s:.0f} s in all, {utc_now()}.

Command: `nice -n 19 {command_line("bench_custom_tool.py")}`
"""
    write_section(HEADING, section)


if __name__ == "__main__":
    main()
