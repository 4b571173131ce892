"""humaneval: the 164 problems, scored by their tests in the sandbox (never in this process)."""

from __future__ import annotations

import asyncio
import time

import pytest

from envs import get_env
from envs.humaneval import HumanEvalEnv, program_for


@pytest.fixture(scope="module")
def env() -> HumanEvalEnv:
    return HumanEvalEnv()


@pytest.fixture(scope="module")
def sandbox_ready() -> None:
    pytest.importorskip("tools.python_exec", reason="tools/python_exec.py (the sandbox) is not available")


def test_problems_and_question(env: HumanEvalEnv) -> None:
    tasks = env.tasks("test")
    assert len(tasks) == 164 and len({t.id for t in tasks}) == 164
    first = tasks[0]
    assert first.id == "HumanEval/0"
    assert first.reference["prompt"] in first.question and "complete" in first.question.lower()
    assert first.metadata["entry_point"] == "has_close_elements"
    assert "Python" in env.system_hint


def test_train_split_is_opt_in_and_disjoint() -> None:
    with pytest.raises(ValueError, match="train_size"):
        HumanEvalEnv().tasks("train")
    env = HumanEvalEnv(train_size=40)
    train, test = env.tasks("train"), env.tasks("test")
    assert len(train) == 40 and len(test) == 124
    assert not {t.id for t in train} & {t.id for t in test}
    assert [t.id for t in HumanEvalEnv(train_size=40).tasks("train")] == [t.id for t in train]
    with pytest.raises(ValueError, match="train_size must be"):
        HumanEvalEnv(train_size=164)


def test_program_keeps_prompt_helpers_and_adds_check(env: HumanEvalEnv) -> None:
    task = env.tasks("test")[0]
    full = "Here you go:\n```python\ndef has_close_elements(numbers, threshold):\n    return True\n```"
    source = program_for(task, full).source
    assert "from typing import List" in source  # the prompt's imports come along
    assert source.rstrip().count("check(has_close_elements)") == 1
    assert source.index("return True") < source.index("def check(")


async def _score_all(env: HumanEvalEnv, pairs: list) -> list[float]:
    limit = asyncio.Semaphore(8)

    async def one(task, answer):
        async with limit:
            return await env.ascore(task, answer)

    return await asyncio.gather(*(one(t, a) for t, a in pairs))


def _canonical(task) -> str:
    return task.reference["canonical_solution"]


@pytest.mark.usefixtures("sandbox_ready")
async def test_all_164_canonical_solutions_pass(env: HumanEvalEnv) -> None:
    tasks = env.tasks("test")
    started = time.perf_counter()
    scores = await _score_all(env, [(t, _canonical(t)) for t in tasks])
    assert [t.id for t, s in zip(tasks, scores) if s != 1.0] == []
    assert time.perf_counter() - started < 60
    fenced = [(t, f"Here it is:\n```python\n{t.reference['prompt']}{_canonical(t)}```") for t in tasks[:10]]
    assert await _score_all(env, fenced) == [1.0] * 10


@pytest.mark.usefixtures("sandbox_ready")
def test_wrong_and_empty_answers_score_zero(env: HumanEvalEnv) -> None:
    task = env.tasks("test")[0]
    for answer in ("pass", "", "    return False", "not python at all )(", "🙂" * 1000):
        assert env.score(task, answer) == 0.0, answer


@pytest.mark.usefixtures("sandbox_ready")
def test_hostile_answers_score_zero_without_hanging() -> None:
    env = HumanEvalEnv(timeout_s=2.0)
    task = env.tasks("test")[0]
    hostile = [
        "    while True:\n        pass",
        "    import sys\n    sys.exit(0)",  # exiting "successfully" before the tests finish
        "    import os\n    os._exit(0)",
        "import sys\nsys.exit(0)\ndef has_close_elements(numbers, threshold):\n    return True",
        "    x = bytearray(10**11)\n    return True",
    ]
    for answer in hostile:
        started = time.perf_counter()
        assert env.score(task, answer) == 0.0, answer
        assert time.perf_counter() - started < 15, answer


@pytest.mark.usefixtures("sandbox_ready")
def test_noisy_correct_answer_still_passes(env: HumanEvalEnv) -> None:
    task = env.tasks("test")[0]
    noisy = "    print('x' * 1_000_000)\n" + _canonical(task)
    assert env.score(task, noisy) == 1.0


def test_registry_and_dataset(env: HumanEvalEnv) -> None:
    assert isinstance(get_env("humaneval"), HumanEvalEnv)
    ds = env.as_dataset("test", n=3)
    assert ds.num_rows == 3 and "prompt" in ds.column_names
