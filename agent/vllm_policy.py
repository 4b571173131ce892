"""``VLLMPolicy``: the Policy protocol on an in-process vLLM engine (GPU), prompts passed as token ids.

vLLM is an optional extra: this module imports without it, and constructing a ``VLLMPolicy``
without it raises an ``ImportError`` that says how to install it.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from typing import Any

from agent.policy import FinishReason, Generation, SamplingParams

INSTALL_HINT = "pip install 'anchorloop[vllm]'"


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as exc:
        raise ImportError(
            f"VLLMPolicy needs vLLM, which is not installed: {INSTALL_HINT} (Linux with a CUDA GPU). "
            "Without a GPU use HFPolicy, or OpenAIPolicy against a vLLM server elsewhere."
        ) from exc
    return vllm


class VLLMPolicy:
    """A ``Policy`` on vLLM's ``AsyncLLMEngine``: concurrent ``generate`` calls are batched by the engine.

    ``engine_kwargs`` go to ``vllm.AsyncEngineArgs`` (``gpu_memory_utilization``, ``max_model_len``,
    ``dtype``, ...). Log-probs default to ``logprobs_mode="processed_logprobs"`` (the distribution
    actually sampled from, after temperature and top-p) where the installed vLLM has that option.
    ``tokenizer`` defaults to the model's own, loaded with transformers.
    """

    def __init__(self, model: str, *, tokenizer: Any = None, **engine_kwargs: Any) -> None:
        vllm = _import_vllm()
        from vllm.sampling_params import RequestOutputKind

        self._vllm = vllm
        self._final_only = RequestOutputKind.FINAL_ONLY
        self._cumulative = RequestOutputKind.CUMULATIVE
        if "logprobs_mode" in {f.name for f in dataclasses.fields(vllm.AsyncEngineArgs)}:
            engine_kwargs.setdefault("logprobs_mode", "processed_logprobs")
        self.model = model
        self.engine = vllm.AsyncLLMEngine.from_engine_args(vllm.AsyncEngineArgs(model=model, **engine_kwargs))
        if tokenizer is None:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(engine_kwargs.get("tokenizer") or model)
        self.tokenizer = tokenizer

    def __repr__(self) -> str:
        return f"VLLMPolicy({self.model!r})"

    async def generate(
        self,
        prompt_ids: list[int],
        sampling: SamplingParams,
        *,
        on_text: Callable[[str], None] | None = None,
    ) -> Generation:
        """Sample one turn. With ``on_text``, each new piece of text is passed to it as it is generated."""
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
        """Stop the engine and free the GPU."""
        self.engine.shutdown()


def _finish_reason(finish_reason: str | None, stop_reason: int | str | None) -> FinishReason:
    if finish_reason == "length":
        return "length"
    if finish_reason == "stop":
        # vLLM's stop_reason: the stop string, a stop token id (the model's other EOS ids), or None for EOS.
        return "stop" if isinstance(stop_reason, str) else "eos"
    raise RuntimeError(f"vLLM ended the request with finish_reason={finish_reason!r} (aborted?)")
