"""The rollout engine: many agent graphs at once, one batched policy, exact trajectories out.

Every (task, generation) pair runs its own LangGraph agent as an asyncio task. Their ``generate``
calls meet in the policy, which batches them; tool calls run concurrently while others decode; no
trajectory waits for another. A failure in one run is recorded on its trajectory, never raised.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from envs import Env, Task
from training.trajectory import Attempt, Timings, Trajectory

log = logging.getLogger(__name__)


def build_env_agent(policy: Any, env: Env, **agent_kwargs: Any) -> Any:
    """The agent for ``env``: its tools and hint, plus any ``build_agent`` options."""
    from agent.graph import build_agent

    return build_agent(policy, env.tools(), system_hint=env.system_hint, **agent_kwargs)


async def rollout(
    agent: Any,
    env: Env,
    tasks: Sequence[Task],
    *,
    num_generations: int = 1,
    max_concurrency: int = 64,
    on_done: Callable[[Trajectory], None] | None = None,
) -> list[Trajectory]:
    """Run every task ``num_generations`` times; results come back in task-major order."""
    gate = asyncio.Semaphore(max_concurrency)

    async def one(task: Task, group: int) -> Trajectory:
        async with gate:
            traj = await run_one(agent, env, task, group=group)
        if on_done is not None:
            on_done(traj)
        return traj

    jobs = [one(task, g) for task in tasks for g in range(num_generations)]
    return list(await asyncio.gather(*jobs))


async def run_one(agent: Any, env: Env, task: Task, *, group: int = 0) -> Trajectory:
    started = time.perf_counter()
    try:
        state = await agent.ainvoke({"question": task.question})
    except Exception as exc:  # one broken run must not take the batch down
        log.warning("rollout of task %s failed: %s", task.id, exc, exc_info=True)
        return Trajectory(task_id=task.id, env=env.name, question=task.question, prompt_ids=[],
                          completion_ids=[], env_mask=[], logprobs=[], group=group,
                          stop_reason=f"error: {type(exc).__name__}: {exc}",
                          timings=Timings(total_s=time.perf_counter() - started))
    attempts = []
    for a in state.get("attempts", []):
        score = await asyncio.to_thread(_safe_score, env, task, a["answer"])
        attempts.append(Attempt(score=score, **a))
    return Trajectory(
        task_id=task.id,
        env=env.name,
        question=task.question,
        prompt_ids=state["prompt_ids"],
        completion_ids=state.get("completion_ids", []),
        env_mask=state.get("env_mask", []),
        logprobs=state.get("logprobs", []),
        attempts=attempts,
        messages=state.get("messages", []),
        turns=state.get("turns", 0),
        tool_calls=state.get("tool_calls", 0),
        tool_errors=state.get("tool_errors", 0),
        parse_errors=state.get("parse_errors", 0),
        stop_reason=state.get("stop_reason", ""),
        group=group,
        timings=Timings(
            total_s=time.perf_counter() - started,
            generate_s=state.get("generate_s", 0.0),
            tools_s=state.get("tools_s", 0.0),
        ),
    )


def _safe_score(env: Env, task: Task, answer: str) -> float:
    try:
        return float(env.score(task, answer))
    except Exception:
        log.warning("scoring task %s raised; counted as 0", task.id, exc_info=True)
        return 0.0
