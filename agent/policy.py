"""The model-backend protocol: token ids in, sampled token ids (with log-probs) out."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, Field

FinishReason = Literal["stop", "eos", "length"]

MAX_NEW_TOKENS = 192  # the longest model turn, unless a caller or a config says otherwise


class SamplingParams(BaseModel):
    """How to sample one turn. ``stop`` strings end the turn once they appear in the generated text."""

    max_new_tokens: int = Field(MAX_NEW_TOKENS, ge=1)
    temperature: float = Field(0.7, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0)
    stop: list[str] = Field(default_factory=list)
    seed: int | None = None


class Generation(BaseModel):
    """One sampled turn: exactly the token ids drawn, their log-probs under the sampling distribution."""

    token_ids: list[int]
    logprobs: list[float]
    text: str
    finish_reason: FinishReason
    metadata: dict[str, Any] = Field(default_factory=dict)  # backend notes, e.g. token_ids_exact


class PolicyError(RuntimeError):
    """A model backend could not produce a generation; the message says why and what to do."""


@runtime_checkable
class Policy(Protocol):
    """Anything that samples continuations of token ids. ``tokenizer`` is a Hugging Face tokenizer."""

    tokenizer: Any

    async def generate(
        self,
        prompt_ids: list[int],
        sampling: SamplingParams,
        *,
        on_text: Callable[[str], None] | None = None,
    ) -> Generation:
        """Sample one turn. ``on_text`` (optional) receives text deltas as they are generated."""
        ...
