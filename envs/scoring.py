"""Answer extraction, normalisation and scorers shared by the environments.

Every scorer takes the model's raw answer string and a reference and returns a float in [0, 1].
They never raise on odd input (empty, garbage, huge or non-ASCII strings): a bad answer scores 0.
``python_tests_score`` runs code in ``tools.python_exec.PythonSandbox``, never in this process.
"""

from __future__ import annotations

import functools
import math
import re
import secrets
import string
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Any, NamedTuple

# ---------------------------------------------------------------------------- final-answer text

_ANSWER_MARKER = re.compile(
    r"(?:final\s+answer\s*(?:is)?\s*[:=]?|the\s+answer\s+is\s*:?|\banswer\s*:)\s*", re.IGNORECASE
)
_MAX_DIGITS = 400  # longer digit runs are garbage, and int() refuses > 4300 digits anyway


def last_boxed(text: str) -> str | None:
    r"""Content of the last LaTeX ``\boxed{...}`` (nested braces allowed), or None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 0, start + len("\\boxed")
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j]
    return None


def extract_answer(text: str) -> str:
    r"""The final-answer part of a response: ``\boxed{}`` content, else text after the last
    "Final answer:"/"The answer is"/"Answer:" marker (first line of it), else the whole text."""
    text = text or ""
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed.strip()
    markers = list(_ANSWER_MARKER.finditer(text))
    if markers:
        tail = text[markers[-1].end() :].strip()
        if tail:
            return tail.splitlines()[0].strip()
    return text.strip()


# ---------------------------------------------------------------------------- numbers

_NUMBER = re.compile(
    r"""
    (?:(?<![0-9A-Za-z.])(?P<sign>[-+]))?\s*\$?\s*
    (?:
        \\d?frac\{(?P<fnum>[0-9]+)\}\{(?P<fden>[0-9]+)\}               # \frac{3}{4}
      | (?P<whole>[0-9]+)[ \t]+(?P<mnum>[0-9]+)\s*/\s*(?P<mden>[0-9]+)\b  # 1 3/4
      | (?P<num>[0-9]+)\s*/\s*(?P<den>[0-9]+)\b                        # 3/4
      | (?P<dec>(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]+)?|\.[0-9]+)  # 1,234.5  42  .5
        (?:[eE](?P<exp>[-+]?[0-9]{1,3}))?
    )
    """,
    re.VERBOSE,
)


def _to_fraction(m: re.Match[str]) -> Fraction | None:
    sign = -1 if m["sign"] == "-" else 1
    digits = sum(len(g or "") for g in m.groups())
    if digits > _MAX_DIGITS:
        return None
    try:
        if m["fnum"] is not None:
            value = Fraction(int(m["fnum"]), int(m["fden"]))
        elif m["whole"] is not None:
            value = int(m["whole"]) + Fraction(int(m["mnum"]), int(m["mden"]))
        elif m["num"] is not None:
            value = Fraction(int(m["num"]), int(m["den"]))
        else:
            value = Fraction(m["dec"].replace(",", ""))
            if m["exp"] is not None:
                value *= Fraction(10) ** int(m["exp"])
    except (ValueError, ZeroDivisionError):
        return None
    return sign * value


def parse_numbers(text: str) -> list[Fraction]:
    """Every number in ``text`` in order, as exact Fractions (commas, ``$``, fractions, LaTeX)."""
    if not text or not any(ch in text for ch in "0123456789"):
        return []
    text = text.replace("\u2212", "-").replace("\u2013", "-")
    text = re.sub(r"\\(?:left|right|,|!|;|\s)", "", text)
    values = []
    for m in _NUMBER.finditer(text):
        value = _to_fraction(m)
        if value is not None:
            values.append(value)
    return values


def extract_number(text: str) -> Fraction | None:
    r"""The final numeric answer in a response, or None.

    Looks at ``\boxed{}`` or the text after a final-answer marker if there is one, else at the last
    line that holds a number. Within it, a ``=`` chain gives the first number after the last
    ``=``; otherwise a marked answer gives its first number and an unmarked line its last.
    Handles ``1,234``, ``$5``, ``12 km.``, ``3/4``, ``1 1/2``, ``\frac{3}{4}`` and ``-7``.
    """
    text = text or ""
    segment = extract_answer(text)
    marked = segment != text.strip()
    if not marked:
        lines = [ln for ln in segment.splitlines() if parse_numbers(ln)]
        if not lines:
            return None
        segment = lines[-1]
    if "=" in segment:
        tail = parse_numbers(segment.rsplit("=", 1)[1])
        if tail:
            return tail[0]
    numbers = parse_numbers(segment)
    if not numbers:
        return None
    return numbers[0] if marked else numbers[-1]


def numeric_match(
    answer: str, reference: Any, *, abs_tol: float = 1e-6, rel_tol: float = 1e-9
) -> float:
    """1.0 if the answer's final number equals ``reference`` within tolerance, else 0.0."""
    predicted = extract_number(answer)
    target = _as_fraction(reference)
    if predicted is None or target is None:
        return 0.0
    diff = abs(predicted - target)
    return 1.0 if diff <= abs_tol or diff <= rel_tol * abs(target) else 0.0


