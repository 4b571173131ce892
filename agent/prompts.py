"""The words the agent is given: system prompt, few-shot exemplars, and the verify instruction.

Exemplars are written as calls and answers only; their observations come from running the real
tools once when the agent is built, so the model sees exactly the output format it will get.
Small models need them: with two worked examples SmolLM2 writes runnable actions far more often
than zero-shot.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from agent.chat_format import ChatFormat
from agent.protocols import ActionProtocol
from tools import Tool

log = logging.getLogger(__name__)

SYSTEM = (
    "You are a careful assistant. You do not trust your own first guess: you use tools to compute "
    "and to look things up, and you check answers against what the tools return."
)

VERIFY_WITH_TOOLS = (
    "Check this answer with a tool before it is final: read the question again and compute it another "
    "way, from the question itself rather than from your code, or look it up. If the check agrees, repeat "
    "it as 'Final answer: ...'. If it does not, give the corrected 'Final answer: ...'."
)
RESTATED = "The question was: {question}\n\n"  # put before the verify instruction by ``restate_question``
VERIFY_WITHOUT_TOOLS = (
    "Check this answer by reasoning step by step, without tools. If it holds, repeat it as "
    "'Final answer: ...'. If it does not, give the corrected 'Final answer: ...'."
)


def verify_message(instruction: str, question: str, restate_question: bool) -> str:
    """The verify turn's text; with ``restate_question`` it quotes the question first, so that writing
    the check from the question is as close at hand as copying the first attempt's code."""
    return RESTATED.format(question=question) + instruction if restate_question else instruction


@dataclass
class Step:
    """One exemplar model turn: a tool call, or a final answer."""

    answer: str | None = None
    tool: str | None = None
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass
class Exemplar:
    question: str
    first: list[Step]  # up to and including the first final answer
    verify: list[Step]  # after the verify instruction

    @property
    def tools(self) -> set[str]:
        return {s.tool for s in self.first + self.verify if s.tool}


# The two arithmetic exemplars show the check the verify step is for: the first attempt miscopies the
# question (63 for 36) and the check, written afresh from the question, catches it; the second attempt
# is right and the check, written another way, confirms it.
REWRITE = [
    Exemplar(
        "What is 48 + 36 * 7?",
        [Step(tool="python", arguments={"code": "print(48 + 63 * 7)"}), Step(answer="489")],
        [Step(tool="python", arguments={"code": "print(48 + 36 * 7)"}), Step(answer="300")],
    ),
    Exemplar(
        "What is 17 * 23 + 5?",
        [Step(tool="python", arguments={"code": "print(17 * 23 + 5)"}), Step(answer="396")],
        [Step(tool="python", arguments={"code": "print(5 + 23 * 17)"}), Step(answer="396")],
    ),
]
# The same two lessons with a check that is always another computation: the question worked in steps,
# one named part at a time, so that it never repeats a one-line first attempt.
STEPWISE = [
    Exemplar(
        "What is 48 + 36 * 7?",
        [Step(tool="python", arguments={"code": "print(48 + 63 * 7)"}), Step(answer="489")],
        [Step(tool="python", arguments={"code": "a = 36 * 7\nprint(48 + a)"}), Step(answer="300")],
    ),
    Exemplar(
        "What is 17 * (23 + 5) - 4?",
        [Step(tool="python", arguments={"code": "print(17 * (23 + 5) - 4)"}), Step(answer="472")],
        [Step(tool="python", arguments={"code": "a = 23 + 5\nb = 17 * a\nprint(b - 4)"}), Step(answer="472")],
    ),
]


def _assigned(ex: Exemplar) -> Exemplar:
    """``ex`` with its check written as ``x = <the question's expression>`` and ``print(x)``."""
    expression = ex.question.removeprefix("What is ").removesuffix("?")
    return Exemplar(ex.question, ex.first,
                    [Step(tool="python", arguments={"code": f"x = {expression}\nprint(x)"}), ex.verify[-1]])


