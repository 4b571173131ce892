"""Shared fixtures: the real SmolLM2 tokenizer and a tiny random model that uses it (built once)."""

from __future__ import annotations

import os
import random

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tokenizer():
    from agent.models import load_tokenizer

    return load_tokenizer("smollm2-135m")


@pytest.fixture(scope="session")
def tiny_model(tokenizer):
    from agent.models import tiny_random_model

    return tiny_random_model(tokenizer, seed=0)


@pytest.fixture
def tiny_policy(tiny_model, tokenizer):
    from agent.hf_policy import HFPolicy

    policy = HFPolicy(tiny_model, tokenizer, max_batch_size=8)
    yield policy
    policy.close()


class ScriptedPolicy:
    """A Policy that "samples" scripted replies: tokenizes each text once and returns its ids.

    Used to drive the graph through exact, adversarial model outputs (the real models are used
    everywhere else). Logprobs are a fixed -1.0 so alignment can be checked.
    """

    def __init__(self, tokenizer, replies, *, close_turn: bool = True):
        """``replies``: a list consumed in order, or a function of the prompt ids returning the text."""
        self.tokenizer = tokenizer
        self.replies = replies if callable(replies) else list(replies)
        self.close_turn = close_turn
        self.prompts: list[list[int]] = []

    async def generate(self, prompt_ids, sampling, *, on_text=None):
        from agent.policy import Generation

        self.prompts.append(list(prompt_ids))
        if callable(self.replies):
            text = self.replies(prompt_ids)
        else:
            text = self.replies.pop(0) if self.replies else "Final answer: 0"
        # a server may send text holding lone surrogates beside the ids it sampled: tokenize a valid copy
        ids = self.tokenizer(text.encode("utf-8", "replace").decode(), add_special_tokens=False)["input_ids"]
        reason = "stop"
        if self.close_turn and not any(s in text for s in sampling.stop):
            ids = ids + [self.tokenizer.convert_tokens_to_ids("<|im_end|>")]
            reason = "eos"
        if on_text:
            on_text(text)
        return Generation(token_ids=ids, logprobs=[-1.0] * len(ids), text=text, finish_reason=reason)


@pytest.fixture
def scripted(tokenizer):
    def make(replies, **kw):
        return ScriptedPolicy(tokenizer, replies, **kw)

    make.tokenizer = tokenizer
    return make


@pytest.fixture
def rng():
    return random.Random(0)
