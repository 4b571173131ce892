"""Drawing the next token for each row of a batch, and recording its log-prob as sampled."""

from __future__ import annotations

import torch

from agent.policy import SamplingParams


def _filter(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        drop = cumulative - sorted_logits.softmax(-1) > top_p  # keep the token that crosses top_p
        logits = logits.clone()
        logits[order[drop]] = float("-inf")
    return logits


def sample_rows(
    logits: torch.Tensor, params: list[SamplingParams], generators: list[torch.Generator | None]
) -> tuple[list[int], list[float]]:
    """Sample one token per row of ``logits`` [B, V].

    The recorded log-prob is under the temperature-scaled distribution (before top-k/top-p), which
    is what a trainer that divides logits by the same temperature recomputes.
    """
    logits = logits.float()
    temps = torch.tensor([p.temperature if p.temperature > 0 else 1.0 for p in params], device=logits.device)
    scaled = logits / temps[:, None]
    logp = torch.log_softmax(scaled, dim=-1)
    tokens: list[int] = []
    for row, (p, gen) in enumerate(zip(params, generators)):
        if p.temperature == 0:
            token = int(torch.argmax(scaled[row]))
        else:
            filtered = _filter(scaled[row], p.top_k, p.top_p)
            probs = torch.softmax(filtered, dim=-1)
            token = int(torch.multinomial(probs, 1, generator=gen))
        tokens.append(token)
    index = torch.tensor(tokens, device=logits.device)
    chosen = logp.gather(1, index[:, None]).squeeze(1)
    return tokens, chosen.tolist()
