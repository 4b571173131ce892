"""Token-level chat formatting: the first prompt, and the segments inserted between model turns.

The trajectory is one growing id sequence. The model's own tokens are appended exactly as sampled;
everything else (tool observations, the verify instruction, a new user message) is rendered by the
tokenizer's chat template *as a delta* and tokenized once. The delta is found by rendering a probe
conversation with and without the new messages, so it works for any prefix-preserving template
(ChatML/SmolLM2, Qwen2.5 with its native ``tool`` role, …) without knowing its markup.
"""

from __future__ import annotations

from typing import Any

_PROBE = "\u2063PROBE\u2063"  # an assistant message body that no template alters


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
        self._turn_close = self._render_tail([], add_generation_prompt=False)
        self.end_of_turn_ids = {tokenizer.eos_token_id} | self._turn_close_token()

    def prompt_ids(self, messages: list[dict], tools: list[dict] | None = None) -> list[int]:
        """Ids of ``messages`` followed by the opening of an assistant turn."""
        text = self._render(messages, tools=tools, add_generation_prompt=True)
        return self.encode(text)

    def insert_ids(self, messages: list[dict], *, model_closed_turn: bool) -> list[int]:
        """Ids to append after a model turn: close it (unless the model did), add ``messages``,
        and open the next assistant turn."""
        tail = self._render_tail(messages, add_generation_prompt=True)
        if model_closed_turn:
            tail = self._strip_turn_close(tail)
        return self.encode(tail)

    def observation_messages(self, observations: list[str]) -> list[dict]:
        """Tool outputs as chat messages: the template's ``tool`` role where it has one."""
        if self.native_tool_role:
            return [{"role": "tool", "content": text} for text in observations]
        body = "\n".join(f"<tool_response>\n{text}\n</tool_response>" for text in observations)
        return [{"role": "user", "content": body}]

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def closes_turn(self, token_ids: list[int]) -> bool:
        return bool(token_ids) and token_ids[-1] in self.end_of_turn_ids

    # -- rendering --------------------------------------------------------------------------------

    def _render(self, messages: list[dict], *, tools: list[dict] | None, add_generation_prompt: bool) -> str:
        kwargs: dict[str, Any] = {"tokenize": False, "add_generation_prompt": add_generation_prompt}
        if tools and self.native_tools:
            kwargs["tools"] = tools
        return self.tokenizer.apply_chat_template(messages, **kwargs)

    def _render_tail(self, messages: list[dict], *, add_generation_prompt: bool) -> str:
        probe = [
            {"role": "system", "content": "s"},
            {"role": "user", "content": "u"},
            {"role": "assistant", "content": _PROBE},
        ]
        text = self._render(probe + messages, tools=None, add_generation_prompt=add_generation_prompt)
        at = text.rfind(_PROBE)
        if at < 0:
            raise ValueError("The chat template drops assistant content; cannot build token-exact turns.")
        return text[at + len(_PROBE) :]

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
