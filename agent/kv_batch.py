"""A running batch of sequences with their KV cache, for continuous batching on one device.

Rows can join (after a batched prefill) and leave (when their turn ends) between decode steps, so
no sequence waits for the longest member of its batch. Rows are left-padded; padding may also sit
in the middle of a row (a reused prefix padded to a common length, then new tokens), which the
2-D attention mask and explicit position ids make harmless.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer
from transformers.modeling_outputs import CausalLMOutputWithPast

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values of shape [B, H, S, D]


def left_pad(kv: KV, mask: torch.Tensor, length: int) -> tuple[KV, torch.Tensor]:
    """Pad cache and mask on the left up to ``length`` positions."""
    extra = length - mask.shape[1]
    if extra <= 0:
        return kv, mask
    padded = []
    for k, v in kv:
        zk = k.new_zeros(k.shape[0], k.shape[1], extra, k.shape[3])
        padded.append((torch.cat([zk, k], dim=2), torch.cat([zk, v], dim=2)))
    return padded, torch.cat([mask.new_zeros(mask.shape[0], extra), mask], dim=1)


def concat_rows(a: tuple[KV, torch.Tensor], b: tuple[KV, torch.Tensor]) -> tuple[KV, torch.Tensor]:
    """Stack two batches (cache, mask) into one, left-padding the shorter."""
    length = max(a[1].shape[1], b[1].shape[1])
    kv_a, mask_a = left_pad(*a, length)
    kv_b, mask_b = left_pad(*b, length)
    kv = [(torch.cat([ka, kb]), torch.cat([va, vb])) for (ka, va), (kb, vb) in zip(kv_a, kv_b)]
    return kv, torch.cat([mask_a, mask_b])


def select_rows(kv: KV, mask: torch.Tensor, rows: torch.Tensor) -> tuple[KV, torch.Tensor]:
    """Keep ``rows`` and drop the leading columns that are padding in every kept row."""
    mask = mask[rows]
    used = mask.any(dim=0).nonzero()
    start = int(used[0]) if len(used) else mask.shape[1]
    return [(k[rows, :, start:], v[rows, :, start:]) for k, v in kv], mask[:, start:]


def row_kv(kv: KV, mask: torch.Tensor, row: int) -> KV:
    """One row's cache without its padding, for reuse as a prefix later."""
    keep = mask[row].bool()
    return [(k[row : row + 1, :, keep].clone(), v[row : row + 1, :, keep].clone()) for k, v in kv]


class BufferedLayer(DynamicLayer):
    """A cache layer whose keys/values sit in a buffer with spare room at the end.

    transformers' ``DynamicLayer`` concatenates the whole cache with each new token (a full copy per
    layer per decode step); here a step writes one slot in place, and the buffer grows by doubling.
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, headroom: int = 64) -> None:
        super().__init__()
        self.dtype, self.device = keys.dtype, keys.device
        self.length = keys.shape[2]
        self._k = _with_room(keys, self.length + headroom)
        self._v = _with_room(values, self.length + headroom)
        self.keys, self.values = self._k[:, :, : self.length], self._v[:, :, : self.length]
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        end = self.length + key_states.shape[2]
        if end > self._k.shape[2]:
            self._k = _with_room(self._k[:, :, : self.length], 2 * end)
            self._v = _with_room(self._v[:, :, : self.length], 2 * end)
        self._k[:, :, self.length : end] = key_states
        self._v[:, :, self.length : end] = value_states
        self.length = end
        self.keys, self.values = self._k[:, :, :end], self._v[:, :, :end]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length


def _with_room(t: torch.Tensor, capacity: int) -> torch.Tensor:
    buffer = t.new_empty(t.shape[0], t.shape[1], capacity, t.shape[3])
    buffer[:, :, : t.shape[2]] = t
    return buffer


def buffered_cache(kv: KV, headroom: int = 64) -> DynamicCache:
    """A ``DynamicCache`` over ``kv`` that appends in place (see ``BufferedLayer``)."""
    cache = DynamicCache()
    if kv:
        cache.layers = [BufferedLayer(k, v, headroom) for k, v in kv]
    return cache


def with_cache(cache: DynamicCache | None) -> dict[str, DynamicCache | None]:
    """The keyword that hands ``cache`` to a model's forward: ``cache`` in newer transformers,
    ``past_key_values`` before (deprecated from 5.24, due to go in 5.40). Decided by the library's
    output type rather than one model's signature, so wrapped models (peft, DDP) get the same."""
    return {_CACHE_KEYWORD: cache}


_CACHE_KEYWORD = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


def returned_cache(output: Any) -> DynamicCache:
    """The cache a forward pass returned, under either of its names."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values
