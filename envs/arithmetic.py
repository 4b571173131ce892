"""Procedural arithmetic, from bare expressions to multi-step word problems (anchor: Python).

Levels (``ArithmeticEnv(level=...)``):

1. three two-digit numbers, ``+ - *`` with precedence: ``What is 37 * 48 + 19?``
2. four or five numbers up to three digits, parentheses and exact division.
3. one- or two-step word problems: rates with unit conversion, remainders, percentages, change.
4. three- or four-step word problems: packing and selling, markup and profit, meeting times,
   fuel cost, overtime pay.
5. longer chains with fractions and rounding: tank levels, compound interest with withdrawals,
   combined work rates, discount-tax-tip splits, scaled recipes with whole bags.
6. long bare expressions: six or seven numbers, nested parentheses, no words. For a model with
   Python this sits between levels 2 and 3: nothing to translate, but long enough that copying
   the expression into code goes wrong often, which is the error a check against the question
   can catch.

Every reference is exact: an integer, or a value with the rounding rule stated in the question
("Round your answer to 2 decimal places.", "Give your answer as a fraction in lowest terms.").
An answer is right when its final number is the exact value or rounds to the reference under that
rule (lies strictly within half a unit of it).

Splits never overlap: each split draws from its own seeded stream, and a question belongs to the
split chosen by a hash of its text, so no question text can appear in both.
"""

from __future__ import annotations

import ast
import decimal
import hashlib
import math
import operator
import random
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

from envs.base import Env, Split, Task
from envs.scoring import extract_number

if TYPE_CHECKING:
    from tools import Tool

TEST_BUCKETS = 5  # one question text in five (by hash) belongs to the test split
DEFAULT_SIZES = {"train": 2000, "test": 300}

_RULES = {
    "int": ("", Fraction(0)),
    "round0": (" Round your answer to the nearest whole number.", Fraction(1, 2)),
    "dp2": (" Round your answer to 2 decimal places.", Fraction(1, 200)),
    "fraction": (" Give your answer as a fraction in lowest terms.", Fraction(0)),
}


@dataclass(frozen=True)
class Problem:
    question: str
    value: Fraction
    rule: str = "int"  # a key of _RULES


# ---------------------------------------------------------------------------- expressions

_OPS: dict[type, Callable[[Fraction, Fraction], Fraction]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}


def evaluate(expression: str) -> Fraction:
    """Exact value of an expression of integers, ``+ - * /`` and parentheses."""

    def walk(node: ast.AST) -> Fraction:
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return Fraction(node.value)
        raise ValueError(f"unsupported expression: {expression!r}")

    return walk(ast.parse(expression, mode="eval").body)


def _level1(rng: random.Random) -> Problem:
    a, b, c = (rng.randint(11, 99) for _ in range(3))
    ops = [rng.choice("+-*"), rng.choice("+-*")]
    if "*" not in ops:
        ops[rng.randrange(2)] = "*"
    expr = f"{a} {ops[0]} {b} {ops[1]} {c}"
    return Problem(f"What is {expr}?", evaluate(expr))


_LEVEL2_SHAPES = [
    "({a} - {b}) * {c} + {d}",
    "{a} * {b} - {c} * {d}",
    "({a} + {b}) * ({c} - {d})",
    "{a} * {b} + {c} * {d} - {e}",
    "{a} + {b} * ({c} - {d}) - {e}",
    "({a} * {b} - {c}) / {q}",
    "{a} * {b} / {q} + {c}",
]


def _level2(rng: random.Random) -> Problem:
    while True:
        nums = {k: rng.randint(12, 999) if k in "ac" else rng.randint(3, 99) for k in "abcde"}
        shape = rng.choice(_LEVEL2_SHAPES)
        if "{q}" in shape:
            numerator = evaluate(shape.split(" / ")[0].format(**nums))
            divisors = [q for q in range(3, 60) if numerator % q == 0]
            if not divisors:
                continue
            nums["q"] = rng.choice(divisors)
        expr = shape.format(**nums)
        return Problem(f"What is {expr}?", evaluate(expr))


