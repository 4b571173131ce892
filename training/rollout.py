"""The rollout engine: many agent graphs at once, one batched policy, exact trajectories out.

Every (task, generation) pair runs its own LangGraph agent as an asyncio task. Their ``generate``
calls meet in the policy, which batches them; tool calls run concurrently while others decode; no
trajectory waits for another. A failure in one run is recorded on its trajectory, never raised.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from envs import Env, Task
from tools.base import describe_exception, safe_text
from training.trajectory import Trajectory

log = logging.getLogger(__name__)


def build_env_agent(policy: Any, env: Env, *, graph: str | Callable[..., Any] | None = None,
                    **agent_kwargs: Any) -> Any:
    """The agent for ``env``: its tools and hint, plus any ``build_agent`` options. ``graph`` (a
    ``module:function`` path, or the function) runs your own LangGraph graph instead (``training.graph_agent``)."""
    if graph:
        from training.graph_agent import build_graph_agent

        return build_graph_agent(policy, env, graph, **agent_kwargs)
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
    first_attempts: Mapping[str, dict] | None = None,
) -> list[Trajectory]:
    """Run every task ``num_generations`` times; results come back in task-major order. A run's
    ``group`` counts the runs of its task before it (a task listed twice gets groups 0 and 1).
    ``first_attempts`` (task id → a given first attempt) starts those tasks' runs at the verify step."""
    gate = asyncio.Semaphore(max_concurrency)

    async def one(task: Task, group: int) -> Trajectory:
        async with gate:
            traj = await run_one(agent, env, task, group=group, first_attempt=(first_attempts or {}).get(task.id))
        if on_done is not None:
            on_done(traj)
        return traj

    seen: Counter[str] = Counter()
    jobs = []
    for task in tasks:
        for _ in range(num_generations):
            jobs.append(one(task, seen[task.id]))
            seen[task.id] += 1
    return list(await asyncio.gather(*jobs))


async def run_one(agent: Any, env: Env, task: Task, *, group: int = 0,
                  first_attempt: dict | None = None) -> Trajectory:
    """One agent run on ``task``, scored; ``first_attempt`` starts it at the verify step (see ``build_agent``)."""
    started = time.perf_counter()
    labels = {"task_id": task.id, "env": env.name, "question": safe_text(task.question), "group": group}
    inputs = {"question": task.question} | ({"first_attempt": first_attempt} if first_attempt else {})
    try:
        state = await agent.ainvoke(inputs)
    except Exception as exc:  # one broken run must not take the batch down
        log.warning("rollout of task %s failed: %s", task.id, exc, exc_info=True)
        return Trajectory.failed(**labels, error=exc, total_s=time.perf_counter() - started)
    try:
        scores = [await _score(env, task, a["answer"]) for a in state.get("attempts", [])]
        traj = Trajectory.from_state(state, **labels, scores=scores, total_s=time.perf_counter() - started)
        traj.jsonl_line()  # a record that cannot be saved would stop the training step that writes it
    except Exception as exc:  # a score of 0 would be a false reward; the run failed, and says why
        log.warning("run of task %s is recorded as failed: %s", task.id, exc, exc_info=True)
        return Trajectory.failed(**labels, error=exc, total_s=time.perf_counter() - started)
    return traj


async def _score(env: Env, task: Task, answer: str) -> float:
    try:
        return float(await env.ascore(task, answer))
    except Exception as exc:
        raise RuntimeError(f"scoring the answer {answer[:80]!r} raised {describe_exception(exc)}") from exc
