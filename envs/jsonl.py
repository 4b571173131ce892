"""An environment from a JSONL file: one ``{"question": ..., "answer": ...}`` object per line.

Optional keys per row: ``id``, ``split`` ("train"/"test"; rows without it belong to both),
``tests`` (Python run after the answer's code, for ``scorer="python_tests"``), ``entry_point``
(then ``check(entry_point)`` is called if the tests define ``check``) and ``metadata``.

    env = JsonlEnv("capitals.jsonl", scorer="exact", tools=["wikipedia_search"], name="capitals")
    env = get_env("jsonl:capitals.jsonl", scorer="contains")
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from envs import scoring
from envs.base import Env, Split, Task

if TYPE_CHECKING:
    from tools import Tool

SCORER_NAMES = (*scoring.SCORERS, "python_tests")


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The file's rows; a malformed line raises ValueError naming the file, line and fix."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not valid JSON ({exc.msg}).") from None
            if not isinstance(row, dict) or "question" not in row:
                raise ValueError(f'{path}:{number}: each line must be an object with a "question" key.')
            rows.append(row)
    if not rows:
        raise ValueError(f"{path} holds no rows; write one JSON object per line.")
    return rows


class JsonlEnv(Env):
    """Questions and references from a JSONL file, scored by a named scorer or your own function.

    ``scorer``: ``"exact"``, ``"numeric"``, ``"contains"``, ``"squad_em"``, ``"squad_f1"``,
    ``"python_tests"`` (the row's ``tests`` run in the sandbox), or a callable
    ``(answer, reference) -> float``. ``tools``: Tool objects or names for ``tools.load_tools`` (one
name may be a plain string); names are checked here, before any model is loaded.
    ``timeout_s`` bounds each ``python_tests`` run.
    """

    def __init__(
        self,
        path: str | Path,
        scorer: str | Callable[[str, Any], float] = "exact",
        tools: Sequence[Tool | str] | str = (),
        name: str | None = None,
        system_hint: str = "",
        timeout_s: float = 10.0,
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"JsonlEnv: no file at {self.path} (resolved to {self.path.resolve()}).")
        if isinstance(scorer, str) and scorer not in SCORER_NAMES:
            raise ValueError(
                f"Unknown scorer {scorer!r}; choose one of {list(SCORER_NAMES)} or pass a callable."
            )
        self.scorer = scorer
        self.name = name or self.path.stem
        self.system_hint = system_hint
        self.timeout_s = timeout_s
        # one tool may be given as a plain string ("python", "my_tools:days_between"), as a command line does
        self._tools = [tools] if isinstance(tools, str) else list(tools)
        from tools.registry import check_tool_names

        check_tool_names([t for t in self._tools if isinstance(t, str)])
        self.rows = read_rows(self.path)
        if scorer == "python_tests":
            missing = [i for i, row in enumerate(self.rows, start=1) if not row.get("tests")]
            if missing:
                raise ValueError(
                    f'{self.path}: scorer "python_tests" needs "tests" on each row (rows {missing[:5]}).'
                )
        elif any("answer" not in row for row in self.rows):
            raise ValueError(f'{self.path}: every row needs an "answer" key for scorer {scorer!r}.')

    def tools(self) -> list[Tool]:
        names = [t for t in self._tools if isinstance(t, str)]
        if not names:
            return list(self._tools)
        from tools import load_tools

        return load_tools(self._tools)

    def tasks(self, split: Split = "test", n: int | None = None, seed: int = 0) -> list[Task]:
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
        tasks = [self._task(i, row) for i, row in enumerate(self.rows) if row.get("split", split) == split]
        if seed:
            tasks.sort(key=lambda t: hashlib.sha256(f"{seed}|{t.id}".encode()).digest())
        return tasks[:n]

    def _task(self, index: int, row: dict[str, Any]) -> Task:
        if self.scorer == "python_tests":
            reference: Any = {"tests": row["tests"], "entry_point": row.get("entry_point")}
        else:
            reference = row["answer"]
        return Task(
            id=str(row.get("id", f"{self.name}-{index}")),
            question=str(row["question"]),
            reference=reference,
            metadata=dict(row.get("metadata", {})),
        )

    def _program(self, task: Task, answer: str) -> scoring.ProgramWithTests:
        entry_point = task.reference.get("entry_point")
        code = scoring.extract_code(answer, entry_point)
        return scoring.tests_program(code, task.reference["tests"], entry_point)

    def score(self, task: Task, answer: str) -> float:
        if self.scorer == "python_tests":
            return scoring.python_tests_score(self._program(task, answer), timeout_s=self.timeout_s)
        score_fn = self.scorer if callable(self.scorer) else scoring.get_scorer(self.scorer)
        return min(1.0, max(0.0, float(score_fn(answer, task.reference))))

    def answer_key(self, answer: str | None) -> str | None:
        """Answers are the same as the scorer reads them: text for ``exact``, ``contains`` and the SQuAD scorers,
        code for ``python_tests``; ``numeric`` and a function of yours by the default (number, else text)."""
        if self.scorer in ("squad_em", "squad_f1"):
            return scoring.text_answer_key(answer)
        if self.scorer in ("exact", "contains"):
            return scoring.text_answer_key(answer, squad=False)
        if self.scorer == "python_tests":
            return scoring.code_answer_key(answer)
        return super().answer_key(answer)

    async def ascore(self, task: Task, answer: str) -> float:
        if self.scorer == "python_tests":
            return await scoring.apython_tests_score(self._program(task, answer), timeout_s=self.timeout_s)
        return await super().ascore(task, answer)
