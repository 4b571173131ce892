"""Self-correction metrics, per attempt (as in SCoRe), with 95% confidence intervals.

Acc@t1 / Acc@t2: accuracy of the first and the last answer. Δ = Acc@t2 − Acc@t1.
Δi→c: share of runs whose first answer was wrong and last right; Δc→i the reverse.
Confirmatory verification rate: of the runs that went through the verify step, the share whose
answer did not change. Verification precision: of those confirmations, the share that were right
(how much the model's agreement with itself is worth). A run counts as correct when its score is
at least 0.5; runs with no answer count as wrong for accuracy, and are counted apart as "no answer"
(with why each run stopped), so that a table of runs that never answered does not read as one of
wrong answers. Vacuous check rate: of the runs that went
through the verify step, the share whose check computed nothing new — no tool call, only calls that
repeat the first attempt's own computation (the same query; for code, the same arithmetic in any form:
``x = 48 + 36 * 7`` then ``print(x)`` repeats ``print(48 + 36 * 7)``, see ``repeats_computation``), or
code that computes nothing from the question (``computes_nothing``: ``print(489)``): such a check cannot
catch the error it exists for.
Separable vacuous rate: the same, leaving out the checks that cannot be told apart — a first attempt
that wrote the question's own expression (``print(48 + 36 * 7)`` for "What is 48 + 36 * 7?"), checked
by that computation again, in any form. Copying the code and reading the question again compute the
same thing there, so the plain rate counts such a check as vacuous whichever the model did
(``rereads_question``).
"""

from __future__ import annotations

import ast
import hashlib
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence

from pydantic import BaseModel, Field

from agent.repeats import call_key
from training.trajectory import Trajectory


class Rate(BaseModel):
    value: float
    low: float
    high: float
    n: int

    def __str__(self) -> str:
        return f"{100 * self.value:.1f}% [{100 * self.low:.1f}, {100 * self.high:.1f}]"


class DiffRate(Rate):
    """A difference of two paired rates (last − first attempt on the same runs), with a 95% interval."""

    def __str__(self) -> str:
        return f"{100 * self.value:+.1f} [{100 * self.low:+.1f}, {100 * self.high:+.1f}]"


class Metrics(BaseModel):
    n: int
    acc_t1: Rate
    acc_t2: Rate
    delta: DiffRate
    delta_i_to_c: Rate
    delta_c_to_i: Rate
    tool_use_rate: Rate  # runs with at least one tool call
    tool_error_rate: Rate  # failed calls among all calls
    parse_error_rate: Rate  # turns the parser could not read
    answered_rate: Rate
    # runs that ended without any answer, and why runs stopped (verified, answered, max_turns, error)
    no_answer_rate: Rate = Field(default_factory=lambda: Rate(value=0.0, low=0.0, high=0.0, n=0))
    stop_reasons: dict[str, int] = Field(default_factory=dict)
    confirmatory_rate: Rate
    verification_precision: Rate
    vacuous_check_rate: Rate  # verify steps that computed nothing new (see ``is_vacuous_check``)
    # the same, among the checks that are not the question's own expression written again (``rereads_question``)
    vacuous_separable_rate: Rate = Field(default_factory=lambda: Rate(value=0.0, low=0.0, high=0.0, n=0))
    mean_turns: float
    mean_tool_calls: float
    mean_model_tokens: float
    mean_seconds: float

    @property
    def no_answers(self) -> int:
        """How many runs ended without an answer."""
        return round(self.no_answer_rate.value * self.n)


