"""Running the agent over an environment: the shared path behind `run`, `eval` and the demo."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

from agent.policy import MAX_NEW_TOKENS, SamplingParams
from training.metrics import Metrics, compute_metrics
from training.progress import Progress
from training.rollout import build_env_agent, rollout
from training.trajectory import Trajectory


@dataclass
class RunResult:
    trajectories: list[Trajectory]
    metrics: Metrics
    seconds: float
    generated_tokens: int
    env: str = ""  # the env's name (a command line may have named it module:Class)

    @property
    def tokens_per_s(self) -> float:
        return self.generated_tokens / self.seconds if self.seconds else 0.0


def progress_bar(console: Console | None = None) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=console, transient=False,
    )


def run_tasks(policy: Any, env: Any, tasks: list, *, generations: int = 1, console: Console | None = None,
              description: str = "", **agent_kwargs: Any) -> RunResult:
    """Roll out ``tasks`` on an already loaded policy, with a progress bar."""
    agent = build_env_agent(policy, env, **agent_kwargs)
    total = len(tasks) * generations
    started = time.perf_counter()
    with progress_bar(console) as progress:
        bar = progress.add_task(description or env.name, total=total, status="")
        right = 0

        def done(traj: Trajectory) -> None:
            nonlocal right
            right += traj.last_right
            progress.update(bar, advance=1, status=f"{right} right")

        trajectories = asyncio.run(rollout(agent, env, tasks, num_generations=generations, on_done=done))
    seconds = time.perf_counter() - started
    tokens = sum(t.num_model_tokens for t in trajectories)
    return RunResult(trajectories, compute_metrics(trajectories), seconds, tokens, env.name)


def run_probe(policy: Any, env: Any, tasks: list, baseline: list[Trajectory], *, probe: str = "injected-errors",
              seed: int = 0, console: Console | None = None, **agent_kwargs: Any) -> list[Trajectory]:
    """An injected-error probe's runs (``training.probe``) on an already loaded policy, with a progress bar."""
    from training.probe import injected_runs

    agent = build_env_agent(policy, env, **agent_kwargs)
    with progress_bar(console) as progress:
        bar = progress.add_task(f"{env.name} · {probe}", total=len(baseline), status="")
        fixed = 0

        def done(traj: Trajectory) -> None:
            nonlocal fixed
            fixed += traj.last_right
            progress.update(bar, advance=1, status=f"{fixed} fixed")

        runs = asyncio.run(injected_runs(agent, env, tasks, baseline, probe=probe, seed=seed, on_done=done))
        progress.update(bar, completed=len(baseline))
    return runs


def run_env(env: str, *, n: int, split: str = "test", seed: int = 0, model: str = "smollm2-135m",
            protocol: str = "auto", max_turns: int = 8, self_correct: bool = True, temperature: float = 0.0,
            max_new_tokens: int = MAX_NEW_TOKENS, generations: int = 1, console: Console | None = None,
            env_kwargs: dict[str, Any] | None = None, tools: list[str] | None = None, engine: str = "hf",
            **agent_kwargs: Any) -> RunResult:
    """``env`` (a name, ``module:Class``, ``jsonl:PATH``) built with ``env_kwargs`` and offering ``tools`` too,
    then run on ``n`` of its tasks by ``engine`` (``agent.engines``); names are checked before the model loads."""
    from agent.engines import open_policy
    from envs import get_env, with_tools

    environment = with_tools(get_env(env, **(env_kwargs or {})), tools)
    tasks = environment.tasks(split, n=n, seed=seed)
    if console:
        console.print(f"Loading model [bold]{model}[/] …")
    policy = open_policy(model, engine)
    try:
        return run_tasks(policy, environment, tasks, generations=generations, console=console,
                         protocol=protocol, max_turns=max_turns, self_correct=self_correct,
                         sampling=SamplingParams(temperature=temperature, max_new_tokens=max_new_tokens),
                         **agent_kwargs)
    finally:
        policy.close()
