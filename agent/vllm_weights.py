"""Giving a running vLLM engine new weights through a file: the trainer writes its weights as one
safetensors file in a folder of its own (in ``/dev/shm``, memory, where there is one), and the engine's
workers reload them from it (vLLM's ``reload_weights``), then the engine's prefix cache is dropped.
Only a path crosses the process boundary, so it works wherever the engine's processes see this file
system: an in-process ``VLLMPolicy`` (``load_weights``), or a ``vllm serve`` on this machine
(``ServerWeights``; TRL's NCCL push is the way for a server on another GPU)."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx


def weights_folder() -> Path:
    """A new folder for an engine's weights, in ``/dev/shm`` where there is one."""
    memory = "/dev/shm" if os.path.isdir("/dev/shm") else None
    return Path(tempfile.mkdtemp(prefix="anchorloop-vllm-", dir=memory))


def reload_request(folder: Path) -> dict[str, Any]:
    """The ``collective_rpc`` call that makes an engine's workers reload their weights from ``folder``."""
    return {"method": "reload_weights", "kwargs": {"weights_path": str(folder), "is_checkpoint_format": True}}


def checkpoint_tensors(model: Any) -> dict[str, Any]:
    """``model``'s weights under their checkpoint names, each a tensor of its own. A weight tied to another
    (SmolLM2's output layer is its embedding) is written again as a copy: the CPU engine keeps its own
    packed copy of the output layer, which a reload without that name would leave stale."""
    tensors: dict[str, Any] = {}
    seen: set[int] = set()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach()
        tensors[name] = tensor.clone() if tensor.data_ptr() in seen else tensor.contiguous()
        seen.add(tensor.data_ptr())
    if getattr(model.config, "tie_word_embeddings", False) and "lm_head.weight" not in tensors:
        tensors["lm_head.weight"] = model.get_input_embeddings().weight.detach().clone()
    return tensors


def write_weights(model: Any, folder: Path) -> Path:
    """``model``'s weights as ``folder/model.safetensors``, replaced whole (written aside, then renamed)."""
    from safetensors.torch import save_file

    target = folder / "model.safetensors"
    aside = folder / "model.safetensors.writing"
    save_file(checkpoint_tensors(model), str(aside))
    os.replace(aside, target)
    return target


class ServerWeights:
    """Weight loads into a ``vllm serve`` on this machine, through a file (``training.vllm_server_sync =
    "file"``). The server must be started with ``VLLM_SERVER_DEV_MODE=1`` (its ``/collective_rpc`` and
    ``/reset_prefix_cache`` routes) from a checkpoint of the same architecture."""

    def __init__(self, base_url: str, *, timeout_s: float = 300.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        from agent.openai_policy import server_root

        self.root = server_root(base_url)
        self.timeout_s = timeout_s
        self.transport = transport
        self.folder = weights_folder()

    def load(self, model: Any) -> float:
        """Give the server ``model``'s current weights; returns the seconds it took. Between rollouts only."""
        from agent.sync import run_sync

        started = time.perf_counter()
        write_weights(model, self.folder)
        run_sync(self._reload())
        return time.perf_counter() - started

    async def _reload(self) -> None:
        async with httpx.AsyncClient(timeout=self.timeout_s, transport=self.transport) as client:
            reloaded = await client.post(self.root + "/collective_rpc", json=reload_request(self.folder))
            if reloaded.status_code == 404:
                raise ConnectionError(f"{self.root} has no /collective_rpc route: start the vLLM server with "
                                      "VLLM_SERVER_DEV_MODE=1 to load weights through a file.")
            reloaded.raise_for_status()
            reset = await client.post(self.root + "/reset_prefix_cache")
            reset.raise_for_status()
            if _json(reset).get("success") is False:  # older servers answer 200 with no body
                raise RuntimeError(f"{self.root} kept its prefix cache (requests still running?): load weights "
                                   "between rollouts, not during one.")

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
