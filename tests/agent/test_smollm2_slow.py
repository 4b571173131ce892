"""The real embedded model (run with `pytest -m slow`)."""

import asyncio

import pytest
import torch

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2():
    from agent.models import load_model

    return load_model("smollm2-135m", device="cpu")


def test_first_turns_are_actions_at_least_90_percent(smollm2):
    from agent.hf_policy import HFPolicy
    from agent.policy import SamplingParams
    from agent.protocols import get_protocol
    from envs import get_env
    from training.rollout import build_env_agent, rollout

    model, tokenizer = smollm2
    policy = HFPolicy(model, tokenizer)
    env = get_env("arithmetic", level=2)
    agent = build_env_agent(policy, env, protocol="code", max_turns=2, self_correct=False,
                            sampling=SamplingParams(temperature=0.0, max_new_tokens=96))
    trajectories = asyncio.run(rollout(agent, env, env.tasks("test", n=16, seed=3)))
    policy.close()
    protocol = get_protocol("code")
    first_turns = [next(m["content"] for m in t.messages if m["role"] == "assistant") for t in trajectories]
    readable = [bool(a.tool_calls) or a.final_answer is not None for a in map(protocol.parse, first_turns)]
    assert sum(readable) / len(readable) >= 0.9, first_turns


def test_trajectory_ids_and_logprobs_are_those_of_the_model(smollm2):
    """Re-score a real trajectory with the model: every sampled token's recorded log-prob matches."""
    from agent.hf_policy import HFPolicy
    from agent.policy import SamplingParams
    from envs import get_env
    from training.rollout import build_env_agent, rollout

    model, tokenizer = smollm2
    policy = HFPolicy(model, tokenizer)
    env = get_env("arithmetic", level=1)
    agent = build_env_agent(policy, env, max_turns=4, sampling=SamplingParams(temperature=1.0, max_new_tokens=48))
    traj = asyncio.run(rollout(agent, env, env.tasks("test", n=1, seed=5)))[0]
    policy.close()
    ids = torch.tensor([traj.prompt_ids + traj.completion_ids])
    with torch.no_grad():
        logits = model(ids).logits[0, len(traj.prompt_ids) - 1 : -1]
    rescored = torch.log_softmax(logits.float(), -1).gather(1, torch.tensor(traj.completion_ids)[:, None])[:, 0]
    sampled = torch.tensor(traj.env_mask, dtype=torch.bool)
    assert sampled.any() and (~sampled).any()
    recorded = torch.tensor(traj.logprobs)
    assert torch.allclose(recorded[sampled], rescored[sampled], atol=2e-3)