def _as_fraction(value: Any) -> Fraction | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, Fraction)):
        return Fraction(value)
    if isinstance(value, float):
        return Fraction(value) if math.isfinite(value) else None
    numbers = parse_numbers(str(value))
    return numbers[0] if len(numbers) == 1 else None


# ---------------------------------------------------------------------------- text answers


def normalize_text(text: str) -> str:
    """Casefold, NFKC, collapse whitespace, drop surrounding quotes and trailing punctuation."""
    text = unicodedata.normalize("NFKC", text or "").casefold()
    text = " ".join(text.split())
    return text.strip(" \"'`*").rstrip(".!?;:,").strip()


def answer_key(answer: str | None) -> str | None:
    """What two answers must share to count as the same, for a numeric task: their number (``42``,
    ``42.0`` and ``$42`` are one answer), else their normalised text; ``None`` for no answer or an empty
    one. ``Env.answer_key``'s default; a text env overrides it (``Apollo 11`` is not ``11``)."""
    if answer is None:
        return None
    number = extract_number(answer)
    if number is not None:
        return f"#{number}"
    return normalize_text(answer) or None


def text_answer_key(answer: str | None, *, squad: bool = True) -> str | None:
    """``answer_key`` for an env whose answers are text: the extracted answer's normalised text (``exact``'s
    reading); with ``squad``, SQuAD's normalisation, so that answers are the same when exact match would call
    them so (``the Beatles`` is ``Beatles``). ``Apollo 11`` is never ``11``. An answer SQuAD's rules empty
    (``A``, ``The``) keeps its plain text."""
    if answer is None:
        return None
    extracted = extract_answer(answer)
    return (squad and squad_normalize(extracted)) or normalize_text(extracted) or None


def code_answer_key(answer: str | None) -> str | None:
    """``answer_key`` for an env whose answers are programs: the code, whitespace collapsed (two programs are
    the same answer only when they are the same code, whatever numbers they hold)."""
    if answer is None:
        return None
    return " ".join(extract_code(answer).split()) or None


def _references(reference: Any) -> list[str]:
    if isinstance(reference, (list, tuple, set)):
        return [str(r) for r in reference]
    return [str(reference)]


def exact_match(answer: str, reference: Any) -> float:
    """Normalised string equality of the extracted answer with any acceptable reference."""
    predicted = normalize_text(extract_answer(answer))
    return float(any(predicted == normalize_text(r) for r in _references(reference)))


def contains_match(answer: str, reference: Any) -> float:
    """1.0 if any reference occurs in the answer as whole words (normalised), else 0.0."""
    haystack = normalize_text(answer)
    for ref in _references(reference):
        needle = normalize_text(ref)
        if needle and re.search(rf"(?<!\w){re.escape(needle)}(?!\w)", haystack):
            return 1.0
    return 0.0


def supported_by_evidence(answer: str, evidence: Sequence[str]) -> bool:
    """Whether text that tools produced backs ``answer``, with no answer key: a numeric answer's number is
    among the numbers of some evidence text (what executed code printed, a retrieved passage), compared
    exactly; any other answer occurs in some evidence text as whole words (normalised). An empty answer is
    backed by nothing."""
    number = extract_number(answer or "")
    if number is not None:
        return any(number in parse_numbers(text) for text in evidence)
    needle = normalize_text(extract_answer(answer or ""))
    if not needle:
        return False
    pattern = re.compile(rf"(?<!\w){re.escape(needle)}(?!\w)")
    return any(pattern.search(normalize_text(text)) for text in evidence)


def squad_normalize(text: str) -> str:
    """SQuAD v1.1 normalisation: lowercase, drop punctuation and articles, squeeze whitespace."""
    text = unicodedata.normalize("NFKC", text or "").lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


_PUNCT = set(string.punctuation) | {"\u2013", "\u2014", "\u2018", "\u2019", "\u201c", "\u201d"}


def squad_exact_match(answer: str, reference: Any) -> float:
    """SQuAD exact match of the extracted answer against the best reference."""
    predicted = squad_normalize(extract_answer(answer))
    return float(any(predicted == squad_normalize(r) for r in _references(reference)))


def squad_f1(answer: str, reference: Any) -> float:
    """SQuAD token-level F1 of the extracted answer against the best reference."""
    predicted = squad_normalize(extract_answer(answer)).split()
    return max(_token_f1(predicted, squad_normalize(r).split()) for r in _references(reference))


def _token_f1(predicted: list[str], gold: list[str]) -> float:
    if not predicted or not gold:
        return float(predicted == gold)
    common = Counter(predicted) & Counter(gold)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(predicted), overlap / len(gold)
    return 2 * precision * recall / (precision + recall)


