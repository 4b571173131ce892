"""Plausible wrong first attempts: the model's own code with one operator or number changed.

A check is only worth something if it catches errors. How often a model catches them depends on how
often it makes them, so the injected-error probe (``training.probe``) measures the ability directly:
take the model's own first-attempt code, change one thing in it (``+`` for ``-``, ``17`` for ``71``),
run the real tool on the changed code, and give the model that attempt, with its real output and the
wrong answer it leads to, as if it had written it; then the verify step runs as usual.

Only Python calls are changed (``python`` tool); a run whose first attempt made none is skipped and
counted as such.

Two kinds of wrong attempt (``INJECTIONS``):

- ``wrong-output``: the changed code runs and prints a wrong answer, which the attempt answers;
- ``failed-call``: one bracket of the code is dropped, so the tool answers with an error, and the
  attempt answers a plausible wrong number anyway (one the tool never printed). This is how most of
  the model's own wrong first attempts on long expressions go (BENCHMARKS "Learning to check",
  round 4): a check has to read the tool's output, not only the question, to catch it.

``ErrorInjector`` does the same during training (``training.injected_errors``): for a share of each
step's tasks, the model first attempts the task once on its own; the group then starts from a
changed version of that attempt, so the verify turn is trained on errors that look like the model's
own. This is a labelled variant of SCoRe's recipe, which trains on the model's natural errors only.
With ``replay_own`` (``training.replay_own_errors``), an own attempt that is already wrong is given
as it is (``own_attempt``): the group's checks all face one error the model really made, the
distribution SCoRe trains on, and compare with each other on it; only right attempts are changed.
"""

from __future__ import annotations

import asyncio
import io
import random
import tokenize
from collections.abc import Sequence
from typing import Any

from envs import Env, Task
from tools import Tool
from tools.python_exec import NO_OUTPUT
from training.rollout import run_one
from training.trajectory import Trajectory, is_right

INJECTIONS = ("wrong-output", "failed-call")
SWAPS = {"+": ["-", "*"], "-": ["+", "*"], "*": ["+", "-"], "/": ["*", "-"], "//": ["/", "*"], "**": ["*"],
         "%": ["//"], "<": [">"], ">": ["<"], "<=": [">"], ">=": ["<"]}


def first_attempt_code(traj: Trajectory) -> str | None:
    """The code of the first Python call the model made before its first answer."""
    for message in traj.messages:
        if message.get("role") == "verify":
            return None
        if message.get("role") == "tool" and message.get("name") == "python" and not message.get("injected"):
            code = (message.get("arguments") or {}).get("code")
            if isinstance(code, str) and code.strip():
                return code
    return None


def own_attempt(traj: Trajectory) -> dict[str, Any] | None:
    """A run's own first attempt as a given one (its calls, re-run when given, and its answer), marked
    ``replayed``; ``None`` when the run gave no answer."""
    if not traj.attempts:
        return None
    calls = []
    for message in traj.messages:
        if message.get("role") == "verify":
            break
        if message.get("role") == "tool" and not message.get("injected"):
            calls.append({"tool": message.get("name"), "arguments": message.get("arguments") or {}})
    return {"calls": calls, "answer": traj.attempts[0].answer, "replayed": True}


def mutations(code: str) -> list[str]:
    """Every variant of ``code`` with exactly one arithmetic operator or one number literal changed."""
    variants: list[str] = []
    for tok, start, end in _tokens(code):
        if tok.type == tokenize.OP and tok.string in SWAPS:
            replacements = SWAPS[tok.string]
        elif tok.type == tokenize.NUMBER and tok.string.isdigit():
            replacements = _number_variants(tok.string)
        else:
            continue
        variants += [code[:start] + r + code[end:] for r in replacements]
    return list(dict.fromkeys(v for v in variants if v != code))


def breakages(code: str) -> list[str]:
    """Every variant of ``code`` with exactly one bracket dropped: the slip behind most failed calls."""
    variants = [code[:start] + code[end:] for tok, start, end in _tokens(code)
                if tok.type == tokenize.OP and tok.string in ("(", ")")]
    return list(dict.fromkeys(variants))


def _tokens(code: str) -> list[tuple[tokenize.TokenInfo, int, int]]:
    """``code``'s tokens with their start and end offsets in it; none when it does not tokenize."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(code).readline))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return []
    offsets = [0]
    for line in code.splitlines(keepends=True):
        offsets.append(offsets[-1] + len(line))
    return [(tok, offsets[tok.start[0] - 1] + tok.start[1], offsets[tok.end[0] - 1] + tok.end[1]) for tok in tokens]


def _number_variants(digits: str) -> list[str]:
    """Slips a person (or a model) makes copying a number: a digit off by one, two digits swapped."""
    out = [str(int(digits) + 1), str(max(int(digits) - 1, 0))]
    if len(digits) > 1 and digits[-1] != digits[-2]:
        out.append(digits[:-2] + digits[-1] + digits[-2])
    return out


def python_tool_of(env: Env, needed_by: str) -> Tool:
    """The env's ``python`` tool, which changed code is run with; an env without one cannot be used."""
    python = next((t for t in env.tools() if t.name == "python"), None)
    if python is None:
        raise ValueError(f"{needed_by} changes Python code; env {env.name!r} offers no python tool.")
    return python


