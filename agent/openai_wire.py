"""The OpenAI completions wire format: sampled ids and log-probs from a choice (vLLM, llama.cpp and
OpenAI shapes), server-sent events, error bodies. Parsing only; requests and retries are in
``agent.openai_policy``."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx

TOKEN_ID_PREFIX = "token_id:"


@dataclass
class Draft:
    """What the server has said so far about one completion: one JSON answer or many SSE chunks."""

    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    saw_ids: bool = False
    missing_ids: bool = False
    missing_logprobs: bool = False
    finish_reason: str | None = None
    stop_reason: Any = None
    has_stop_reason: bool = False

    def add(self, choice: dict[str, Any]) -> str:
        """Fold one choice into the draft; return its text delta."""
        delta = choice.get("text") or ""
        if not isinstance(delta, str):
            raise ValueError(f"'text' is {type(delta).__name__}, not a string")
        self.text += delta
        ids, logprobs = read_tokens(choice)
        if ids is None:
            self.missing_ids = self.missing_ids or bool(delta)
        else:
            self.saw_ids = True
            self.token_ids.extend(ids)
        if logprobs is None:
            self.missing_logprobs = self.missing_logprobs or bool(delta) or bool(ids)
        else:
            self.logprobs.extend(logprobs)
        if choice.get("finish_reason"):
            self.finish_reason = choice["finish_reason"]
        if "stop_reason" in choice:  # vLLM: the stop string, the stop token id, or null for EOS
            self.has_stop_reason = True
            self.stop_reason = choice["stop_reason"]
        return delta


def read_tokens(choice: dict[str, Any]) -> tuple[list[int] | None, list[float] | None]:
    """The sampled token ids and log-probs in one choice, in whichever format the server used."""
    ids = choice.get("token_ids")
    ids = ids if is_int_list(ids) else None
    logprobs = choice.get("logprobs")
    if not isinstance(logprobs, dict):
        return ids, None
    if isinstance(logprobs.get("content"), list):  # llama.cpp: [{"id", "token", "logprob"}, ...]
        entries = [e for e in logprobs["content"] if isinstance(e, dict)]
        values = [as_logprob(e.get("logprob"), e.get("prob")) for e in entries]
        entry_ids = [e.get("id") for e in entries]
        return (ids if ids is not None else entry_ids if is_int_list(entry_ids) else None), values
    if isinstance(logprobs.get("token_logprobs"), list):  # OpenAI completions format
        values = [as_logprob(v) for v in logprobs["token_logprobs"]]
        if ids is None:
            parsed = [parse_token_id(t) for t in logprobs.get("tokens") or []]
            ids = parsed if len(parsed) == len(values) and is_int_list(parsed) else None
        return ids, values
    return ids, None


def is_int_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)


def parse_token_id(token: Any) -> int | None:
    if isinstance(token, str) and token.startswith(TOKEN_ID_PREFIX):
        digits = token[len(TOKEN_ID_PREFIX) :]
        return int(digits) if digits.isdigit() else None
    return None


def as_logprob(logprob: Any, prob: Any = None) -> float:
    if isinstance(logprob, (int, float)):
        return float(logprob)
    if isinstance(prob, (int, float)):  # llama.cpp's post_sampling_probs answers probabilities
        return math.log(prob) if prob > 0 else -math.inf
    return math.nan


async def sse_data(response: httpx.Response) -> AsyncIterator[str]:
    """The data of each server-sent event (multi-line data joined, comments and other fields skipped)."""
    lines: list[str] = []
    async for line in response.aiter_lines():
        if line.startswith("data:"):
            lines.append(line[5:].removeprefix(" "))
        elif not line and lines:
            yield "\n".join(lines)
            lines = []
    if lines:
        yield "\n".join(lines)


def server_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500] or "(empty body)"
    message: Any = body
    if isinstance(body, dict):
        error = body.get("error", body)
        message = (error.get("message") or error.get("detail") or error) if isinstance(error, dict) else error
    return str(message)[:500]