_LEVEL6_SHAPES = [
    "({a} + {b}) * ({c} - {d}) + {e} * {f}",
    "{a} * ({b} + {c} * {d}) - ({e} - {f})",
    "(({a} - {b}) * {c} + {d}) * {e} - {f}",
    "{a} - {b} * ({c} + {d}) + {e} * ({f} - {g})",
    "({a} * {b} + {c}) - ({d} + {e}) * {f}",
    "{a} * {b} - {c} * ({d} - {e} * {f}) + {g}",
]


def _level6(rng: random.Random) -> Problem:
    nums = {k: rng.randint(12, 999) if k in "ace" else rng.randint(3, 99) for k in "abcdefg"}
    expr = rng.choice(_LEVEL6_SHAPES).format(**nums)
    return Problem(f"What is {expr}?", evaluate(expr))


# ---------------------------------------------------------------------------- word problems

NAMES = ["Maya", "Omar", "Lena", "Kenji", "Sofia", "Tariq", "Ines", "Ravi", "Chloe", "Diego"]


def _rate_time(rng: random.Random) -> Problem:
    rate, hours, minutes = rng.randint(7, 95), rng.randint(2, 9), rng.choice(range(5, 60, 5))
    thing = rng.choice(["bottles", "labels", "bolts", "cans"])
    return Problem(
        f"A machine fills {rate} {thing} per minute. How many {thing} does it fill in "
        f"{hours} hours and {minutes} minutes?",
        Fraction(rate * (60 * hours + minutes)),
    )


def _teams(rng: random.Random) -> Problem:
    size = rng.randint(4, 13)
    people = rng.randint(5 * size, 60 * size)
    if people % size == 0:
        people += rng.randint(1, size - 1)
    return Problem(
        f"{people} runners are split into teams of exactly {size}. How many runners are left "
        "without a full team?",
        Fraction(people % size),
    )


def _sale_price(rng: random.Random) -> Problem:
    price, off = rng.randint(1200, 25000), rng.choice([5, 12, 15, 18, 25, 35, 40])
    cost = Fraction(price, 100)
    return Problem(
        f"A jacket costs ${fixed(cost, 2)} and is on sale for {off}% off. What is the sale price in dollars?",
        cost * (100 - off) / 100,
        "dp2",
    )


def _change(rng: random.Random) -> Problem:
    name, each, count = rng.choice(NAMES), rng.randint(3, 19), rng.randint(3, 12)
    bill = next(b for b in (20, 50, 100, 200, 500) if b > each * count)
    return Problem(
        f"Notebooks cost ${each} each. {name} buys {count} notebooks and pays with a ${bill} bill. "
        f"How much change does {name} get, in dollars?",
        Fraction(bill - each * count),
    )


def _average_speed(rng: random.Random) -> Problem:
    km, minutes = rng.randint(12, 480), rng.randint(14, 300)
    return Problem(
        f"A train travels {km} km in {minutes} minutes. What is its average speed in km/h?",
        Fraction(km * 60, minutes),
        "dp2",
    )


