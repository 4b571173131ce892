"""Rollouts on a vLLM server: the config → TRL's server mode, the served model's discovery, and one
real GRPO step whose generations come from an OpenAI-compatible server.

No vLLM can run here (it needs a GPU), so the server is the in-process ASGI one from the
``OpenAIPolicy`` tests and TRL runs without ``use_vllm`` (with it, TRL's trainer insists on the
``vllm`` package to push weights). What is checked is our side: the trainer trains on exactly the
ids and log-probs the server sampled.
"""

from __future__ import annotations

import json

import httpx
import pytest
import torch
from trl import GRPOConfig

from agent.hf_policy import HFPolicy
from agent.models import load_model
from agent.openai_policy import OpenAIPolicy
from agent.policy import SamplingParams
from envs import get_env
from tests.agent.test_openai_policy import CompletionServer
from training.config import ConfigError, RewardConfig, TrainingConfig, load_config
from training.grpo import AgentRollout, SelfCorrectionGRPOTrainer
from training.recorder import RunRecorder
from training.rollout import build_env_agent
from training.rollout_backend import rollout_policy, served_model, vllm_args

SERVER = "http://gpu-box:8000"


class ModelsAndCompletions:
    """An OpenAI-compatible server: GET /v1/models lists ``models``; the rest goes to ``completions``."""

    def __init__(self, completions: CompletionServer | None, models: list[str]) -> None:
        self.completions, self.models = completions, models

    async def __call__(self, scope: dict, receive, send) -> None:
        if scope["method"] == "GET" and scope["path"] == "/v1/models":
            body = json.dumps({"object": "list", "data": [{"id": m, "object": "model"} for m in self.models]})
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": body.encode()})
            return
        await self.completions(scope, receive, send)


def one_step_trainer(model, tokenizer, env, rollout, reward, tmp_path) -> SelfCorrectionGRPOTrainer:
    """A real GRPO trainer for one step of 2 tasks × 2 generations on ``rollout``'s trajectories."""
    args = GRPOConfig(output_dir=str(tmp_path / "ckpt"), per_device_train_batch_size=4, num_generations=2,
                      max_steps=1, learning_rate=1e-2, use_cpu=True, bf16=False, report_to=[],
                      activation_checkpointing=False, temperature=1.0, logging_steps=1, save_strategy="no",
                      disable_tqdm=True)
    return SelfCorrectionGRPOTrainer(model=model, processing_class=tokenizer, reward_funcs=[reward], args=args,
                                     train_dataset=env.as_dataset("train", n=2), agent_rollout=rollout)


def test_without_a_server_rollouts_run_in_process_on_the_trained_model():
    model, tokenizer = load_model("tiny-random", device="cpu")
    training = TrainingConfig()
    assert vllm_args(training) == {}
    policy = rollout_policy(training, model, tokenizer)
    try:
        assert isinstance(policy, HFPolicy) and policy.model is model
    finally:
        policy.close()


def test_a_server_puts_trl_in_vllm_server_mode(tmp_path):
    args = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to=[],
                      **vllm_args(TrainingConfig(engine="vllm", vllm_server=SERVER)))
    assert (args.use_vllm, args.vllm_mode, args.vllm_server_base_url) == (True, "server", SERVER)


def test_a_server_url_without_scheme_is_an_error_naming_the_key(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[training]\nvllm_server = "localhost:8000"\n')
    with pytest.raises(ConfigError, match="training.vllm_server"):
        load_config(path)


async def test_the_served_model_is_discovered_and_bad_servers_are_named():
    assert await served_model(SERVER, transport=httpx.ASGITransport(ModelsAndCompletions(None, ["smol"]))) == "smol"
    with pytest.raises(ConnectionError, match="exactly the one"):
        await served_model(SERVER, transport=httpx.ASGITransport(ModelsAndCompletions(None, ["a", "b"])))

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(ConnectionError, match="no vLLM server answered at http://gpu-box:8000/v1/models"):
        await served_model(SERVER + "/v1", transport=httpx.MockTransport(refuse))
    with pytest.raises(ConnectionError, match="is it a vLLM server"):
        await served_model(SERVER, transport=httpx.MockTransport(lambda r: httpx.Response(200, text="<html>")))


def test_one_grpo_step_trains_on_exactly_what_the_server_sampled(tmp_path):
    model, tokenizer = load_model("tiny-random", device="cpu")
    script = tokenizer.encode("Final answer: 7", add_special_tokens=False) + [tokenizer.eos_token_id]
    server = CompletionServer(tokenizer, script)
    app = ModelsAndCompletions(server, ["smollm2-on-gpu"])
    policy = rollout_policy(TrainingConfig(engine="vllm", vllm_server=SERVER), model, tokenizer,
                            transport=httpx.ASGITransport(app))
    assert isinstance(policy, OpenAIPolicy) and policy.model == "smollm2-on-gpu"

    env = get_env("arithmetic", level=1)
    tasks = env.tasks("train", n=2)
    agent = build_env_agent(policy, env, max_turns=3, exemplars=[],
                            sampling=SamplingParams(max_new_tokens=16, temperature=1.0))
    rollout = AgentRollout(lambda model: (policy, agent), env, tasks)
    outputs = []

    def recording(prompts, trainer):
        outputs.append(rollout(prompts, trainer))
        return outputs[-1]

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = one_step_trainer(model, tokenizer, env, recording,
                               lambda completions, **_: [float(i % 2) for i in range(len(completions))], tmp_path)
    trainer.train()

    out = outputs[0]
    assert len(out["completion_ids"]) == 4
    assert server.requests and all(isinstance(r["prompt"], list) for r in server.requests)  # ids, never text
    for ids, mask, logprobs in zip(out["completion_ids"], out["env_mask"], out["logprobs"], strict=True):
        sampled = [t for t, m in zip(ids, mask, strict=True) if m]
        turns = len(sampled) // len(script)
        assert turns >= 1 and sampled == script * turns  # every model turn is the server's sample, as sent
        model_logprobs = [lp for lp, m in zip(logprobs, mask, strict=True) if m]
        assert model_logprobs == pytest.approx([-0.25 * (i + 1) for i in range(len(script))] * turns)
        assert 0 in mask  # the verify instruction was inserted, not sampled
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in trainer.state.log_history if "loss" in h)


def test_a_step_whose_every_trajectory_failed_stops_training_and_says_why(tmp_path):
    model, tokenizer = load_model("tiny-random", device="cpu")

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    policy = OpenAIPolicy(SERVER, "smol", tokenizer=tokenizer, transport=httpx.MockTransport(down), max_retries=0)
    env = get_env("arithmetic", level=1)
    agent = build_env_agent(policy, env, max_turns=2, exemplars=[], sampling=SamplingParams(max_new_tokens=8))
    rollout = AgentRollout(lambda model: (policy, agent), env, env.tasks("train", n=2))
    trainer = one_step_trainer(model, tokenizer, env, rollout, lambda completions, **_: [0.0] * len(completions),
                               tmp_path)
    RunRecorder(tmp_path, RewardConfig()).attach(trainer, rollout)
    with pytest.raises(RuntimeError, match=r"every trajectory of training step 0 failed.*gpu-box.*--resume"):
        trainer.train()
    saved = (tmp_path / "trajectories" / "step_00000.jsonl").read_text().splitlines()
    assert len(saved) == 4  # the failed runs are kept for inspection
