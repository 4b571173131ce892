"""The arithmetic env: seeded, leveled, disjoint splits, exact references, tolerant scoring."""

from __future__ import annotations

from fractions import Fraction

import pytest

from envs import get_env
from envs.arithmetic import LEVELS, ArithmeticEnv, evaluate, fixed, split_of


@pytest.mark.parametrize("level", sorted(LEVELS))
def test_splits_never_share_a_question(level: int) -> None:
    env = ArithmeticEnv(level=level)
    train = {t.question for t in env.tasks("train", n=1500, seed=0)}
    test = {t.question for t in env.tasks("test", n=300, seed=0)}
    other_seed = {t.question for t in env.tasks("test", n=300, seed=1)}
    assert len(train) == 1500 and len(test) == 300  # no duplicates inside a split
    assert not train & test
    assert not train & other_seed
    assert all(split_of(q) == "test" for q in test | other_seed)


def test_seeded_and_deterministic() -> None:
    env = ArithmeticEnv(level=3)
    assert env.tasks("test", n=20, seed=7) == env.tasks("test", n=20, seed=7)
    assert env.tasks("test", n=20, seed=7) != env.tasks("test", n=20, seed=8)
    assert len(env.tasks("train")) == 2000  # n=None gives the default size


@pytest.mark.parametrize("level", sorted(LEVELS))
def test_reference_answers_score_one_and_wrong_answers_zero(level: int) -> None:
    env = ArithmeticEnv(level=level)
    for task in env.tasks("test", n=40, seed=3):
        exact = Fraction(task.metadata["exact"])
        assert env.score(task, task.reference) == 1.0
        assert env.score(task, f"Final answer: {task.reference}") == 1.0
        assert env.score(task, f"\\boxed{{{task.reference}}}") == 1.0
        assert env.score(task, f"{exact.numerator}/{exact.denominator}") == 1.0  # the exact value is fine
        assert env.score(task, str(exact + 1)) == 0.0
        assert env.score(task, "") == 0.0
        assert env.score(task, "I don't know") == 0.0


def test_level_one_matches_the_brief() -> None:
    task = ArithmeticEnv(level=1).tasks("test", n=1)[0]
    assert task.question.startswith("What is ") and task.question.endswith("?")
    assert Fraction(task.reference) == evaluate(task.question.removeprefix("What is ").rstrip("?"))


def test_level_six_is_a_long_bare_expression_with_nested_brackets() -> None:
    tasks = ArithmeticEnv(level=6).tasks("test", n=60)
    for task in tasks:
        expression = task.question.removeprefix("What is ").rstrip("?")
        assert Fraction(task.reference) == evaluate(expression)
        assert len([tok for tok in expression.split() if tok.strip("()").isdigit()]) >= 6
        assert "(" in expression
    assert len({t.question.count("(") for t in tasks}) > 1  # more than one bracket pattern


def test_word_problems_state_the_rounding_rule() -> None:
    for level in (3, 4, 5):
        for task in ArithmeticEnv(level=level).tasks("test", n=60):
            rule = task.metadata["rule"]
            if rule == "dp2":
                assert "2 decimal places" in task.question and task.reference.count(".") == 1
            elif rule == "fraction":
                assert "fraction in lowest terms" in task.question
            elif rule == "round0":
                assert "nearest whole number" in task.question
        kinds = {t.metadata["kind"] for t in ArithmeticEnv(level=level).tasks("test", n=20)}
        assert len(kinds) == len(LEVELS[level])  # every template of the level is used


def test_rounded_answers_use_half_unit_tolerance() -> None:
    env = ArithmeticEnv(level=4)
    task = next(t for t in env.tasks("test", n=50) if t.metadata["rule"] == "dp2")
    value = Fraction(task.reference)
    assert env.score(task, f"{float(value) + 0.004:.3f}") == 1.0
    assert env.score(task, f"{float(value) + 0.01:.2f}") == 0.0
    assert env.score(task, f"${float(value):,.2f}") == 1.0  # dollar sign and thousands separators


def test_fixed_rounds_half_up_exactly() -> None:
    assert fixed(Fraction(5, 2), 0) == "3"
    assert fixed(Fraction(-5, 2), 0) == "-3"
    assert fixed(Fraction(1, 3), 2) == "0.33"
    assert fixed(Fraction(2675, 1000), 2) == "2.68"  # float rounding would give 2.67


def test_constructor_and_registry() -> None:
    env = get_env("arithmetic", level=5)
    assert isinstance(env, ArithmeticEnv) and env.level == 5
    assert "Python" in env.system_hint
    with pytest.raises(ValueError, match="level must be one of"):
        ArithmeticEnv(level=99)
    with pytest.raises(ValueError, match="split"):
        env.tasks("validation")  # type: ignore[arg-type]


def test_as_dataset() -> None:
    ds = ArithmeticEnv(level=2).as_dataset("train", n=8)
    assert ds.num_rows == 8 and {"prompt", "task_id", "env"} <= set(ds.column_names)
    assert ds[0]["prompt"].startswith("What is ")
