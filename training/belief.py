"""The ``belief`` signal (ΔBelief style): how the model's confidence in its own answer moved over a run.

The belief before model turn k is the log-probability the model gives its answer, teacher-forced, right
where turn k would begin: the run's exact ids up to that point (never decoded and re-tokenized), then
the cue ``Final answer:`` and the answer's tokens. Turn k's credit is belief(k+1) − belief(k): what
that turn and the tool output it drew did to the model's confidence. Points run from the bare prompt
(k = 0) to the start of the turn that wrote the answer, so the answer is never read off the text that
states it (for the last answer of a verified run, the first answer is above it: a confirmed answer
starts with a head start, which is the self-agreement this signal is audited for).

The per-run reward is ``belief_gain`` = final belief − initial belief (0 for an answer written in the
first turn: nothing moved). ``training.belief_turns`` also adds each turn's credit (clipped to ±1 nat)
to that turn's token advantages (``turn_credit_tokens``): dense credit, turn by turn.

One forward pass encodes the run up to the last point (its keys and values kept); each point then
costs one short pass over the cue and the answer, on a copy of those keys and values cut at that point.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from training.trajectory import Trajectory

BELIEF_CUE = "Final answer:"


def belief_gain(curve: Sequence[float]) -> float:
    """Final minus initial belief; 0.0 for fewer than two points."""
    return float(curve[-1] - curve[0]) if len(curve) >= 2 else 0.0


def belief_credits(curve: Sequence[float]) -> list[float]:
    """Each turn's change of belief (turn k: belief before turn k+1 − belief before turn k)."""
    return [b - a for a, b in zip(curve, curve[1:])]


def turn_credit_tokens(traj: Trajectory, clip: float = 1.0) -> list[float]:
    """Per completion token, the belief credit of the model turn it belongs to (clipped to ±``clip``;
    0 on inserted tokens, on the turn that wrote the answer and where no curve was computed)."""
    tokens = [0.0] * len(traj.completion_ids)
    for span, credit in zip(traj.turn_spans, belief_credits(traj.belief_curve), strict=False):
        value = max(-clip, min(clip, credit))
        for i in range(span.start, min(span.end, len(tokens))):
            tokens[i] = value * traj.env_mask[i]
    return tokens


class BeliefScorer:
    """Teacher-forced beliefs on ``model`` (a transformers causal LM, the policy's own weights)."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.forward_passes = 0
        self.seconds = 0.0

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])

    def curve(self, traj: Trajectory, answer: str, upto_turn: int) -> list[float]:
        """Belief in ``answer`` before each model turn 0 … ``upto_turn`` (empty without a point or an answer)."""
        import torch

        from agent.kv_batch import buffered_cache, returned_cache, with_cache

        points = [span.start for span in traj.turn_spans[: upto_turn + 1]]
        target = self._encode(" " + answer.strip()) if answer and answer.strip() else []
        if not points or not target or not traj.prompt_ids:
            return []
        started = time.perf_counter()
        cue = self._encode(BELIEF_CUE)
        device = next(self.model.parameters()).device
        ids = traj.prompt_ids + traj.completion_ids
        base = len(traj.prompt_ids)
        probe = torch.tensor([cue + target], device=device)
        wanted = torch.tensor(target, device=device)[:, None]
        beliefs = []
        with torch.no_grad():
            prefix = torch.tensor([ids[: base + points[-1]]], device=device)
            out = self.model(input_ids=prefix, use_cache=True, logits_to_keep=1)
            kv = [(layer.keys, layer.values) for layer in returned_cache(out).layers]
            for point in reversed(points):
                end = base + point  # a fresh cache over the first ``end`` positions (the slices are copied)
                cache = buffered_cache([(k[:, :, :end], v[:, :, :end]) for k, v in kv], headroom=probe.shape[1])
                logits = self.model(input_ids=probe, use_cache=True, **with_cache(cache)).logits[0]
                logp = torch.log_softmax(logits[len(cue) - 1 : -1].float(), dim=-1)
                beliefs.append(float(logp.gather(1, wanted).sum()))
        self.forward_passes += 1 + len(points)
        self.seconds += time.perf_counter() - started
        return beliefs[::-1]
