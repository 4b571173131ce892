"""Telling a check from a repeat: a tool call compared with the calls made before the answer it checks.

Re-running the first attempt's own call prints the same result again, so it can confirm any answer,
wrong ones included. ``call_key`` is how two calls compare (the metrics that count vacuous checks use
it too); ``attempt_calls`` finds the calls a verify step must not simply repeat.
"""

from __future__ import annotations

import json
from typing import Any

REPEAT_REFUSED = (
    "Not run: this is the same call you made before your answer, so it can only print the same result "
    "again and checks nothing. Check another way: work it out from the question itself, in steps or in "
    "another order, or with another tool."
)


def call_key(name: str, arguments: dict[str, Any] | None) -> str:
    """A tool call as compared for repeats: its name and its arguments with all whitespace removed
    (``print(48+63*7)`` repeats ``print(48 + 63 * 7)``: respacing must not pass for a new check)."""
    squeezed = {k: "".join(v.split()) if isinstance(v, str) else v for k, v in (arguments or {}).items()}
    return json.dumps([name, squeezed], sort_keys=True, default=str)


def attempt_calls(messages: list[dict]) -> set[str]:
    """Keys of the tool calls between the current question and its (last) verify instruction in a
    transcript (``AgentState.messages``); empty when there is no verify instruction yet."""
    roles = [m.get("role") for m in messages]
    if "verify" not in roles:
        return set()
    verify = len(roles) - 1 - roles[::-1].index("verify")
    question = max((i for i in range(verify) if roles[i] == "user"), default=-1)
    return {call_key(m.get("name", ""), m.get("arguments")) for m in messages[question + 1:verify]
            if m.get("role") == "tool"}
