"""Action protocols: how a model writes tool calls and final answers, and how we read them back.

``json``: Hermes-style ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``.
``code``: CodeAct-style fenced ```python blocks, run by the ``python`` tool; with ``with_functions``
the other tools are functions those blocks call (``tools.code_functions``) and are described as such.
Both mark the final answer with a line ``Final answer: ...``. Parsing never raises: text that is
neither a call nor an answer becomes an ``Action`` with an ``error`` the model is shown. Nor does it
take long: the patterns are linear in the reply's length, also on long runs of whitespace.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from tools.base import safe_text

FINAL_ANSWER = re.compile(r"final answer\s*[:：]\s*(.*)", re.IGNORECASE)
# The body is stripped in code: ``\s*(.*?)\s*`` backtracks quadratically over a long run of spaces.
_TOOL_CALL = re.compile(r"<tool_call>(.*?)(?:</tool_call>|$)", re.DOTALL)
MAX_CALL_DEPTH = 32  # nesting levels of a tool call's JSON; deeper ones are refused before anything recurses
_CODE_BLOCK = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)(?:```|$)", re.DOTALL)


@dataclass
class ToolCall:
    name: str
    arguments: dict[str, Any]


@dataclass
class Action:
    """What one model turn asked for."""

    tool_calls: list[ToolCall] = field(default_factory=list)
    final_answer: str | None = None
    error: str | None = None


def find_final_answer(text: str) -> str | None:
    matches = FINAL_ANSWER.findall(text)
    if not matches:
        return None
    answer = matches[-1].strip()
    return answer or None


class ActionProtocol:
    name: str = ""
    stop: list[str] = []

    def instructions(self, tool_schemas: list[dict], native_tools: bool) -> str:
        raise NotImplementedError

    def parse(self, text: str) -> Action:
        raise NotImplementedError

    def render_call(self, name: str, arguments: dict[str, Any]) -> str:
        """How an exemplar turn writes a call in this protocol."""
        raise NotImplementedError

    def exemplar_call(self, name: str, arguments: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """The tool call that ``render_call(name, arguments)`` makes when it runs (its observation)."""
        return name, arguments


class JsonProtocol(ActionProtocol):
    name = "json"
    stop = ["</tool_call>"]

    def instructions(self, tool_schemas: list[dict], native_tools: bool) -> str:
        lines = [
            "To use a tool, write exactly one line:",
            '<tool_call>{"name": "TOOL_NAME", "arguments": {...}}</tool_call>',
            "then wait for its result. When you know the answer, write: Final answer: ANSWER",
        ]
        if not native_tools:
            lines += ["", "Tools:"] + [_describe(schema) for schema in tool_schemas]
        return "\n".join(lines)

    def parse(self, text: str) -> Action:
        bodies = _TOOL_CALL.findall(text)
        if not bodies:
            answer = find_final_answer(text)
            if answer is not None:
                return Action(final_answer=answer)
            return Action(error=_NOTHING_FOUND.format(example=self.render_call("NAME", {"ARG": "VALUE"})))
        calls: list[ToolCall] = []
        for body in bodies:
            call, problem = _parse_call_json(body)
            if problem:
                return Action(error=problem)
            calls.append(call)
        return Action(tool_calls=calls)

    def render_call(self, name: str, arguments: dict[str, Any]) -> str:
        return "<tool_call>" + json.dumps({"name": name, "arguments": arguments}) + "</tool_call>"


class CodeProtocol(JsonProtocol):
    """Python runs from fenced blocks; any other tool is still called with ``<tool_call>``."""

    name = "code"
    stop = ["```\n", "</tool_call>"]
    tool_name = "python"

    def __init__(self, functions: dict[str, str] | None = None) -> None:
        self.functions = dict(functions or {})  # tool name -> its signature line, for the prompt

    def with_functions(self, functions: dict[str, str]) -> CodeProtocol:
        """This protocol, with these tools called as functions from the code (``name -> signature``)."""
        return type(self)({**self.functions, **functions})

    def instructions(self, tool_schemas: list[dict], native_tools: bool) -> str:
        lines = [
            "To run Python, write a code block and wait for its output:",
            "```python",
            "print(...)",
            "```",
            "Use print() to see values. When you know the answer, write: Final answer: ANSWER",
        ]
        if self.functions:
            lines += ["", "Your code can call these functions (each one runs a tool and returns its result):"]
            lines += [f"- {line}" for line in self.functions.values()]
        others = [s for s in tool_schemas
                  if s["function"]["name"] != self.tool_name and s["function"]["name"] not in self.functions]
        if others:
            lines += ["", "Other tools are called with one line:",
                      '<tool_call>{"name": "TOOL_NAME", "arguments": {...}}</tool_call>', "Tools:"]
            lines += [_describe(schema) for schema in others]
        return "\n".join(lines)

    def parse(self, text: str) -> Action:
        blocks = [b for b in _CODE_BLOCK.findall(text) if b.strip()]
        if blocks:
            return Action(tool_calls=[ToolCall(self.tool_name, {"code": b}) for b in blocks])
        if _TOOL_CALL.search(text):
            return super().parse(text)
        answer = find_final_answer(text)
        if answer is not None:
            return Action(final_answer=answer)
        return Action(error=_NOTHING_FOUND.format(example="```python\nprint(...)\n```"))

    def render_call(self, name: str, arguments: dict[str, Any]) -> str:
        name, arguments = self.exemplar_call(name, arguments)
        if name == self.tool_name:
            return f"```python\n{arguments.get('code', '')}\n```"
        return super().render_call(name, arguments)

    def exemplar_call(self, name: str, arguments: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        if name in self.functions:  # a function tool is called from code: print(name(arg=...))
            args = ", ".join(f"{key}={value!r}" for key, value in arguments.items())
            return self.tool_name, {"code": f"print({name}({args}))"}
        return name, arguments


_NOTHING_FOUND = (
    "I could not find a tool call or a final answer in your reply. "
    "Either call a tool, like {example}, or finish with a line: Final answer: ANSWER"
)


def _parse_call_json(body: str) -> tuple[ToolCall | None, str | None]:
    data, problem = _decode_json(body.strip(), prefix_only=True)
    if problem:
        return None, f"Your tool call {problem}. " + _CALL_SHAPE
    if not isinstance(data, dict):
        return None, "Your tool call must be a JSON object. " + _CALL_SHAPE
    name = data.get("name")
    arguments = data.get("arguments", data.get("parameters", {}))
    if not isinstance(name, str) or not name:
        return None, 'Your tool call has no "name". ' + _CALL_SHAPE
    if isinstance(arguments, str):
        arguments, problem = _decode_json(arguments, prefix_only=False)
        if problem:
            return None, f'Your "arguments" string {problem}; "arguments" must be a JSON object. ' + _CALL_SHAPE
    if not isinstance(arguments, dict):
        return None, '"arguments" must be a JSON object. ' + _CALL_SHAPE
    return ToolCall(safe_text(name), safe_text(arguments)), None  # JSON may spell lone surrogates


_CALL_SHAPE = 'Write it as <tool_call>{"name": "TOOL_NAME", "arguments": {...}}</tool_call>.'


class _NotJsonConstant(ValueError):
    pass


def _refuse_constant(name: str) -> Any:
    raise _NotJsonConstant(name)


# Python's json reads NaN and Infinity, which JSON does not have; as tool arguments they would break
# tools and the trajectory's JSON record alike.
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)


def _decode_json(text: str, *, prefix_only: bool) -> tuple[Any, str | None]:
    """The JSON value ``text`` holds (at its start, for ``prefix_only``), or what is wrong with it, in
    words that continue "Your tool call ..."."""
    try:
        value = _DECODER.raw_decode(text)[0] if prefix_only else _DECODER.decode(text)
    except _NotJsonConstant as exc:
        return None, f"uses {exc}, which is not JSON: write numbers as decimals, or as strings"
    except json.JSONDecodeError as exc:
        return None, f"is not valid JSON ({exc.msg} at position {exc.pos})"
    except RecursionError:
        return None, f"is not valid JSON here: it nests deeper than {MAX_CALL_DEPTH} levels"
    except ValueError:  # an integer past Python's 4300-digit limit for reading numbers
        return None, "has a number too long to read"
    if _depth(value) > MAX_CALL_DEPTH:
        return None, f"is not valid JSON here: it nests deeper than {MAX_CALL_DEPTH} levels"
    return value, None


def _depth(value: Any) -> int:
    """How deeply lists and objects nest in ``value``, counted without recursion."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        item, level = pending.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            pending.extend((v, level + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def _describe(schema: dict) -> str:
    fn = schema["function"]
    props = fn.get("parameters", {}).get("properties", {})
    args = ", ".join(f"{k}: {v.get('type', 'any')}" for k, v in props.items())
    return f"- {fn['name']}({args}): {fn.get('description', '')}"


PROTOCOLS: dict[str, type[ActionProtocol]] = {"json": JsonProtocol, "code": CodeProtocol}


def get_protocol(name: str | ActionProtocol) -> ActionProtocol:
    if isinstance(name, ActionProtocol):
        return name
    try:
        return PROTOCOLS[name]()
    except KeyError:
        raise ValueError(f"Unknown protocol '{name}'. Choose one of: {', '.join(PROTOCOLS)}.") from None
