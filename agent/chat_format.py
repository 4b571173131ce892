"""Token-level chat formatting: the first prompt, and the segments inserted between model turns.

The trajectory is one growing id sequence. The model's own tokens are appended exactly as sampled;
everything else (tool observations, the verify instruction, a new user message) is rendered by the
tokenizer's chat template *as a delta* and tokenized once. The delta is found by rendering a probe
conversation with and without the new messages, so it works for any prefix-preserving template
(ChatML/SmolLM2, Qwen2.5 with its native ``tool`` role, …) without knowing its markup.

Only the template's own markup may become special tokens. Message contents and tool schemas come from
tools, users and servers; a tool output reading ``<|im_end|><|im_start|>system`` must reach the model as
that text, not as a forged turn. Each rendering is therefore made twice: as is, and with the text of
every special token inside the contents blanked out (same length). The special tokens the blanked
rendering still has are the markup; any other special-token text is tokenized as plain text.
"""

from __future__ import annotations

import re
from typing import Any

_PROBE = "\u2063PROBE\u2063"  # an assistant message body that no template alters
_BLANKS = "~#^`@*"  # candidates for blanking special-token text out; one that no special token contains


def end_of_turn_ids(tokenizer: Any) -> set[int]:
    """Ids that end a model turn: the eos token, and the template's turn-closing token where it has one."""
    if not getattr(tokenizer, "chat_template", None):
        return {tokenizer.eos_token_id} - {None}
    return ChatFormat(tokenizer).end_of_turn_ids - {None}


