"""A real GRPO step through TRL rewarded by label-free signals alone, computed by the rollout function."""

from trl import GRPOConfig

from agent.hf_policy import HFPolicy
from agent.models import load_model
from agent.policy import SamplingParams
from envs import get_env
from training.grpo import AgentRollout, SelfCorrectionGRPOTrainer
from training.rewards import TERMS
from training.rollout import build_env_agent


def test_a_step_trains_on_signals_the_rollout_computed(tmp_path):
    model, tokenizer = load_model("tiny-random", device="cpu")
    env = get_env("arithmetic", level=1)
    policy = HFPolicy(model, tokenizer)
    agent = build_env_agent(policy, env, max_turns=2, exemplars=[],
                            sampling=SamplingParams(max_new_tokens=12, temperature=1.0))
    signals = ["majority", "self_judge", "belief", "tool_check"]
    rollout = AgentRollout(lambda m: (policy, agent), env, env.tasks("train", n=2), signals=signals)
    outputs = []

    def recorded(prompts, trainer):
        outputs.append(rollout(prompts, trainer))
        return outputs[-1]

    recorded.ready, recorded.listeners = rollout.ready, rollout.listeners
    args = GRPOConfig(output_dir=str(tmp_path / "ckpt"), per_device_train_batch_size=4, num_generations=2,
                      max_steps=1, learning_rate=1e-2, use_cpu=True, bf16=False, report_to=[],
                      activation_checkpointing=False, temperature=1.0, logging_steps=1, save_strategy="no",
                      disable_tqdm=True)
    trainer = SelfCorrectionGRPOTrainer(model=model, processing_class=tokenizer,
                                        reward_funcs=[TERMS[name] for name in signals], args=args,
                                        train_dataset=env.as_dataset("train", n=2), agent_rollout=recorded)
    try:
        trainer.train()
    finally:
        policy.close()
    [out] = outputs
    for name in signals:  # last and first answers' values, one per row
        assert len(out[name]) == len(out[name + "_first"]) == 4
    assert all(v in (0.0, 1.0) for v in out["majority"] + out["tool_check"])
    assert all(0.0 <= v <= 1.0 for v in out["self_judge"])
    logged = trainer.state.log_history[0]
    assert {f"rewards/{name}/mean" for name in signals} <= set(logged)


def test_belief_turns_add_each_turns_credit_to_its_tokens_advantages(tmp_path, scripted):
    import torch

    from tests.training.test_probe import checker

    model, tokenizer = load_model("tiny-random", device="cpu")
    env = get_env("arithmetic", level=1)
    policy = scripted(checker(scripted.tokenizer, rerun_own_code=False))
    policy.model = model  # the belief is read from the weights being trained
    agent = build_env_agent(policy, env, max_turns=4, exemplars=[])
    rollout = AgentRollout(lambda m: (policy, agent), env, env.tasks("train", n=2), signals=["belief"])
    seen = []

    class Recording(SelfCorrectionGRPOTrainer):
        def _generate_and_score_completions(self, inputs):
            out = super()._generate_and_score_completions(inputs)
            seen.append((inputs, out))
            return out

    args = GRPOConfig(output_dir=str(tmp_path / "ckpt"), per_device_train_batch_size=4, num_generations=2,
                      max_steps=1, learning_rate=1e-2, use_cpu=True, bf16=False, report_to=[],
                      activation_checkpointing=False, temperature=1.0, logging_steps=1, save_strategy="no",
                      disable_tqdm=True)
    trainer = Recording(model=model, processing_class=tokenizer, reward_funcs=[TERMS["correctness"]], args=args,
                        train_dataset=env.as_dataset("train", n=2), agent_rollout=rollout, credit="trajectory",
                        belief_turns=0.5)
    trainer.train()
    [(inputs, out)] = seen
    advantages, width = out["advantages"], out["completion_ids"].shape[1]
    assert advantages.shape == (4, width)
    credit = torch.tensor([row["turn_credit"] + [0.0] * (width - len(row["turn_credit"])) for row in inputs])
    assert credit.abs().sum() > 0 and credit.abs().max() <= 1.0  # the verify run moved the belief; clipped
    rest = advantages - 0.5 * credit
    assert torch.allclose(rest, rest[:, :1].expand(-1, width), atol=1e-6)  # one trajectory advantage per row
    assert torch.isfinite(torch.tensor(float(trainer.state.log_history[0]["loss"])))


def test_belief_turns_need_the_belief_signal(tmp_path):
    import pytest

    model, tokenizer = load_model("tiny-random", device="cpu")
    env = get_env("arithmetic", level=1)
    rollout = AgentRollout(lambda m: (None, None), env, env.tasks("train", n=2))
    args = GRPOConfig(output_dir=str(tmp_path / "ckpt"), per_device_train_batch_size=4, num_generations=2,
                      max_steps=1, use_cpu=True, bf16=False, report_to=[], save_strategy="no")
    with pytest.raises(ValueError, match="signals=\\['belief'\\]"):
        SelfCorrectionGRPOTrainer(model=model, processing_class=tokenizer, reward_funcs=[TERMS["correctness"]],
                                  args=args, train_dataset=env.as_dataset("train", n=2), agent_rollout=rollout,
                                  belief_turns=0.5)