def answer_from_output(stdout: str) -> str | None:
    """The last line a program printed: what a first attempt that printed its result would answer."""
    lines = [line.strip() for line in stdout.strip().splitlines() if line.strip()]
    return lines[-1] if lines and stdout.strip() != NO_OUTPUT else None


async def wrong_attempt(code: str, task: Task, env: Env, python: Tool, rng: random.Random,
                        tries: int = 6) -> dict[str, Any] | None:
    """A changed version of ``code`` whose real output is a wrong answer to ``task``, as a
    ``first_attempt`` for ``build_agent``; ``None`` when no change tried leads to one."""
    candidates = mutations(code)
    rng.shuffle(candidates)
    for changed in candidates[:tries]:
        result = await python.acall({"code": changed})
        answer = None if result.error else answer_from_output(result.content.split("\n\n[stderr]")[0])
        if answer is None or is_right(await env.ascore(task, answer)):
            continue
        return {"calls": [{"tool": "python", "arguments": {"code": changed}}], "answer": answer}
    return None


async def failed_attempt(code: str, task: Task, env: Env, python: Tool, rng: random.Random,
                         tries: int = 6) -> dict[str, Any] | None:
    """``code`` with one bracket dropped, which the tool rejects, answered with the wrong number a
    one-place change of ``code`` prints (a ``failed-call`` attempt); ``None`` when none can be made."""
    wrong = await wrong_attempt(code, task, env, python, rng, tries)
    if wrong is None:
        return None
    candidates = breakages(code)
    rng.shuffle(candidates)
    for broken in candidates[:tries]:
        if (await python.acall({"code": broken})).error:
            return {"calls": [{"tool": "python", "arguments": {"code": broken}}], "answer": wrong["answer"]}
    return None


async def injected_attempt(kind: str, code: str, task: Task, env: Env, python: Tool,
                           rng: random.Random) -> dict[str, Any] | None:
    """A wrong first attempt of ``kind`` (one of ``INJECTIONS``) made from ``code``."""
    if kind not in INJECTIONS:
        raise ValueError(f"Unknown kind of injected error {kind!r}; choose from {list(INJECTIONS)}.")
    make = failed_attempt if kind == "failed-call" else wrong_attempt
    return await make(code, task, env, python, rng)


class ErrorInjector:
    """Wrong first attempts for a share of a training step's tasks (see the module docstring).

    ``first_agent`` is the agent without its verify step, sampling as in training. ``failed_calls`` is
    the share of the injected attempts that are ``failed-call`` ones; the rest are ``wrong-output``.
    ``replay_own`` gives an own attempt that is already wrong as it is (see the module docstring)."""

    def __init__(self, first_agent: Any, env: Env, share: float, seed: int = 0, failed_calls: float = 0.0,
                 replay_own: bool = False) -> None:
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"training.injected_errors is a share of the tasks, in [0, 1]; got {share}.")
        if not 0.0 <= failed_calls <= 1.0:
            raise ValueError(f"training.injected_failed_calls is a share of the injected attempts, in [0, 1]; "
                             f"got {failed_calls}.")
        self.first_agent = first_agent
        self.env = env
        self.share = share
        self.failed_calls = failed_calls
        self.replay_own = replay_own
        self.rng = random.Random(seed)
        self.python = python_tool_of(env, "training.injected_errors") if share else None

    async def first_attempts(self, tasks: Sequence[Task], share: float | None = None) -> dict[str, dict[str, Any]]:
        """task id → a wrong first attempt, for about ``share`` (default: the injector's) of the distinct
        tasks (those the change works for; the others run as usual)."""
        distinct = list({t.id: t for t in tasks}.values())
        chosen = self.rng.sample(distinct, round((self.share if share is None else share) * len(distinct)))
        own = await asyncio.gather(*[run_one(self.first_agent, self.env, t) for t in chosen])
        given = {}
        for task, traj in zip(chosen, own, strict=True):
            if self.replay_own and traj.attempts and not traj.attempts[0].right:
                given[task.id] = own_attempt(traj)
                continue
            code = first_attempt_code(traj)
            failed = self.failed_calls > 0 and self.rng.random() < self.failed_calls
            kind = "failed-call" if failed else "wrong-output"
            attempt = await injected_attempt(kind, code, task, self.env, self.python, self.rng) if code else None
            if attempt is not None:
                given[task.id] = attempt
        return given
