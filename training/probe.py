"""The injected-error probes: can the verify step catch a wrong answer, and does it leave right ones alone?

For every baseline run, the model's own first-attempt code is changed (``training.injection``) and the
agent starts at the verify step from that wrong attempt. Two probes (``PROBES``):

- ``injected-errors``: one operator or number changed, so the code prints a wrong answer;
- ``failed-calls``: one bracket dropped, so the tool answers with an error, and the attempt answers a
  wrong number anyway: can the check tell a tool error from a result?

Measured, per env and probe:

- **fix rate**: injected wrong attempts whose final answer is right;
- **false-alarm rate**: baseline runs with a right first attempt whose final answer is wrong
  (the same runs, untouched);
- the vacuous-check rate on the injected runs (did the check compute anything new?).

This measures the ability to correct independently of how often the model errs on its own.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from envs import Env, Task
from training.injection import first_attempt_code, injected_attempt, python_tool_of
from training.metrics import Rate, compute_metrics, wilson
from training.rollout import run_one
from training.trajectory import Trajectory

PROBES = {"injected-errors": "wrong-output", "failed-calls": "failed-call"}  # probe → kind of injected attempt


class ProbeResult(BaseModel):
    env: str
    probe: str = "injected-errors"
    fix_rate: Rate
    false_alarm_rate: Rate
    vacuous_check_rate: Rate
    injected: int  # runs started from an injected wrong attempt
    skipped: int  # baseline runs with no Python code to change, or no change that made the answer wrong


async def injected_runs(agent: Any, env: Env, tasks: Sequence[Task], baseline: Sequence[Trajectory], *,
                        probe: str = "injected-errors", seed: int = 0, on_done: Any = None) -> list[Trajectory]:
    """One run per baseline run that has a first attempt to change, started from the changed attempt."""
    python = python_tool_of(env, f"The {probe} probe")
    by_id = {t.id: t for t in tasks}
    rng = random.Random(seed)
    jobs = []
    for traj in baseline:
        code = first_attempt_code(traj)
        task = by_id.get(traj.task_id)
        given = await injected_attempt(PROBES[probe], code, task, env, python, rng) if code and task else None
        if given is not None:
            jobs.append(_run(agent, env, task, traj.group, given, on_done))
    return list(await asyncio.gather(*jobs))


async def _run(agent: Any, env: Env, task: Task, group: int, given: dict, on_done: Any) -> Trajectory:
    traj = await run_one(agent, env, task, group=group, first_attempt=given)
    if on_done is not None:
        on_done(traj)
    return traj


def probe_result(env: str, baseline: Sequence[Trajectory], injected: Sequence[Trajectory],
                 probe: str = "injected-errors") -> ProbeResult:
    right_first = [t for t in baseline if t.first_right]
    return ProbeResult(
        env=env,
        probe=probe,
        fix_rate=wilson(sum(t.last_right for t in injected), len(injected)),
        false_alarm_rate=wilson(sum(not t.last_right for t in right_first), len(right_first)),
        vacuous_check_rate=compute_metrics(list(injected)).vacuous_check_rate,
        injected=len(injected),
        skipped=len(baseline) - len(injected),
    )