def wilson(successes: int, n: int, z: float = 1.96) -> Rate:
    if n == 0:
        return Rate(value=0.0, low=0.0, high=0.0, n=0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # at 0 or n successes the bound is exactly 0 or 1 (the formula leaves a rounding hair, e.g. 7e-18)
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return Rate(value=p, low=low, high=high, n=n)


def paired_difference(first: Sequence[bool], last: Sequence[bool], z: float = 1.96) -> DiffRate:
    """``mean(last) - mean(first)`` on the same runs, with Newcombe's paired score interval.

    Built from the two Wilson intervals and the (continuity-corrected) correlation of the pairs
    (Newcombe 1998, method 10), so it stays inside [-1, 1] and keeps a sensible width when every
    pair agrees, where a normal approximation collapses to a zero-width interval.
    """
    n = len(first)
    if n == 0:
        return DiffRate(value=0.0, low=0.0, high=0.0, n=0)
    pairs = list(zip(first, last, strict=True))
    both = sum(a and b for a, b in pairs)
    lost = sum(a and not b for a, b in pairs)  # right first, wrong last
    gained = sum(not a and b for a, b in pairs)
    neither = n - both - lost - gained
    p1, p2 = (both + lost) / n, (both + gained) / n
    r1, r2 = wilson(both + lost, n, z), wilson(both + gained, n, z)
    product = (both + lost) * (gained + neither) * (both + gained) * (lost + neither)
    agree = both * neither - lost * gained
    if agree > 0:  # Newcombe's correction: without it, identical pairs give a zero-width interval
        agree = max(agree - n / 2, 0.0)
    phi = agree / math.sqrt(product) if product else 0.0
    below = math.sqrt(max(0.0, (p2 - r2.low) ** 2 - 2 * phi * (p2 - r2.low) * (r1.high - p1) + (r1.high - p1) ** 2))
    above = math.sqrt(max(0.0, (r2.high - p2) ** 2 - 2 * phi * (r2.high - p2) * (p1 - r1.low) + (p1 - r1.low) ** 2))
    value = p2 - p1
    return DiffRate(value=value, low=max(-1.0, value - below), high=min(1.0, value + above), n=n)


def normalize_answer(text: str) -> str:
    return " ".join(text.lower().strip().rstrip(".").split())


def _call_key(message: dict) -> str:
    return call_key(message.get("name", ""), message.get("arguments"))


def verify_calls(traj: Trajectory) -> tuple[list[dict], list[dict]] | None:
    """Tool calls (the ``tool`` messages) before and after the (first) verify instruction; ``None`` if
    the run never got one."""
    roles = [m.get("role") for m in traj.messages]
    if "verify" not in roles:
        return None
    at = roles.index("verify")
    calls = [(i, m) for i, m in enumerate(traj.messages) if m.get("role") == "tool"]
    return [m for i, m in calls if i < at], [m for i, m in calls if i > at]


def is_vacuous_check(traj: Trajectory, *, any_form: bool = True) -> bool | None:
    """True when the verify step computed nothing new: no tool call, or only calls that repeat the
    first attempt's own computation (``repeats_computation``; with ``any_form=False`` only the same
    call counts as a repeat), compute nothing from the question (``computes_nothing``), or carry over
    a number the first attempt made up (one its code has and the question does not: copied from the
    code, not read from the question)."""
    split = verify_calls(traj)
    if split is None:
        return None
    before, after = split
    numbers = _numbers(traj.question)
    made_up = set().union(*(_literals(_code(m)) for m in before)) - numbers
    return all(repeats_computation(m, before, any_form=any_form) or computes_nothing(_code(m), numbers)
               or bool(_literals(_code(m)) & made_up) for m in after)


def repeats_computation(call: dict, before: Sequence[dict], *, any_form: bool = True) -> bool:
    """True when a tool call computes only what the calls in ``before`` computed: the same call
    (whitespace aside), or (``any_form``) code whose every arithmetic operation one of them already
    computed and that computes nothing else (``x = 48 + 36 * 7`` / ``print(x)`` repeats
    ``print(48 + 36 * 7)``: a new name or a ``print`` is not a new computation; ``a = 36 * 7`` /
    ``print(48 + a)`` is another route), or code that computes each of their whole expressions again as
    a result of its own, whatever it adds (``a = 36 * 7`` / ``b = 48 + 9 * 5`` / ``print(b)`` repeats
    ``print(48 + 9 * 5)``: an unrelated extra line is not another route to the answer). A check that takes
    a first attempt's part into the whole question (``print((23 - 34) * 688 + 70)``, then
    ``print(((23 - 34) * 688 + 70) * 791 - 46)``) computes something new."""
    if _call_key(call) in {_call_key(m) for m in before}:
        return True
    if not any_form:
        return False
    nodes = _nodes(_code(call))
    if not nodes:
        return False
    done = set().union(*(_expressions(_code(m)) for m in before))
    computing = [n for n in nodes if _computes(n)]
    if computing and all(isinstance(n, ast.BinOp) and ast.dump(n) in done for n in computing):
        return True
    whole = set().union(*(_whole_expressions(_code(m)) for m in before))
    return bool(whole) and whole <= _whole_expressions(_code(call))


def rereads_question(traj: Trajectory) -> bool | None:
    """True when the verify step only repeats first-attempt code that computes the question's own
    expression (equal as parsed, so spacing and redundant brackets do not matter; in any form, see
    ``repeats_computation``): what a fresh reading of the question computes, so copying cannot be told
    from re-reading. ``None`` without a verify step."""
    split = verify_calls(traj)
    if split is None:
        return None
    before, after = split
    expression = question_expression(traj.question)
    if expression is None or not after:
        return False
    return all(repeats_computation(m, before) and expression in _expressions(_code(m)) for m in after)


_EXPRESSION_SPAN = re.compile(r"[\d(][\d\s+\-*/().]*[\d)]")


def question_expression(question: str) -> str | None:
    """The longest arithmetic expression written in a question (at least one operator), as an AST dump."""
    for span in sorted(_EXPRESSION_SPAN.findall(question or ""), key=len, reverse=True):
        try:
            node = ast.parse(span.strip(), mode="eval").body
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue
        if isinstance(node, ast.BinOp):
            return ast.dump(node)
    return None


def _nodes(code: object) -> list[ast.AST] | None:
    """Every node of a piece of Python code, names bound by a plain assignment read as what they hold
    (``_named_by_value``); ``None`` when it is not code or does not parse."""
    if not isinstance(code, str):
        return None
    try:
        return list(ast.walk(_named_by_value(ast.parse(code))))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def _named_by_value(tree: ast.Module) -> ast.Module:
    """``tree`` with each read of a name bound by a plain top-level assignment (``a = 240 + 24``) renamed
    after the expression it holds, so that renaming a variable is not another computation: ``y = 240 + 24``
    / ``print(y * 3)`` computes what ``num = 240 + 24`` / ``print(num * 3)`` does. The name stays a name, so
    ``a = 36 * 7`` / ``print(48 + a)`` still differs from ``print(48 + 36 * 7)``. A name also bound any other
    way (a loop, ``+=``, a nested block) is left as it is from there on."""
    held: dict[str, str] = {}

    class Rename(ast.NodeTransformer):
        def visit_Name(self, node: ast.Name) -> ast.AST:
            if isinstance(node.ctx, ast.Load) and node.id in held:
                return ast.copy_location(ast.Name(id=f"<{held[node.id]}>", ctx=node.ctx), node)
            return node

    rename = Rename()
    for statement in tree.body:  # renamed in place: a statement is never itself a name
        target = statement.targets[0] if isinstance(statement, ast.Assign) and len(statement.targets) == 1 else None
        if isinstance(target, ast.Name):
            statement.value = rename.visit(statement.value)  # the value may itself be a name (`b = a`)
            held[target.id] = hashlib.sha1(ast.dump(statement.value).encode()).hexdigest()[:16]  # stays short
        else:
            for node in ast.walk(statement):
                if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
                    held.pop(node.id, None)
            rename.visit(statement)
    return tree


def _expressions(code: object) -> set[str]:
    """AST dumps of every operation in a piece of code (empty when it is not code or does not parse)."""
    return {ast.dump(n) for n in _nodes(code) or [] if isinstance(n, ast.BinOp)}


def _whole_expressions(code: object) -> set[str]:
    """AST dumps of the operations in a piece of code that are no part of a larger one (``48 + 9 * 5``, not
    ``9 * 5``): what the code computes as its results."""
    operations = [n for n in _nodes(code) or [] if isinstance(n, ast.BinOp)]
    parts = {id(child) for n in operations for child in (n.left, n.right)}
    return {ast.dump(n) for n in operations if id(n) not in parts}


def _code(call: dict) -> object:
    return (call.get("arguments") or {}).get("code")


def _literals(code: object) -> set[float]:
    """The number literals of a piece of Python code (empty when it is not code or does not parse)."""
    return _number_literals(_nodes(code) or [])


def _number_literals(nodes: Iterable[ast.AST]) -> set[float]:
    return {float(n.value) for n in nodes
            if isinstance(n, ast.Constant) and isinstance(n.value, int | float) and not isinstance(n.value, bool)}


def computes_nothing(code: object, question_numbers: set[float]) -> bool:
    """Code that only prints constants (``print(10160)``: the answer written out), or whose numbers
    are none of the question's (``print(10160 * 1)``). Such a "check" is decided before it runs: it
    cannot catch an error, and a reward for checking must not pay for it. Code that does not parse,
    or uses no number at all, is not judged here."""
    nodes = _nodes(code)
    if nodes is None:
        return False
    if not any(_computes(n) for n in nodes):
        return True
    literals = _number_literals(nodes)
    return bool(literals) and bool(question_numbers) and not literals & question_numbers


_COMPUTING = (ast.BinOp, ast.BoolOp, ast.Compare, ast.Subscript, ast.For, ast.While, ast.comprehension,
              ast.FunctionDef, ast.Lambda)


def _computes(node: ast.AST) -> bool:
    """An operation, loop, definition or call other than ``print``: a node that computes something."""
    return isinstance(node, _COMPUTING) or (isinstance(node, ast.Call) and not _is_print(node))


def _is_print(call: ast.Call) -> bool:
    return isinstance(call.func, ast.Name) and call.func.id == "print"


def _numbers(text: str) -> set[float]:
    return {float(x) for x in re.findall(r"\d+(?:\.\d+)?", text or "")}


def compute_metrics(trajectories: Sequence[Trajectory]) -> Metrics:
    n = len(trajectories)
    first = [t.first_right for t in trajectories]
    last = [t.last_right for t in trajectories]
    verified = [t for t in trajectories if len(t.attempts) >= 2]
    confirmed = [t for t in verified
                 if normalize_answer(t.attempts[0].answer) == normalize_answer(t.attempts[-1].answer)]
    confirmed_right = sum(t.last_right for t in confirmed)
    calls = sum(t.tool_calls for t in trajectories)
    # every recorded tool error counts against the calls made (a refused over-budget call included)
    errors = min(sum(t.tool_errors for t in trajectories), calls) if calls else 0
    turns = sum(t.turns for t in trajectories)
    vacuous = [is_vacuous_check(t) for t in trajectories]
    checks = [v for v in vacuous if v is not None]
    separable = [v for t, v in zip(trajectories, vacuous) if rereads_question(t) is False]
    return Metrics(
        n=n,
        acc_t1=wilson(sum(first), n),
        acc_t2=wilson(sum(last), n),
        delta=paired_difference(first, last),
        delta_i_to_c=wilson(sum(not a and b for a, b in zip(first, last)), n),
        delta_c_to_i=wilson(sum(a and not b for a, b in zip(first, last)), n),
        tool_use_rate=wilson(sum(t.tool_calls > 0 for t in trajectories), n),
        tool_error_rate=wilson(errors, calls),
        parse_error_rate=wilson(min(sum(t.parse_errors for t in trajectories), turns), turns),
        answered_rate=wilson(sum(bool(t.attempts) for t in trajectories), n),
        no_answer_rate=wilson(sum(not t.attempts for t in trajectories), n),
        stop_reasons=stop_reasons(trajectories),
        confirmatory_rate=wilson(len(confirmed), len(verified)),
        verification_precision=wilson(confirmed_right, len(confirmed)),
        vacuous_check_rate=wilson(sum(checks), len(checks)),
        vacuous_separable_rate=wilson(sum(map(bool, separable)), len(separable)),
        mean_turns=turns / n if n else 0.0,
        mean_tool_calls=calls / n if n else 0.0,
        mean_model_tokens=sum(t.num_model_tokens for t in trajectories) / n if n else 0.0,
        mean_seconds=sum(t.timings.total_s for t in trajectories) / n if n else 0.0,
    )


def metrics_by_env(trajectories: Sequence[Trajectory]) -> dict[str, Metrics]:
    """Metrics per env, plus ``"all"`` when there is more than one env."""
    envs = sorted({t.env for t in trajectories})
    out = {env: compute_metrics([t for t in trajectories if t.env == env]) for env in envs}
    if len(envs) != 1:
        out["all"] = compute_metrics(trajectories)
    return out


def stop_reasons(trajectories: Sequence[Trajectory]) -> dict[str, int]:
    """How many runs stopped for each reason, most first (a failed run's cause is counted as "error")."""
    reasons = Counter("error" if t.stop_reason.startswith("error") else t.stop_reason or "?" for t in trajectories)
    return dict(reasons.most_common())


def stops_text(m: Metrics) -> str:
    """``"verified 3, max_turns 1"``: why the runs stopped."""
    return ", ".join(f"{reason} {count}" for reason, count in m.stop_reasons.items())


def summary_line(name: str, m: Metrics) -> str:
    unanswered = m.no_answers
    line = (f"{name}: {m.n} runs | Acc@t1 {100 * m.acc_t1.value:.1f}% | Acc@t2 {100 * m.acc_t2.value:.1f}% | "
            f"no answer {unanswered}/{m.n} | Δ {100 * m.delta.value:+.1f} | Δi→c {100 * m.delta_i_to_c.value:.1f}% | "
            f"Δc→i {100 * m.delta_c_to_i.value:.1f}% | tool use {100 * m.tool_use_rate.value:.0f}% | "
            f"{m.mean_turns:.1f} turns/run | stopped: {stops_text(m)}")
    if m.n and unanswered == m.n:
        line += ("\nNo run gave an answer, so there is no first attempt to verify: raise --max-turns or "
                 "--max-new-tokens.")
    return line
