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
