"""HFPolicy: a transformers model behind the Policy protocol, with continuous batching.

Every ``generate`` call from any coroutine lands in one inbox. A worker thread owns the model and
runs a single decode loop: between steps, waiting requests join the running batch (after one
batched prefill that reuses cached prefixes) and finished rows leave it at once, resolving their
futures. Trajectories therefore advance independently: a row that stops early goes back to its
agent (to run a tool) while the others keep decoding, and it rejoins as soon as it returns.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DynamicCache

from agent.chat_format import end_of_turn_ids
from agent.kv_batch import KV, buffered_cache, concat_rows, left_pad, returned_cache, row_kv, select_rows, with_cache
from agent.policy import Generation, PolicyError, SamplingParams
from agent.prefix_cache import PrefixCache
from agent.sampling import sample_rows

log = logging.getLogger(__name__)

_STOP_TAIL_TOKENS = 24  # stop strings are matched in the decoded tail of this many tokens
_MIN_SHARED_PREFIX = 32  # shorter common prefixes are not worth a separate forward pass


@dataclass
class _Request:
    prompt_ids: list[int]
    sampling: SamplingParams
    future: concurrent.futures.Future
    on_text: Callable[[str], None] | None = None
    loop: asyncio.AbstractEventLoop | None = None
    context: contextvars.Context | None = None  # the caller's, so callbacks see its context variables
    generator: torch.Generator | None = None
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish_reason: str | None = None
    streamed: str = ""


@dataclass
class PolicyStats:
    forward_passes: int = 0
    generated_tokens: int = 0
    prefill_tokens: int = 0
    reused_prefix_tokens: int = 0
    requests: int = 0
    busy_s: float = 0.0
    batch_rows_sum: int = 0

    @property
    def mean_batch(self) -> float:
        return self.batch_rows_sum / self.forward_passes if self.forward_passes else 0.0


class HFPolicy:
    """Token-in/token-out sampling from a transformers causal LM on CPU or CUDA."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_batch_size: int = 16,
        prefix_cache_tokens: int = 32_768,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.prefix_cache = PrefixCache(prefix_cache_tokens)
        self.stats = PolicyStats()
        self.eos_ids = _eos_ids(model, tokenizer)
        self.max_positions = int(getattr(model.config, "max_position_embeddings", 1 << 30))
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.eos_ids)
        self._inbox: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._cache_generation = 0
        # running batch
        self._rows: list[_Request] = []
        self._kv: KV = []
        self._mask: torch.Tensor | None = None
        self._positions: torch.Tensor | None = None
        self._cache: DynamicCache | None = None  # over self._kv, appended in place by decode steps

    @classmethod
    def from_pretrained(cls, spec: str, **kwargs: Any) -> HFPolicy:
        from agent.models import load_model

        model, tokenizer = load_model(spec, device=kwargs.pop("device", None))
        return cls(model, tokenizer, **kwargs)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # -- public API -------------------------------------------------------------------------------

    async def generate(
        self,
        prompt_ids: list[int],
        sampling: SamplingParams | None = None,
        *,
        on_text: Callable[[str], None] | None = None,
    ) -> Generation:
        request = self._make_request(prompt_ids, sampling or SamplingParams(), on_text)
        request.loop = asyncio.get_running_loop()
        request.context = contextvars.copy_context()
        self._submit(request)
        return await asyncio.wrap_future(request.future)

    def generate_sync(self, prompt_ids: list[int], sampling: SamplingParams | None = None) -> Generation:
        request = self._make_request(prompt_ids, sampling or SamplingParams(), None)
        self._submit(request)
        return request.future.result()

    def reset_cache(self) -> None:
        """Forget cached prefixes; call whenever the model's weights change."""
        self._cache_generation += 1

    def close(self) -> None:
        """Stop the worker thread and free the cached keys/values (the model itself stays usable)."""
        if self._thread is not None:
            self._inbox.put(None)
            self._thread.join(timeout=30)
            self._thread = None
        self.prefix_cache.clear()

    # -- request intake ---------------------------------------------------------------------------

    def _make_request(
        self, prompt_ids: list[int], sampling: SamplingParams, on_text: Callable[[str], None] | None
    ) -> _Request:
        if not prompt_ids:
            raise ValueError("generate() needs at least one prompt token.")
        vocab = self.model.get_input_embeddings().num_embeddings
        bad = [t for t in prompt_ids if not 0 <= int(t) < vocab]
        if bad:
            raise ValueError(f"prompt_ids contains ids outside the vocabulary (size {vocab}): {bad[:5]}")
        if len(prompt_ids) >= self.max_positions:
            raise PolicyError(
                f"Prompt of {len(prompt_ids)} tokens does not fit the model's context "
                f"({self.max_positions}); lower max_turns or cap tool output."
            )
        generator = None
        if sampling.seed is not None:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(sampling.seed)
        return _Request(
            list(map(int, prompt_ids)), sampling, concurrent.futures.Future(), on_text, generator=generator
        )

    def _submit(self, request: _Request) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="hf-policy", daemon=True)
                self._thread.start()
        self._inbox.put(request)

    # -- the decode loop (worker thread) ----------------------------------------------------------

    def _run(self) -> None:
        seen_generation = self._cache_generation
        with torch.inference_mode():
            while True:
                joiners = self._take_joiners(block=not self._rows)
                if joiners is None:
                    self._fail_all(PolicyError("policy closed"))
                    return
                if self._cache_generation != seen_generation:
                    self.prefix_cache.clear()
                    seen_generation = self._cache_generation
                started = time.perf_counter()
                try:
                    if joiners:  # admit newcomers, then still advance everyone in this iteration
                        self._admit(joiners)
                        self._retire_finished()
                    if self._rows:
                        self._decode_step()
                        self._retire_finished()
                except Exception as exc:  # keep serving: fail only the requests in flight
                    log.exception("generation failed")
                    self._fail_all(PolicyError(f"generation failed: {type(exc).__name__}: {exc}"), joiners)
                self.stats.busy_s += time.perf_counter() - started

    def _take_joiners(self, block: bool) -> list[_Request] | None:
        joiners: list[_Request] = []
        room = self.max_batch_size - len(self._rows)
        try:
            if block:
                item = self._inbox.get()
                if item is None:
                    return None
                joiners.append(item)
            while len(joiners) < room:
                item = self._inbox.get_nowait()
                if item is None:
                    self._inbox.put(None)  # handle shutdown after this batch
                    break
                joiners.append(item)
        except queue.Empty:
            pass
        return [r for r in joiners if r.future.set_running_or_notify_cancel()]

    def _forward(self, input_ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: DynamicCache):
        out = self.model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
            **with_cache(cache),
        )
        self.stats.forward_passes += 1
        self.stats.batch_rows_sum += input_ids.shape[0]
        new_kv = [(layer.keys, layer.values) for layer in returned_cache(out).layers]
        return out.logits[:, -1, :], new_kv

    def _admit(self, joiners: list[_Request]) -> None:
        """Prefill the joiners in one batch (reusing cached prefixes), sample their first token."""
        device = self.device
        self._share_common_prefix(joiners)
        prefixes = [self.prefix_cache.lookup(r.prompt_ids) for r in joiners]
        prefix_len = max(n for n, _ in prefixes)
        rest = [r.prompt_ids[n:] for r, (n, _) in zip(joiners, prefixes)]
        new_len = max(len(x) for x in rest)
        rows = len(joiners)
        self.stats.requests += rows
        self.stats.reused_prefix_tokens += sum(n for n, _ in prefixes)
        self.stats.prefill_tokens += sum(len(x) for x in rest)

        kv: KV = []
        prefix_mask = torch.zeros(rows, 0, dtype=torch.long, device=device)
        if prefix_len:
            batch = None
            for n, entry in prefixes:
                row_mask = torch.ones(1, n, dtype=torch.long, device=device)
                if entry is None:  # no reusable prefix: an empty cache of matching shape
                    entry = [(k[:1, :, :0], v[:1, :, :0]) for k, v in _template_kv(prefixes)]
                batch = (entry, row_mask) if batch is None else concat_rows(batch, (entry, row_mask))
            kv, prefix_mask = left_pad(batch[0], batch[1], prefix_len)
        input_ids = torch.full((rows, new_len), self._pad_id, dtype=torch.long, device=device)
        new_mask = torch.zeros(rows, new_len, dtype=torch.long, device=device)
        positions = torch.zeros(rows, new_len, dtype=torch.long, device=device)
        for i, ((n, _), ids) in enumerate(zip(prefixes, rest)):
            input_ids[i, new_len - len(ids) :] = torch.tensor(ids, device=device)
            new_mask[i, new_len - len(ids) :] = 1
            positions[i, new_len - len(ids) :] = torch.arange(n, n + len(ids), device=device)
        mask = torch.cat([prefix_mask, new_mask], dim=1)
        logits, kv = self._forward(input_ids, mask, positions, buffered_cache(kv, headroom=new_len))
        for i, r in enumerate(joiners):
            self.prefix_cache.put(r.prompt_ids, row_kv(kv, mask, i))
        next_positions = torch.tensor([len(r.prompt_ids) for r in joiners], device=device)
        if self._rows:
            kv, mask = concat_rows((self._kv, self._mask), (kv, mask))
            next_positions = torch.cat([self._positions, next_positions])
        self._rows = self._rows + joiners
        self._kv, self._mask, self._positions = kv, mask, next_positions
        self._cache = buffered_cache(kv)
        self._take_samples(logits, joiners, offset=len(self._rows) - rows)

    def _share_common_prefix(self, joiners: list[_Request]) -> None:
        """Encode the joiners' common prefix once (typically system prompt and exemplars) when the cache
        does not have it yet, instead of once per row."""
        if len(joiners) < 2:
            return
        common = _common_prefix_length([r.prompt_ids for r in joiners])
        common = min(common, min(len(r.prompt_ids) for r in joiners) - 1)
        if common < _MIN_SHARED_PREFIX or self.prefix_cache.lookup(joiners[0].prompt_ids[: common + 1])[0] >= common:
            return
        ids = joiners[0].prompt_ids[:common]
        tokens = torch.tensor([ids], device=self.device)
        mask = torch.ones_like(tokens)
        positions = torch.arange(common, device=self.device)[None]
        _, kv = self._forward(tokens, mask, positions, DynamicCache())
        self.stats.prefill_tokens += common
        self.prefix_cache.put(ids, kv)

    def _decode_step(self) -> None:
        device = self.device
        last = torch.tensor([[r.tokens[-1]] for r in self._rows], device=device)
        mask = torch.cat([self._mask, torch.ones(len(self._rows), 1, dtype=torch.long, device=device)], dim=1)
        logits, kv = self._forward(last, mask, self._positions[:, None], self._cache)
        self._kv, self._mask = kv, mask
        self._positions = self._positions + 1
        self._take_samples(logits, self._rows, offset=0)

    def _take_samples(self, logits: torch.Tensor, rows: list[_Request], offset: int) -> None:
        tokens, logprobs = sample_rows(logits, [r.sampling for r in rows], [r.generator for r in rows])
        self.stats.generated_tokens += len(rows)
        for i, (r, token, lp) in enumerate(zip(rows, tokens, logprobs)):
            r.tokens.append(token)
            r.logprobs.append(lp)
            r.finish_reason = self._finish_reason(r, int(self._positions[offset + i]) + 1)
            if r.on_text is not None:
                self._stream(r)

    def _finish_reason(self, r: _Request, context_len: int) -> str | None:
        if r.tokens[-1] in self.eos_ids:
            return "eos"
        if r.sampling.stop:
            tail = self.tokenizer.decode(r.tokens[-_STOP_TAIL_TOKENS:], skip_special_tokens=False)
            if any(s in tail for s in r.sampling.stop):
                return "stop"
        if len(r.tokens) >= r.sampling.max_new_tokens or context_len >= self.max_positions:
            return "length"
        return None

    def _stream(self, r: _Request) -> None:
        text = self.tokenizer.decode(r.tokens, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # an incomplete multi-byte character: wait for the rest
            return
        delta, r.streamed = text[len(r.streamed) :], text
        if delta and r.loop is not None:
            r.loop.call_soon_threadsafe(r.on_text, delta, context=r.context)

    def _retire_finished(self) -> None:
        done = [i for i, r in enumerate(self._rows) if r.finish_reason or r.future.cancelled()]
        if not done:
            return
        for i in done:
            r = self._rows[i]
            if r.future.cancelled():
                continue
            fed = r.prompt_ids + r.tokens[:-1]  # the last sampled token was never fed to the model
            self.prefix_cache.put(fed, row_kv(self._kv, self._mask, i))
            text = self.tokenizer.decode(r.tokens, skip_special_tokens=True)
            r.future.set_result(Generation(token_ids=r.tokens, logprobs=r.logprobs, text=text,
                                           finish_reason=r.finish_reason))
        keep = [i for i in range(len(self._rows)) if i not in set(done)]
        if keep:
            index = torch.tensor(keep, device=self.device)
            self._kv, self._mask = select_rows(self._kv, self._mask, index)
            self._positions = self._positions[index]
            self._cache = buffered_cache(self._kv)
        else:
            self._kv, self._mask, self._positions, self._cache = [], None, None, None
        self._rows = [self._rows[i] for i in keep]

    def _fail_all(self, error: Exception, extra: list[_Request] | None = None) -> None:
        for r in self._rows + [r for r in (extra or []) if r not in self._rows]:
            if not r.future.done():
                r.future.set_exception(error)
        self._rows, self._kv, self._mask, self._positions, self._cache = [], [], None, None, None


def _common_prefix_length(sequences: list[list[int]]) -> int:
    first = sequences[0]
    length = min(len(seq) for seq in sequences)
    for seq in sequences[1:]:
        n = 0
        while n < length and seq[n] == first[n]:
            n += 1
        length = n
    return length


def _template_kv(prefixes: list[tuple[int, KV | None]]) -> KV:
    return next(entry for _, entry in prefixes if entry is not None)


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config, tokenizer):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    return ids | end_of_turn_ids(tokenizer)
