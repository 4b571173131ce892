"""JsonlEnv: an env from a file of question/answer rows, with each scorer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from envs import get_env
from envs.jsonl import JsonlEnv
from tools import tool


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    return path


@pytest.fixture
def qa_file(tmp_path: Path) -> Path:
    return write(
        tmp_path / "capitals.jsonl",
        [
            {"question": "Capital of France?", "answer": "Paris", "split": "train"},
            {"question": "Capital of Japan?", "answer": "Tokyo", "split": "test", "id": "jp"},
            {"question": "Capital of Peru?", "answer": ["Lima", "Lima, Peru"], "metadata": {"area": "SA"}},
        ],
    )


def test_rows_splits_ids_and_metadata(qa_file: Path) -> None:
    env = JsonlEnv(qa_file)
    assert env.name == "capitals"
    train, test = env.tasks("train"), env.tasks("test")
    assert [t.question for t in train] == ["Capital of France?", "Capital of Peru?"]  # unsplit rows: both
    assert [t.id for t in test] == ["jp", "capitals-2"]
    assert test[1].metadata == {"area": "SA"}
    assert len(env.tasks("test", n=1)) == 1
    ds = env.as_dataset("test")
    assert ds["prompt"] == ["Capital of Japan?", "Capital of Peru?"]


@pytest.mark.parametrize(
    ("scorer", "answer", "expected"),
    [
        ("exact", "tokyo.", 1.0),
        ("exact", "It is Tokyo", 0.0),
        ("contains", "It is Tokyo, of course", 1.0),
        ("contains", "Kyoto", 0.0),
        ("squad_em", "The Tokyo", 1.0),
        ("squad_f1", "Tokyo city", pytest.approx(2 / 3)),
        ("exact", "", 0.0),
        ("contains", "🙂" * 100_000, 0.0),
    ],
)
def test_named_scorers(qa_file: Path, scorer: str, answer: str, expected: float) -> None:
    env = JsonlEnv(qa_file, scorer=scorer)
    task = env.tasks("test")[0]
    assert env.score(task, answer) == expected


def test_numeric_scorer_and_custom_callable(tmp_path: Path) -> None:
    path = write(tmp_path / "sums.jsonl", [{"question": "1/2 + 1/4?", "answer": "3/4"}])
    env = JsonlEnv(path, scorer="numeric")
    task = env.tasks()[0]
    assert env.score(task, "0.75") == 1.0 and env.score(task, "Final answer: 3/4") == 1.0
    assert env.score(task, "0.7") == 0.0
    lenient = JsonlEnv(path, scorer=lambda answer, ref: 2.0 if ref in answer else -1.0)
    assert lenient.score(task, "3/4") == 1.0 and lenient.score(task, "no") == 0.0  # clipped to [0, 1]


def test_tools_objects_and_names(qa_file: Path) -> None:
    @tool
    def shout(text: str) -> str:
        """Upper-case the text."""
        return text.upper()

    assert JsonlEnv(qa_file, tools=[shout]).tools() == [shout]
    loaded = JsonlEnv(qa_file, tools=["wikipedia_search", shout]).tools()
    assert [t.name for t in loaded] == ["wikipedia_search", "shout"]


def test_bad_files_and_arguments(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no file at"):
        JsonlEnv(tmp_path / "missing.jsonl")
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: not valid JSON"):
        (tmp_path / "bad.jsonl").write_text('{"question": "a", "answer": "b"}\n{oops\n')
        JsonlEnv(tmp_path / "bad.jsonl")
    with pytest.raises(ValueError, match='"question" key'):
        JsonlEnv(write(tmp_path / "noq.jsonl", [{"prompt": "a"}]))
    with pytest.raises(ValueError, match='"answer" key'):
        JsonlEnv(write(tmp_path / "noa.jsonl", [{"question": "a"}]))
    with pytest.raises(ValueError, match="no rows"):
        (tmp_path / "empty.jsonl").write_text("\n")
        JsonlEnv(tmp_path / "empty.jsonl")
    with pytest.raises(ValueError, match="Unknown scorer 'fuzzy'"):
        JsonlEnv(write(tmp_path / "ok.jsonl", [{"question": "a", "answer": "b"}]), scorer="fuzzy")
    with pytest.raises(ValueError, match='needs "tests"'):
        JsonlEnv(tmp_path / "ok.jsonl", scorer="python_tests")


def test_get_env_jsonl_form(qa_file: Path) -> None:
    env = get_env(f"jsonl:{qa_file}", scorer="contains", name="caps")
    assert isinstance(env, JsonlEnv) and env.name == "caps"


def test_python_tests_scorer_runs_in_the_sandbox(tmp_path: Path) -> None:
    pytest.importorskip("tools.python_exec", reason="tools/python_exec.py (the sandbox) is not available")
    path = write(
        tmp_path / "code.jsonl",
        [
            {"question": "Write square(x).", "tests": "assert square(3) == 9\nassert square(-2) == 4"},
            {"question": "cube(x)?", "tests": "def check(f):\n    assert f(2) == 8", "entry_point": "cube"},
        ],
    )
    env = JsonlEnv(path, scorer="python_tests", timeout_s=2)
    square, cube = env.tasks()
    assert env.score(square, "```python\ndef square(x):\n    return x * x\n```") == 1.0
    assert env.score(square, "def square(x):\n    return 2 * x") == 0.0
    assert env.score(cube, "def cube(x):\n    return x ** 3") == 1.0
    assert env.score(cube, "while True: pass") == 0.0  # stopped at timeout_s
    assert env.score(cube, "") == 0.0