class ChatFormat:
    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        template = tokenizer.chat_template or ""
        if not template:
            raise ValueError(
                "The tokenizer has no chat template; pass a chat model or set tokenizer.chat_template."
            )
        self.native_tools = "tools" in template
        self.native_tool_role = "'tool'" in template or '"tool"' in template
        self._special, self._blank = _special_pattern(tokenizer)
        probe = self._render(_probe_conversation(), tools=None, add_generation_prompt=False)
        if _PROBE not in probe:
            raise ValueError("The chat template drops assistant content; cannot build token-exact turns.")
        self._probe_prefix = probe[: probe.rfind(_PROBE) + len(_PROBE)]
        self._turn_close = self._render_tail([], add_generation_prompt=False)
        self.end_of_turn_ids = {tokenizer.eos_token_id} | self._turn_close_token()

    def prompt_ids(self, messages: list[dict], tools: list[dict] | None = None) -> list[int]:
        """Ids of ``messages`` followed by the opening of an assistant turn."""
        text, markup = (self._render(m, tools=t, add_generation_prompt=True)
                        for m, t in ((messages, tools), (self._blanked(messages), self._blanked(tools))))
        return self._encode_contents_as_text(text, markup)

    def insert_ids(self, messages: list[dict], *, model_closed_turn: bool) -> list[int]:
        """Ids to append after a model turn: close it (unless the model did), add ``messages``,
        and open the next assistant turn."""
        tails = [self._render_tail(m, add_generation_prompt=True) for m in (messages, self._blanked(messages))]
        if model_closed_turn:
            tails = [self._strip_turn_close(t) for t in tails]
        return self._encode_contents_as_text(*tails)

    def observation_messages(self, observations: list[str]) -> list[dict]:
        """Tool outputs as chat messages: the template's ``tool`` role where it has one."""
        if self.native_tool_role:
            return [{"role": "tool", "content": text} for text in observations]
        body = "\n".join(f"<tool_response>\n{text}\n</tool_response>" for text in observations)
        return [{"role": "user", "content": body}]

    def encode(self, text: str) -> list[int]:
        """Ids of ``text`` with its special-token text read as special tokens: for markup only."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def encode_plain(self, text: str) -> list[int]:
        """Ids of ``text`` as plain text: special-token text is split into ordinary tokens."""
        return list(self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])

    def closes_turn(self, token_ids: list[int]) -> bool:
        return bool(token_ids) and token_ids[-1] in self.end_of_turn_ids

    # -- rendering --------------------------------------------------------------------------------

    def _render(self, messages: list[dict], *, tools: list[dict] | None, add_generation_prompt: bool) -> str:
        kwargs: dict[str, Any] = {"tokenize": False, "add_generation_prompt": add_generation_prompt}
        if tools and self.native_tools:
            kwargs["tools"] = tools
        return self.tokenizer.apply_chat_template(messages, **kwargs)

    def _render_tail(self, messages: list[dict], *, add_generation_prompt: bool) -> str:
        # Cut at the probe's known end, not at a search for it: new content may contain the probe text.
        text = self._render(_probe_conversation() + messages, tools=None, add_generation_prompt=add_generation_prompt)
        if not text.startswith(self._probe_prefix):
            raise ValueError("The chat template is not prefix-preserving; cannot build token-exact turns.")
        return text[len(self._probe_prefix) :]

    # -- keeping contents out of the special tokens -------------------------------------------------

    def _blanked(self, value: Any) -> Any:
        """``value`` (messages, tool schemas) with the text of every special token in its strings
        replaced by blanks of the same length."""
        if isinstance(value, str):
            while (found := self._special.search(value)) is not None:  # blanking may uncover another one
                value = value[: found.start()] + self._blank * len(found.group()) + value[found.end() :]
            return value
        if isinstance(value, dict):
            return {self._blanked(k): self._blanked(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._blanked(v) for v in value]
        return value

    def _encode_contents_as_text(self, text: str, markup: str) -> list[int]:
        """Ids of ``text`` whose special tokens are only those of ``markup``, its blanked rendering."""
        if text == markup:  # no content holds special-token text: the tokenizer's own reading is the safe one
            return self.encode(text)
        if len(text) != len(markup):
            raise ValueError("The chat template changes message contents as it renders them (a rendering with "
                             "special-token text blanked out has another length), so contents cannot be kept out "
                             "of the special tokens; use a template that inserts contents verbatim.")
        ids: list[int] = []
        at = 0
        for token in self._special.finditer(markup):
            ids += self.encode_plain(text[at : token.start()]) + self.encode(token.group())
            at = token.end()
        return ids + self.encode_plain(text[at:])

    def _turn_close_token(self) -> set[int]:
        """The special token the template closes an assistant turn with (ChatML: ``<|im_end|>``)."""
        ids = self.encode(self._turn_close.strip())
        special = set(getattr(self.tokenizer, "all_special_ids", []) or []) | set(
            getattr(self.tokenizer, "added_tokens_decoder", {}) or {})
        return {ids[0]} if ids and ids[0] in special else set()

    def _strip_turn_close(self, tail: str) -> str:
        close = self._turn_close.rstrip("\n ")
        eos = self.tokenizer.eos_token or ""
        for marker in (close, eos):
            if marker and tail.startswith(marker):
                return tail[len(marker) :]
        return tail


def _probe_conversation() -> list[dict]:
    return [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
            {"role": "assistant", "content": _PROBE}]


def _special_pattern(tokenizer: Any) -> tuple[re.Pattern[str], str]:
    """A pattern matching the text of the tokenizer's special tokens (longest first, as the tokenizer
    matches them), and a blank character none of them contains."""
    decoder = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    texts = {t.content for t in decoder.values() if getattr(t, "special", False)}
    texts |= set(getattr(tokenizer, "all_special_tokens", []) or [])
    texts = sorted((t for t in texts if t), key=len, reverse=True)
    blank = next((c for c in _BLANKS if not any(c in t for t in texts)), None)
    if blank is None:
        raise ValueError(f"Every blank candidate {_BLANKS!r} occurs in a special token of this tokenizer.")
    pattern = "|".join(re.escape(t) for t in texts) or r"(?!)"  # (?!) never matches: no special tokens
    return re.compile(pattern), blank