# REWRITE's first attempts; the check copies the question's expression as it stands into an assignment
# (``x = ...``), then prints it. The form differs from a one-line ``print(...)`` first attempt, and the code
# after ``x =`` tokenizes like the question's text: ``print((`` is one token that never occurs in a question,
# so a first attempt that opens with a bracket loses it, while `` (`` after ``=`` is the question's own token.
ASSIGN = [_assigned(ex) for ex in REWRITE]
# ASSIGN with the first lesson's miscopy made SmolLM2's own commonest one: the question opens with a bracket
# and the first attempt lost it. The check shows ``x = (``, the opening that catches that error.
BRACKET = [_assigned(Exemplar(
    "What is (48 + 36) * 7?",
    [Step(tool="python", arguments={"code": "print(48 + 36 * 7)"}), Step(answer="300")],
    [Step(answer="588")],
)), ASSIGN[1]]
# The routes the other way round: attempt 1 works the question in named parts (STEPWISE's checks), and the
# check computes the question's expression whole, as ``assign`` does. A check of that form is another route
# whenever attempt 1 really worked in parts (SmolLM2 mostly writes the whole expression anyway: BENCHMARKS round 16).
PARTS = [_assigned(Exemplar(
    "What is 48 + 36 * 7?",
    [Step(tool="python", arguments={"code": "a = 63 * 7\nprint(48 + a)"}), Step(answer="489")],
    [Step(answer="300")],
)), _assigned(Exemplar(
    "What is 17 * (23 + 5) - 4?",
    [Step(tool="python", arguments={"code": "a = 23 + 5\nb = 17 * a\nprint(b - 4)"}), Step(answer="472")],
    [Step(answer="472")],
))]
LOOKUP = [
    Exemplar(
        "In which country is the city of Kyoto?",
        [Step(tool="wikipedia_search", arguments={"query": "Kyoto"}), Step(answer="Japan")],
        [Step(tool="wikipedia_page", arguments={"title": "Kyoto"}), Step(answer="Japan")],
    ),
]
# by the check they show
EXEMPLAR_SETS = {"rewrite": REWRITE + LOOKUP, "stepwise": STEPWISE + LOOKUP, "assign": ASSIGN + LOOKUP,
                 "bracket": BRACKET + LOOKUP, "parts": PARTS + LOOKUP}
EXEMPLARS = EXEMPLAR_SETS["rewrite"]


def exemplar_set(name: str) -> list[Exemplar]:
    if name not in EXEMPLAR_SETS:
        raise ValueError(f"Unknown exemplar set {name!r}; choose from {sorted(EXEMPLAR_SETS)}.")
    return EXEMPLAR_SETS[name]


def with_tool_examples(exemplars: list[Exemplar], tools: list[Tool]) -> tuple[list[Exemplar], int]:
    """The exemplars to show and how many: the set's first, then one per tool that carries an
    ``example`` (``tools.ToolExample``), then the rest of the set, up to two or 1 + the tools' examples."""
    own = [Exemplar(t.example.question,
                    [Step(tool=t.name, arguments=t.example.arguments), Step(answer=t.example.answer)],
                    [Step(tool=t.example.check.tool, arguments=t.example.check.arguments),
                     Step(answer=t.example.answer)])
           for t in tools if t.example is not None]
    return exemplars[:1] + own + exemplars[1:], 1 + max(1, len(own))


def system_prompt(protocol: ActionProtocol, tools: list[Tool], fmt: ChatFormat, hint: str = "") -> str:
    parts = [SYSTEM]
    if hint:
        parts.append(hint)
    parts.append(protocol.instructions([t.json_schema() for t in tools], fmt.native_tools))
    return "\n\n".join(parts)


async def exemplar_messages(
    exemplars: list[Exemplar],
    protocol: ActionProtocol,
    tools: list[Tool],
    fmt: ChatFormat,
    verify_instruction: str | None,
    limit: int = 2,
    restate_question: bool = True,
) -> list[dict]:
    """Chat turns for the exemplars whose tools are all available, observations from real calls."""
    by_name = {t.name: t for t in tools}
    messages: list[dict] = []
    used = 0
    for ex in exemplars:
        if used >= limit or not ex.tools <= by_name.keys():
            continue
        turns = [{"role": "user", "content": ex.question}]
        steps = ex.first + (ex.verify if verify_instruction else [])
        ok = True
        for i, step in enumerate(steps):
            if verify_instruction and i == len(ex.first):
                turns.append({"role": "user",
                              "content": verify_message(verify_instruction, ex.question, restate_question)})
            if step.answer is not None:
                turns.append({"role": "assistant", "content": f"Final answer: {step.answer}"})
                continue
            tool_name, arguments = protocol.exemplar_call(step.tool, step.arguments)
            result = await by_name[tool_name].acall(arguments)
            if result.error:
                log.warning("exemplar %r left out: its %s call failed: %s", ex.question, step.tool,
                            result.content[:200])
                ok = False
                break
            turns.append({"role": "assistant", "content": protocol.render_call(step.tool, step.arguments)})
            turns.extend(fmt.observation_messages([result.content]))
        if ok:
            messages.extend(turns)
            used += 1
    return messages
