"""Reuse of KV cache across turns: a trajectory's next turn starts with everything it has seen.

Entries are keyed by the token ids whose keys/values they hold. A new prompt reuses the longest
common prefix with any entry, so turn k+1 of a trajectory skips re-encoding turns 1..k, and the
members of a GRPO group (and tasks sharing a system prompt) share their common prefix.
"""

from __future__ import annotations

from collections import OrderedDict

import torch

from agent.kv_batch import KV


class PrefixCache:
    def __init__(self, max_tokens: int = 32_768) -> None:
        self.max_tokens = max_tokens
        self._entries: OrderedDict[int, tuple[torch.Tensor, KV]] = OrderedDict()
        self._next_key = 0
        self._tokens = 0
        self.hits = 0
        self.reused_tokens = 0

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()
        self._tokens = 0

    def put(self, ids: list[int], kv: KV) -> None:
        if not ids or len(ids) > self.max_tokens:
            return
        self._entries[self._next_key] = (torch.tensor(ids), kv)
        self._next_key += 1
        self._tokens += len(ids)
        while self._tokens > self.max_tokens:
            _, (old_ids, _) = self._entries.popitem(last=False)
            self._tokens -= len(old_ids)

    def lookup(self, ids: list[int]) -> tuple[int, KV | None]:
        """Longest reusable prefix of ``ids`` (always leaving at least one token to encode)."""
        if not self._entries:
            return 0, None
        query = torch.tensor(ids)
        best_len, best_key = 0, None
        for key, (entry_ids, _) in self._entries.items():
            n = min(len(entry_ids), len(query) - 1)
            if n <= best_len:
                continue
            diff = (entry_ids[:n] != query[:n]).nonzero()
            common = int(diff[0]) if len(diff) else n
            if common > best_len:
                best_len, best_key = common, key
        if best_key is None:
            return 0, None
        self._entries.move_to_end(best_key)
        self.hits += 1
        self.reused_tokens += best_len
        kv = self._entries[best_key][1]
        return best_len, [(k[:, :, :best_len], v[:, :, :best_len]) for k, v in kv]
