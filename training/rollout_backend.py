"""Where training rollouts are sampled (``training.engine``): on the trainer's own weights, in a vLLM
engine in this process, or on a vLLM server.

With ``engine = "hf"`` (the default) the rollout's ``HFPolicy`` runs the very model object TRL
optimizes, so every rollout sees the latest weights for free. With ``engine = "vllm"`` a ``VLLMPolicy``
starts on a copy of the model's weights, and ``AgentRollout.sync`` loads the trained weights into it
before every rollout (``VLLMPolicy.load_weights``: a file in ``/dev/shm``, read by the engine's own
processes; ``training.vllm_kwargs`` go to its ``AsyncEngineArgs``). With ``vllm_server`` set too,
generation moves to a vLLM server, and the agent talks to it through ``OpenAIPolicy``, sending token
ids and getting the sampled ids and log-probs back, so trajectories stay exact. The trained weights
reach the server before every rollout in one of two ways (``training.vllm_server_sync``): ``"nccl"``,
TRL's server mode (``use_vllm=True, vllm_mode="server"``), for a server on a GPU of its own; or
``"file"``, for a server on this machine (CPU too): the same file as in-process, reloaded through the
server's ``/collective_rpc`` route (``agent.vllm_weights.ServerWeights``). The server must be started
for weight updates and sampling-distribution log-probs (README, "GPU, model servers and several
processes").
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from training.config import TrainingConfig


def vllm_args(training: TrainingConfig) -> dict[str, Any]:
    """The ``GRPOConfig`` fields that put generation on the configured vLLM server (none if unset)."""
    if training.vllm_server is None or training.vllm_server_sync == "file":  # "file": AgentRollout.sync loads them
        return {}
    return {"use_vllm": True, "vllm_mode": "server", "vllm_server_base_url": training.vllm_server,
            "vllm_server_timeout": training.vllm_server_timeout_s}


def rollout_policy(training: TrainingConfig, model: Any, tokenizer: Any, *,
                   transport: httpx.AsyncBaseTransport | None = None) -> Any:
    """The policy the rollouts sample from: ``HFPolicy`` on ``model``, a ``VLLMPolicy`` started from its
    weights, or ``OpenAIPolicy`` on the server. Called from the trainer's (synchronous) loop."""
    if training.engine == "hf":
        from agent.hf_policy import HFPolicy

        return HFPolicy(model, tokenizer, max_batch_size=training.max_batch_size)
    if training.vllm_server is None:
        from agent.vllm_policy import VLLMPolicy

        return VLLMPolicy.from_model(model, tokenizer, **training.vllm_kwargs)
    from agent.openai_policy import OpenAIPolicy

    name = asyncio.run(served_model(training.vllm_server, transport=transport))
    policy = OpenAIPolicy(training.vllm_server, name, tokenizer=tokenizer, transport=transport)
    if training.vllm_server_sync == "file":
        from agent.vllm_weights import ServerWeights

        return FileSyncedServer(policy, ServerWeights(training.vllm_server, transport=transport))
    return policy


class FileSyncedServer:
    """``OpenAIPolicy`` on a vLLM server on this machine, plus ``load_weights`` (``ServerWeights``): what
    ``AgentRollout.sync`` calls before each rollout with ``training.vllm_server_sync = "file"``."""

    def __init__(self, policy: Any, weights: Any) -> None:
        self.policy = policy
        self.weights = weights

    def __getattr__(self, name: str) -> Any:  # generate, tokenizer, ...: the server's policy
        return getattr(self.policy, name)

    def __repr__(self) -> str:
        return f"FileSyncedServer({self.policy!r})"

    def load_weights(self, model: Any) -> float:
        return self.weights.load(model)

    def close(self) -> None:
        self.weights.close()


async def served_model(base_url: str, *, timeout_s: float = 10.0,
                       transport: httpx.AsyncBaseTransport | None = None) -> str:
    """The name of the one model an OpenAI-compatible server serves (``GET /v1/models``)."""
    from agent.openai_policy import server_root

    url = server_root(base_url) + "/v1/models"
    try:
        async with httpx.AsyncClient(timeout=timeout_s, transport=transport) as client:
            response = await client.get(url)
            response.raise_for_status()
            models = [m["id"] for m in response.json()["data"]]
    except httpx.HTTPError as exc:
        raise ConnectionError(f"training.vllm_server: no vLLM server answered at {url} ({exc}). Start it first "
                              "(README: GPU, model servers and several processes), or remove the key to generate "
                              "in-process.") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise ConnectionError(f"training.vllm_server: {url} did not list models the OpenAI way ({exc!r}); "
                              "is it a vLLM server?") from exc
    if len(models) != 1:
        raise ConnectionError(f"training.vllm_server: {url} serves {len(models)} models ({models}); training "
                              "needs a server with exactly the one being trained.")
    return models[0]
