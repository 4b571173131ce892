"""fanoutqa: the 310 dev questions, scored with the package's string accuracy."""

from __future__ import annotations

import pytest

from envs import get_env
from envs.fanoutqa import FanOutQAEnv, answer_in_text, fanoutqa_normalize


@pytest.fixture(scope="module")
def env() -> FanOutQAEnv:
    return FanOutQAEnv()


def test_dev_set(env: FanOutQAEnv) -> None:
    tasks = env.tasks("test")
    assert len(tasks) == 310 and len({t.id for t in tasks}) == 310
    assert env.needs_network
    assert all(t.question and t.reference is not None for t in tasks)
    with pytest.raises(ValueError, match="train_size"):
        env.tasks("train")


def test_train_size_moves_a_fixed_disjoint_subset() -> None:
    env = FanOutQAEnv(train_size=100)
    train, test = env.tasks("train"), env.tasks("test")
    assert len(train) == 100 and len(test) == 210
    assert not {t.id for t in train} & {t.id for t in test}
    assert [t.id for t in FanOutQAEnv(train_size=100).tasks("train")] == [t.id for t in train]


def test_normalize_follows_the_package_steps() -> None:
    assert fanoutqa_normalize("J.D. Drew, 1,234,567 Films!") == "jd drew 1234567 film"
    assert fanoutqa_normalize("$1.027 billion") == "$ 1027 billion"
    assert fanoutqa_normalize("ＡＢＣ") == "abc"


def test_string_accuracy_on_dict_list_and_scalar_answers(env: FanOutQAEnv) -> None:
    reference = {"Pat Burrell": "Right", "Mark Mulder": "Left"}
    assert answer_in_text(reference, "Pat Burrell bats right; Mark Mulder bats left.")[0] == 1.0
    score, missing = answer_in_text(reference, "Pat Burrell: right")
    assert score == 0.5 and set(missing) == {"mark mulder", "left"}
    assert answer_in_text(["Paris", "Rome"], "Rome only")[0] == 0.5
    assert answer_in_text(True, "Yes, it did.")[0] == 1.0
    assert answer_in_text(61.6, "about 61.6 inches")[0] == 1.0
    assert answer_in_text("$1.027 billion", "it made $1.027 billion")[0] == 1.0
    assert answer_in_text("Left", "Leftover")[0] == 0.0  # whole words only


def render(value: object) -> str:
    """An answer written out the way the package's ``str_answer`` does (bools as yes/no)."""
    if isinstance(value, dict):
        return "; ".join(f"{render(k)}: {render(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(map(render, value))
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def test_env_scores_real_questions(env: FanOutQAEnv) -> None:
    for task in env.tasks("test", n=60, seed=3):
        perfect = render(task.reference)
        assert env.score(task, perfect) == 1.0, (task.question, perfect)
        assert env.score(task, "") == 0.0
        assert 0.0 <= env.score(task, "garbage 🙂 " * 1_000) <= 1.0
        details = env.score_details(task, perfect)
        assert details["found_all"] and details["missing"] == []


def test_registry_dataset_and_tools(env: FanOutQAEnv) -> None:
    assert isinstance(get_env("fanoutqa"), FanOutQAEnv)
    ds = env.as_dataset("test", n=4)
    assert ds.num_rows == 4 and "prompt" in ds.column_names
    assert {t.name for t in env.tools()} == {"wikipedia_search", "wikipedia_page"}  # built, not called
