"""Every scorer against right, wrong and edge-case answers."""

from __future__ import annotations

import time
from fractions import Fraction

import pytest

from envs import scoring
from envs.scoring import (
    complete_function,
    contains_match,
    exact_match,
    extract_answer,
    extract_code,
    extract_number,
    numeric_match,
    squad_exact_match,
    squad_f1,
    squad_normalize,
)

EDGE_CASES = ["", "   ", "\x00\x01garbage}{", "🙂🙃 ünïcödé ∑∫", "x" * 2_000_000, "9" * 50_000, "{" * 10_000]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("37 * 48 + 19 = 1795", Fraction(1795)),
        ("The answer is $1,234.50.", Fraction("1234.50")),
        ("Final answer: 3/4", Fraction(3, 4)),
        (r"so the result is \boxed{\frac{3}{4}}", Fraction(3, 4)),
        (r"\boxed{42}", Fraction(42)),
        ("It is 12 km.", Fraction(12)),
        ("x = 5\nprint(x)\n\n5", Fraction(5)),
        ("The change is -7 dollars", Fraction(-7)),
        ("\u221212", Fraction(-12)),
        ("1 1/2 cups", Fraction(3, 2)),
        ("Final answer: 42 (in 3 steps)", Fraction(42)),
        ("The total is 12 * 3 = 36 apples.\nHope this helps!", Fraction(36)),
        ("1.5e3", Fraction(1500)),
        ("about 15%", Fraction(15)),
        ("a = b = c = 0.25", Fraction(1, 4)),
        ("Answer: 1,000,000", Fraction(1_000_000)),
    ],
)
def test_extract_number(text: str, expected: Fraction) -> None:
    assert extract_number(text) == expected


@pytest.mark.parametrize("text", ["", "no digits here", "Answer: \u0663", "9" * 5000, "¯\\_(ツ)_/¯"])
def test_extract_number_none(text: str) -> None:
    assert extract_number(text) is None


def test_extract_answer_markers() -> None:
    assert extract_answer("blah\nFinal answer: Paris\nmore") == "Paris"
    assert extract_answer(r"we get \boxed{x^{2}}") == "x^{2}"
    assert extract_answer("just text") == "just text"
    assert extract_answer("") == ""


def test_numeric_match_right_wrong_and_tolerance() -> None:
    assert numeric_match("The answer is 1795.", 1795) == 1.0
    assert numeric_match("The answer is 1796.", 1795) == 0.0
    assert numeric_match("0.75", "3/4") == 1.0
    assert numeric_match("3.14", "3.14159", abs_tol=0.005) == 1.0
    assert numeric_match("3.15", "3.14159", abs_tol=0.005) == 0.0
    assert numeric_match("1e9", 1_000_000_001, abs_tol=0, rel_tol=1e-6) == 1.0
    assert numeric_match("42", float("nan")) == 0.0
    assert numeric_match("42", "not a number") == 0.0


@pytest.mark.parametrize("answer", EDGE_CASES)
@pytest.mark.parametrize(
    "scorer",
    [numeric_match, exact_match, contains_match, squad_exact_match, squad_f1],
)
def test_scorers_survive_edge_cases(scorer, answer: str) -> None:
    started = time.perf_counter()
    value = scorer(answer, "1795")
    assert value == 0.0
    assert time.perf_counter() - started < 2.0


def test_exact_match() -> None:
    assert exact_match("Paris", "paris") == 1.0
    assert exact_match("  PARIS. ", "Paris") == 1.0
    assert exact_match("Final answer: Paris", ["Lyon", "Paris"]) == 1.0
    assert exact_match("Paris, France", "Paris") == 0.0
    assert exact_match("ｐａｒｉｓ", "paris") == 1.0  # NFKC folds full-width letters
    assert exact_match("München", "münchen") == 1.0
    assert exact_match("", "") == 1.0


def test_contains_match_whole_words() -> None:
    assert contains_match("I think it is Paris, France.", "Paris") == 1.0
    assert contains_match("Parisian", "Paris") == 0.0
    assert contains_match("anything", "") == 0.0
    assert contains_match("São Paulo is big", "são paulo") == 1.0


def test_squad_metrics() -> None:
    assert squad_normalize("The  Eiffel-Tower!") == "eiffeltower"
    assert squad_exact_match("the Beatles", "Beatles") == 1.0
    assert squad_exact_match("The Rolling Stones", "Beatles") == 0.0
    assert squad_f1("Bram Stoker", "Bram Stoker") == 1.0
    assert squad_f1("Stoker", "Bram Stoker") == pytest.approx(2 / 3)
    assert squad_f1("Mary Shelley", "Bram Stoker") == 0.0
    assert squad_f1("Answer: Stoker", ["Bram Stoker", "Stoker"]) == 1.0


def test_extract_code_prefers_the_block_defining_the_entry_point() -> None:
    answer = "Try:\n```python\nprint('x')\n```\nthen\n```python\ndef f(x):\n    return x\n```"
    assert extract_code(answer, "f") == "def f(x):\n    return x"
    assert extract_code("```\nreturn 1\n```") == "return 1"
    assert extract_code("def g(): pass") == "def g(): pass"
    assert extract_code("```python\ndef f():\n    return 1") == "def f():\n    return 1"  # unclosed fence
    assert extract_code("") == ""


def test_complete_function() -> None:
    prompt = 'def f(x):\n    """Double."""\n'
    full = complete_function(prompt, "def f(x):\n    return 2 * x", "f")
    body = complete_function(prompt, "    return 2 * x", "f")
    flush = complete_function(prompt, "if x:\n    return 2 * x\nreturn 0", "f")
    empty = complete_function(prompt, "", "f")
    namespace: dict = {}
    for program in (full, body, flush):
        exec(compile(program, "<test>", "exec"), namespace)  # our own fixed strings, not model output
        assert namespace["f"](3) == 6
    compile(empty, "<test>", "exec")


def test_get_scorer() -> None:
    assert scoring.get_scorer("exact") is exact_match
    with pytest.raises(ValueError, match="Unknown scorer 'fuzzy'.*exact"):
        scoring.get_scorer("fuzzy")


def test_tests_program_hoists_future_imports_and_ends_with_the_marker() -> None:
    code = "from __future__ import annotations\ndef f(): return 1"
    program = scoring.tests_program(code, "assert f() == 1")
    assert program.source.startswith("from __future__ import annotations\n")
    assert program.source.rstrip().endswith("flush()") and program.marker in program.source
    assert scoring.tests_program("x", "y").marker != program.marker


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("def add(a, b):\n    return a + b", 1.0),
        ("def add(a, b):\n    return a - b", 0.0),
        ("", 0.0),
        ("}{ garbage (", 0.0),
        ("def add(a, b):\n    '''ünïcödé 🙂'''\n    return a + b", 1.0),
        ("# " + "x" * 1_000_000 + "\ndef add(a, b):\n    return a + b", 1.0),
        ("import sys\nsys.exit(0)", 0.0),
    ],
)
def test_python_tests_score_in_the_sandbox(code: str, expected: float) -> None:
    pytest.importorskip("tools.python_exec", reason="tools/python_exec.py (the sandbox) is not available")
    program = scoring.tests_program(code, "def check(f):\n    assert f(2, 3) == 5\n", "add")
    assert scoring.python_tests_score(program, timeout_s=5) == expected