def _boxes_revenue(rng: random.Random) -> Problem:
    per_hour, hours = rng.randint(23, 97), rng.randint(3, 11)
    box, price = rng.randint(6, 16), rng.randint(4, 30)
    return Problem(
        f"A bakery bakes {per_hour} rolls per hour for {hours} hours. It packs them in boxes of "
        f"{box} and sells only full boxes, at ${price} per box. How many dollars does it take in?",
        Fraction((per_hour * hours // box) * price),
    )


def _markup_profit(rng: random.Random) -> Problem:
    count, cost, markup = rng.randint(20, 150), rng.randint(3, 60), rng.choice([15, 20, 25, 30, 35, 45, 60])
    unsold = rng.randint(2, count // 3)
    sold = count - unsold
    return Problem(
        f"A shop buys {count} lamps at ${cost} each and prices them {markup}% above cost. It sells "
        f"all but {unsold} of them. What is its profit in dollars (negative if it lost money)?",
        sold * Fraction(cost * (100 + markup), 100) - count * cost,
        "dp2",
    )


def _meeting_time(rng: random.Random) -> Problem:
    km, v1, v2 = rng.randint(15, 140), rng.randint(9, 32), rng.randint(9, 32)
    return Problem(
        f"Two cyclists start {km} km apart and ride toward each other at {v1} km/h and {v2} km/h. "
        "After how many minutes do they meet?",
        Fraction(km * 60, v1 + v2),
        "round0",
    )


def _fuel_cost(rng: random.Random) -> Problem:
    per100, price = Fraction(rng.randint(45, 129), 10), Fraction(rng.randint(120, 230), 100)
    km = rng.randint(40, 900)
    return Problem(
        f"A car uses {fixed(per100, 1)} litres of fuel per 100 km, and fuel costs ${fixed(price, 2)} per "
        f"litre. How much does a {km} km trip cost in fuel, in dollars?",
        per100 * km / 100 * price,
        "dp2",
    )


def _overtime(rng: random.Random) -> Problem:
    wage, hours = rng.randint(9, 38), rng.randint(42, 61)
    return Problem(
        f"A nurse earns ${wage} per hour for the first 40 hours of a week and 1.5 times that rate for "
        f"every hour beyond 40. How many dollars does she earn in a week of {hours} hours?",
        wage * 40 + Fraction(3, 2) * wage * (hours - 40),
        "dp2",
    )


def _tank_fraction(rng: random.Random) -> Problem:
    while True:
        cap = rng.choice([600, 720, 960, 1200, 1800, 2400, 3600])
        start = rng.choice([Fraction(k, d) for d in (3, 4, 5, 8) for k in range(1, d) if math.gcd(k, d) == 1])
        num, den = start.numerator, start.denominator
        fill, leak, minutes = rng.randint(15, 60), rng.randint(2, 14), rng.randint(5, 25)
        level = Fraction(cap * num, den) + (fill - leak) * minutes
        if level < cap:
            return Problem(
                f"A tank holds {cap} litres and is {num}/{den} full. A pump adds {fill} litres per "
                f"minute while a leak drains {leak} litres per minute. What fraction of the tank is "
                f"full after {minutes} minutes?",
                level / cap,
                "fraction",
            )


def _interest_withdrawals(rng: random.Random) -> Problem:
    balance, rate = Fraction(rng.randint(20, 200) * 100), rng.choice([2, 3, 4, 5, 6, 7])
    take, years = rng.randint(2, 15) * 50, rng.randint(2, 4)
    value = balance
    for _ in range(years):
        value = value * (100 + rate) / 100 - take
    return Problem(
        f"A savings account holds ${fixed(balance, 0)}. It earns {rate}% interest per year, compounded "
        f"yearly, and ${take} is withdrawn at the end of each year after the interest is added. How "
        f"much is in the account after {years} years, in dollars?",
        value,
        "dp2",
    )


def _work_rates(rng: random.Random) -> Problem:
    while True:
        a, b, c = rng.randint(2, 12), rng.randint(2, 12), rng.randint(3, 30)
        net = Fraction(1, a) + Fraction(1, b) - Fraction(1, c)
        if net > 0:
            return Problem(
                f"Pipe A alone fills a pool in {a} hours and pipe B alone in {b} hours; a drain alone "
                f"empties the full pool in {c} hours. With all three open, how many hours does it take "
                "to fill the empty pool?",
                1 / net,
                "fraction",
            )


def _bill_split(rng: random.Random) -> Problem:
    meal, off = Fraction(rng.randint(4000, 40000), 100), rng.choice([10, 15, 20, 25])
    tax = rng.choice([5, 7, 8, 13])
    tip, people = rng.randint(5, 40), rng.randint(3, 9)
    total = meal * (100 - off) / 100 * (100 + tax) / 100 + tip
    return Problem(
        f"A dinner bill is ${fixed(meal, 2)}. A {off}% discount is applied, then {tax}% tax is added to the "
        f"discounted price, then a ${tip} tip. {people} friends split the total equally. How much does "
        "each friend pay, in dollars?",
        total / people,
        "dp2",
    )


def _recipe_bags(rng: random.Random) -> Problem:
    serves, grams = rng.randint(3, 8), rng.randint(150, 900)
    bag, wanted = rng.choice([250, 400, 500, 1000]), rng.randint(20, 150)
    needed = math.ceil(Fraction(grams * wanted, serves) / bag)
    return Problem(
        f"A recipe for {serves} servings uses {grams} grams of flour. Flour is sold in {bag}-gram bags. "
        f"How many bags must be bought to make {wanted} servings?",
        Fraction(needed),
    )


LEVELS: dict[int, list[Callable[[random.Random], Problem]]] = {
    1: [_level1],
    2: [_level2],
    3: [_rate_time, _teams, _sale_price, _change, _average_speed],
    4: [_boxes_revenue, _markup_profit, _meeting_time, _fuel_cost, _overtime],
    5: [_tank_fraction, _interest_withdrawals, _work_rates, _bill_split, _recipe_bags],
    6: [_level6],
}


# ---------------------------------------------------------------------------- the env


def format_reference(value: Fraction, rule: str) -> str:
    """The exact answer written the way the question asks for it."""
    if rule == "fraction" and value.denominator != 1:
        return f"{value.numerator}/{value.denominator}"
    if rule == "dp2":
        return fixed(value, 2)
    if rule == "round0":
        return fixed(value, 0)
    return str(value.numerator) if value.denominator == 1 else fixed(value, 6)


def fixed(value: Fraction, places: int) -> str:
    """``value`` rounded half away from zero to ``places`` decimals, exactly."""
    with decimal.localcontext() as ctx:
        ctx.prec = 60
        exact = decimal.Decimal(value.numerator) / decimal.Decimal(value.denominator)
        return str(exact.quantize(decimal.Decimal(1).scaleb(-places), rounding=decimal.ROUND_HALF_UP))


def split_of(question: str) -> Split:
    """The split a question text belongs to (a pure function of the text)."""
    bucket = int.from_bytes(hashlib.sha256(question.encode()).digest()[:4], "big") % TEST_BUCKETS
    return "test" if bucket == 0 else "train"


class ArithmeticEnv(Env):
    """Seeded arithmetic problems at one difficulty level; the model may compute with Python."""

    name = "arithmetic"
    system_hint = (
        "These are arithmetic problems. You can compute exact results by running Python; "
        "give the final answer as a single number."
    )

    def __init__(self, level: int = 2) -> None:
        if level not in LEVELS:
            raise ValueError(f"ArithmeticEnv level must be one of {sorted(LEVELS)}, got {level!r}.")
        self.level = level

    def tools(self) -> list[Tool]:
        from tools.python_exec import python_tool

        return [python_tool()]

    def tasks(self, split: Split = "test", n: int | None = None, seed: int = 0) -> list[Task]:
        if split not in DEFAULT_SIZES:
            raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
        n = DEFAULT_SIZES[split] if n is None else n
        rng = random.Random(f"arithmetic/{split}/level{self.level}/seed{seed}")
        templates = LEVELS[self.level]
        tasks: list[Task] = []
        seen: set[str] = set()
        attempts = 0
        while len(tasks) < n:
            attempts += 1
            if attempts > 50 * n + 1000:
                raise RuntimeError(f"could not draw {n} distinct level-{self.level} {split} problems")
            template = templates[len(tasks) % len(templates)]
            problem = template(rng)
            question = problem.question + _RULES[problem.rule][0]
            if question in seen or split_of(question) != split:
                continue
            seen.add(question)
            digest = hashlib.sha256(question.encode()).hexdigest()[:10]
            tasks.append(
                Task(
                    id=f"arithmetic-L{self.level}-{digest}",
                    question=question,
                    reference=format_reference(problem.value, problem.rule),
                    metadata={
                        "level": self.level,
                        "kind": template.__name__.lstrip("_"),
                        "rule": problem.rule,
                        "exact": str(problem.value),
                        "abs_tol": str(_RULES[problem.rule][1]),
                    },
                )
            )
        return tasks

    def score(self, task: Task, answer: str) -> float:
        """1.0 if the final number is the exact value, or rounds to the reference under the
        question's rule (strictly within half a unit of it), else 0.0."""
        predicted = extract_number(answer)
        if predicted is None:
            return 0.0
        half_unit = Fraction(task.metadata.get("abs_tol", "0"))
        exact = Fraction(task.metadata.get("exact", task.reference))
        error = abs(predicted - Fraction(task.reference))
        return float(predicted == exact or error == 0 or error < half_unit)
