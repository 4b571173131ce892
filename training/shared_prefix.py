"""Per-token log-probs for a batch whose rows share a long prefix, encoding the prefix once.

Every trajectory of a training step starts with the same system prompt and worked exemplars
(~570 of its ~900 tokens with the default prompt). TRL's loss runs the model on each full row;
here the common prefix runs once, its keys and values are shared by every row (expanded, not
copied), and only each row's own suffix (question and completion) runs per row. The result is the
same function of the weights — same tokens, positions and causal attention — so log-probs and
gradients match the full computation up to float rounding (tested); gradients reach the prefix
through the shared keys and values, summed over the rows.

Rows arrive as TRL lays them out: prompt left-padded, completion right-padded, ``attention_mask``
marking real tokens; a row whose completion is fully masked (truncated) gets zeros.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import DynamicCache

from agent.kv_batch import returned_cache, with_cache


def common_prefix_length(rows: list[torch.Tensor]) -> int:
    """Length of the longest prefix all rows share."""
    shortest = min(len(r) for r in rows)
    if shortest == 0:
        return 0
    stacked = torch.stack([r[:shortest] for r in rows])
    same = (stacked == stacked[0]).all(dim=0)
    return shortest if bool(same.all()) else int(same.to(torch.int8).argmin())


def shared_prefix_logps(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, logits_to_keep: int,
                        compute_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs (and entropies) of the last ``logits_to_keep`` columns, shaped ``(rows, logits_to_keep)``.

    ``model`` is a causal LM patched with TRL's fused LM head (``GRPOTrainer`` does that), so the
    temperature and the chunked vocabulary projection are TRL's own.
    """
    rows, width = input_ids.shape
    prompt_width = width - logits_to_keep
    logps = input_ids.new_zeros((rows, logits_to_keep), dtype=torch.float32)
    entropies = torch.zeros_like(logps) if compute_entropy else None
    mask = attention_mask.bool()
    live = [b for b in range(rows) if bool(mask[b, prompt_width:].any())]
    if not live:
        return logps, entropies
    prompts = [input_ids[b, :prompt_width][mask[b, :prompt_width]] for b in live]
    completions = [input_ids[b, prompt_width:][mask[b, prompt_width:]] for b in live]
    # the prefix stops one token short of the shortest prompt, so every completion token is
    # predicted from a position of its own row's suffix
    shared = min(common_prefix_length(prompts), min(len(p) for p in prompts) - 1)
    suffixes = [torch.cat([p[shared:], c]) for p, c in zip(prompts, completions, strict=True)]

    cache = None
    if shared > 0:
        prefix = model(input_ids=prompts[0][None, :shared], use_cache=True, logits_to_keep=1)
        cache = _expand(returned_cache(prefix), len(live))
    longest = max(len(s) for s in suffixes)
    pad = input_ids.new_zeros((len(live), longest))
    suffix_mask = torch.zeros_like(pad)
    labels = torch.full_like(pad, -100)
    for i, (s, p) in enumerate(zip(suffixes, prompts, strict=True)):
        pad[i, : len(s)] = s
        suffix_mask[i, : len(s)] = 1
        labels[i, len(p) - shared : len(s)] = s[len(p) - shared :]
    full_mask = torch.cat([suffix_mask.new_ones((len(live), shared)), suffix_mask], dim=1)
    positions = torch.arange(shared, shared + longest, device=pad.device).expand(len(live), -1)
    out = model(input_ids=pad, attention_mask=full_mask, position_ids=positions, labels=labels, fused_lm_head=True,
                **with_cache(cache))
    # the fused head scores label t+1 at position t: column j of a completion sits at
    # suffix position (len(prompt) - shared + j), scored at index (len(prompt) - shared + j - 1)
    for i, (b, p, c) in enumerate(zip(live, prompts, completions, strict=True)):
        start = len(p) - shared - 1
        logps[b, : len(c)] = out.log_probs[i, start : start + len(c)]
        if entropies is not None:
            entropies[b, : len(c)] = out.entropy[i, start : start + len(c)]
    return logps, entropies


def _expand(cache: Any, rows: int) -> DynamicCache:
    """The prefix's keys and values, viewed once per row (``expand``: no copy; gradients sum back)."""
    layers = [(layer.keys, layer.values) for layer in cache.layers]
    expanded = DynamicCache()
    for index, (keys, values) in enumerate(layers):
        expanded.update(keys.expand(rows, -1, -1, -1), values.expand(rows, -1, -1, -1), index)
    return expanded
