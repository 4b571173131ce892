"""Can sampling find a fix at all? The verify step sampled K times on the model's own wrong first attempts
(greedy, as evaluation decodes them), on injected ones (one change of its own code, as the probe makes
them) and on its own right ones, at each verify temperature. RL can only reinforce a fix the policy samples:
a fix rate of 0 on the model's own errors means training on them has nothing to learn from, whatever the
reward. Likewise a check that reaches the answer by another route can only be rewarded if it is sampled: the
last column counts checks that computed something the first attempt did not (by
``training.metrics.is_vacuous_check``), printed the run's final answer themselves, and ended right (a check
that computes something unrelated and then keeps the answer is not one).

    .venv/bin/python bench/bench_check_exploration.py --config configs/long-expressions.toml --tasks 32 \
        --samples 4 --temperature 0.3 --temperature 1.0 [--exemplars rewrite --exemplars assign] [--model PATH]

Each exemplar set (``agent.exemplars``, repeatable) gets its own greedy first attempts: the exemplars are in
the context of the first attempt too.

Writes the table to BENCHMARKS.md (section "## Check exploration: own errors and injected ones").
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from pathlib import Path

from _common import command_line, load1, machine, utc_now, write_section

HEADING = "## Check exploration: own errors and injected ones"


async def given_attempts(policy, env, tasks, options, max_new_tokens, seed):
    """(own, injected, right): task id → the model's own wrong greedy first attempt, → a one-change variant
    of its own first-attempt code (every task whose code allows one), and → its own right first attempt."""
    from agent.policy import SamplingParams
    from training.injection import first_attempt_code, injected_attempt, own_attempt, python_tool_of
    from training.rollout import build_env_agent, rollout

    greedy = SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens)
    first_agent = build_env_agent(policy, env, sampling=greedy, **options | {"self_correct": False})
    firsts = await rollout(first_agent, env, tasks)
    python, rng = python_tool_of(env, "this benchmark"), random.Random(seed)
    own, injected, right = {}, {}, {}
    for task, traj in zip(tasks, firsts, strict=True):
        if traj.attempts:
            (right if traj.attempts[0].right else own)[task.id] = own_attempt(traj)
        code = first_attempt_code(traj)
        if code and (made := await injected_attempt("wrong-output", code, task, env, python, rng)):
            injected[task.id] = made
    return own, injected, right


async def sampled_checks(policy, env, tasks, given, options, temperature, samples, max_new_tokens):
    """Every task in ``given`` run ``samples`` times from its given attempt, the verify step sampled at
    ``temperature``: (runs ending right, runs, tasks right at least once, tasks, vacuous checks, checks by
    another route), and the runs."""
    from agent.policy import SamplingParams
    from training.metrics import is_vacuous_check
    from training.rollout import build_env_agent, rollout

    params = SamplingParams(temperature=temperature, max_new_tokens=max_new_tokens)
    agent = build_env_agent(policy, env, sampling=params, verify_sampling=params, **options)
    chosen = [t for t in tasks if t.id in given]
    runs = await rollout(agent, env, chosen, num_generations=samples, first_attempts=given)
    fixed_tasks = {r.task_id for r in runs if r.last_right}
    vacuous = [bool(is_vacuous_check(r)) for r in runs]
    return (sum(r.last_right for r in runs), len(runs), len(fixed_tasks), len(chosen), sum(vacuous),
            sum(by_another_route(r) for r in runs)), runs


def by_another_route(run) -> bool:
    """The verify step computed something new (not vacuous), printed the final answer itself, and it is right."""
    from training.metrics import is_vacuous_check, normalize_answer, verify_calls

    if not run.last_right or is_vacuous_check(run) is not False:
        return False
    answer = normalize_answer(run.attempts[-1].answer)
    return any(answer in normalize_answer(str(m.get("content"))).split() for m in verify_calls(run)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("configs/long-expressions.toml"))
    parser.add_argument("--model", help="a model instead of the config's model.name (e.g. a run's final/)")
    parser.add_argument("--tasks", type=int, default=32, help="training-split tasks to draw first attempts on")
    parser.add_argument("--samples", type=int, default=4, help="sampled checks per given attempt")
    parser.add_argument("--temperature", type=float, action="append", help="verify temperature (repeatable)")
    parser.add_argument("--exemplars", action="append", help="exemplar set (repeatable); default: the config's")
    parser.add_argument("--given", choices=["own", "injected", "right", "all"], action="append",
                        help="which first attempts to sample checks on: the model's own wrong ones, injected "
                        "errors, its own right ones (repeatable; default: own and injected)")
    parser.add_argument("--save", type=Path, metavar="FILE", help="write every sampled run to this JSONL file "
                        "(each line labelled with its exemplars, temperature and kind of first attempt)")
    parser.add_argument("--no-write", action="store_true", help="print the table without writing BENCHMARKS.md")
    args = parser.parse_args()
    temperatures = args.temperature or [0.3, 1.0]
    kinds = {"own": "own (greedy) errors", "injected": "injected errors", "right": "own right answers"}
    given_kinds = list(kinds) if "all" in (args.given or []) else args.given or ["own", "injected"]

    from agent.hf_policy import HFPolicy
    from training.config import load_config
    from training.metrics import wilson

    config = load_config(args.config)
    env = config.env.build()
    tasks = env.tasks("train", n=args.tasks, seed=config.env.seed)
    model = args.model or config.model.name
    load, started = load1(), time.perf_counter()
    policy = HFPolicy.from_pretrained(model)
    saved: dict[str, list] = {}
    try:
        rows = []
        for exemplars in args.exemplars or [config.agent.exemplars]:
            options = config.agent.build_options() | {"exemplars": exemplars}
            own, injected, right = asyncio.run(given_attempts(policy, env, tasks, options,
                                                              config.agent.max_new_tokens, 0))
            given_by_kind = {"own": own, "injected": injected, "right": right}
            for temperature in temperatures:
                for key in given_kinds:
                    (ended_right, runs, tasks_right, n_tasks, vacuous, routes), sampled = asyncio.run(sampled_checks(
                        policy, env, tasks, given_by_kind[key], options, temperature, args.samples,
                        config.agent.max_new_tokens))
                    saved[f"{exemplars} {temperature} {key}"] = sampled
                    rate, route = wilson(ended_right, runs), wilson(routes, runs)
                    rows.append(f"| {exemplars} | {temperature} | {kinds[key]} | {n_tasks} | {runs} | {ended_right} "
                                f"({100 * rate.value:.1f}% [{100 * rate.low:.1f}, {100 * rate.high:.1f}]) | "
                                f"{tasks_right}/{n_tasks} | {100 * vacuous / runs if runs else 0:.0f}% | {routes} "
                                f"({100 * route.value:.1f}% [{100 * route.low:.1f}, {100 * route.high:.1f}]) |")
                    print(rows[-1], flush=True)
    finally:
        policy.close()
    if args.save:
        from training.eval import save_trajectories

        save_trajectories(saved, args.save)
    section = "\n".join([
        HEADING, "",
        f"Command: `{command_line('bench_check_exploration.py')}`  ",
        f"Date: {utc_now()}  ",
        f"Machine: {machine()}  ",
        f"Model: `{model}`; env `{config.env.name}` {config.env.kwargs}, {args.tasks} training-split tasks; first "
        f"attempts greedy; {args.samples} sampled checks per given attempt; wall time "
        f"{(time.perf_counter() - started) / 60:.1f} min (1-min load {load:.2f} at the start).", "",
        "| exemplars | verify temperature | first attempt given | tasks | checks sampled | "
        "checks ending right [95% CI] | tasks right at least once | vacuous checks "
        "| by another route: new computation, printed the answer, right [95% CI] |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
        *rows, "",
    ])
    print(section)
    if not args.no_write:
        write_section(HEADING, section)


if __name__ == "__main__":
    main()