# ---------------------------------------------------------------------------- code

_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)


def extract_code(answer: str, entry_point: str | None = None) -> str:
    """The code in an answer: the fenced block defining ``entry_point`` if any, else the first
    python (or untagged) fenced block, else the raw text."""
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(answer or "")]
    if not blocks:
        return (answer or "").strip("\n")
    if entry_point:
        for _, body in blocks:
            if re.search(rf"^\s*(?:async\s+)?def\s+{re.escape(entry_point)}\s*\(", body, re.MULTILINE):
                return body.strip("\n")
    for lang, body in blocks:
        if lang in ("python", "py", "python3", ""):
            return body.strip("\n")
    return blocks[0][1].strip("\n")


def complete_function(prompt: str, code: str, entry_point: str) -> str:
    """A runnable program from a HumanEval-style prompt and the model's code.

    A full definition of ``entry_point`` is appended after the prompt (whose docstring-only
    function is valid Python, and whose imports and helpers the code may use); a bare body is
    indented if needed and appended to the prompt.
    """
    if re.search(rf"^\s*(?:async\s+)?def\s+{re.escape(entry_point)}\s*\(", code, re.MULTILINE):
        return f"{prompt}\n    pass\n\n{code}\n"
    lines = code.splitlines()
    body_lines = [ln for ln in lines if ln.strip()]
    if not body_lines:
        code = "    pass"
    elif not body_lines[0][:1].isspace():
        code = "\n".join("    " + ln if ln.strip() else ln for ln in lines)
    return f"{prompt}{code}\n"


@functools.lru_cache(maxsize=8)
def _sandbox(timeout_s: float, memory_mb: int) -> Any:
    from tools.python_exec import PythonSandbox

    return PythonSandbox(timeout_s=timeout_s, memory_mb=memory_mb, max_output_bytes=16_000)


# The program's own output is discarded so it cannot crowd out the pass marker; the marker is a
# fresh random token printed only after the tests return, so code that exits early with status 0
# (``sys.exit(0)`` inside the function, ``os._exit(0)``) does not pass. Code that reads its own
# source could still forge it: this guards against accidents and lazy hacks, not an adversary.
_PROLOGUE = "import os as _al_os, sys as _al_sys\n_al_sys.stdout = open(_al_os.devnull, 'w')\n"
_EPILOGUE = "\n_al_sys.__stdout__.write('\\n{marker}\\n')\n_al_sys.__stdout__.flush()\n"
_FUTURE = re.compile(r"^from\s+__future__\s+import[^\n]*\n?", re.MULTILINE)


class ProgramWithTests(NamedTuple):
    """A program that runs code then tests, and the marker it prints only if the tests pass."""

    source: str
    marker: str


def tests_program(code: str, tests: str, entry_point: str | None = None) -> ProgramWithTests:
    """Code + tests (+ ``check(entry_point)`` when the tests define ``check``) + the pass marker."""
    marker = secrets.token_hex(16)
    body = f"{code}\n\n{tests}\n"
    if entry_point and re.search(r"^def\s+check\s*\(", tests, re.MULTILINE):
        body += f"\ncheck({entry_point})\n"
    futures = "".join(m.group(0).rstrip("\n") + "\n" for m in _FUTURE.finditer(body))
    source = futures + _PROLOGUE + _FUTURE.sub("", body) + _EPILOGUE.format(marker=marker)
    return ProgramWithTests(source, marker)


def _passed(result: Any, program: ProgramWithTests) -> float:
    return float(result.exit_code == 0 and not result.timed_out and program.marker in result.stdout)


def python_tests_score(program: ProgramWithTests, *, timeout_s: float = 10.0, memory_mb: int = 1024) -> float:
    """1.0 if the program's tests all pass in the sandbox within the time limit, else 0.0."""
    return _passed(_sandbox(timeout_s, memory_mb).run(program.source), program)


async def apython_tests_score(
    program: ProgramWithTests, *, timeout_s: float = 10.0, memory_mb: int = 1024
) -> float:
    """Async ``python_tests_score``: many can run concurrently (one OS process each)."""
    return _passed(await _sandbox(timeout_s, memory_mb).arun(program.source), program)


# ---------------------------------------------------------------------------- by name

Scorer = Callable[[str, Any], float]

SCORERS: dict[str, Scorer] = {
    "exact": exact_match,
    "numeric": numeric_match,
    "contains": contains_match,
    "squad_em": squad_exact_match,
    "squad_f1": squad_f1,
}


def get_scorer(name: str) -> Scorer:
    """A string scorer by name; the error lists the names that exist."""
    try:
        return SCORERS[name]
    except KeyError:
        raise ValueError(
            f"Unknown scorer {name!r}. Choose one of {sorted(SCORERS)} (or 'python_tests' in JsonlEnv), "
            "or pass a callable (answer, reference) -> float."
        ) from None

