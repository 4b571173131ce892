import json

from training.config import TrainConfig
from training.train import train


def test_lora_training_runs_and_saves_an_adapter(tmp_path):
    config = TrainConfig.model_validate({
        "output_dir": str(tmp_path / "run"), "model": {"name": "tiny-random", "lora": True, "lora_r": 4},
        "env": {"name": "arithmetic", "kwargs": {"level": 1}, "train_tasks": 4},
        "agent": {"max_turns": 2, "max_new_tokens": 8},
        "training": {"steps": 1, "tasks_per_step": 1, "num_generations": 2, "report_to": []},
    })
    run_dir = train(config)
    assert (run_dir / "final" / "adapter_config.json").exists()
    assert (run_dir / "train_log.jsonl").read_text().count("\n") == 1
    from agent.models import load_model

    model, tokenizer = load_model(str(run_dir / "final"), device="cpu")
    assert not hasattr(model, "peft_config")  # merged into a plain model, ready for HFPolicy
    assert tokenizer.chat_template


def test_one_rollout_feeds_one_optimizer_step_of_micro_batches(tmp_path):
    from training.train import build_trainer

    config = TrainConfig.model_validate({
        "output_dir": str(tmp_path / "run"), "model": {"name": "tiny-random"},
        "env": {"name": "arithmetic", "kwargs": {"level": 1}, "train_tasks": 4},
        "agent": {"max_turns": 2, "max_new_tokens": 8},
        "training": {"steps": 1, "tasks_per_step": 2, "num_generations": 2, "micro_batch_size": 1, "report_to": []},
    })
    (tmp_path / "run").mkdir()
    trainer, rollout = build_trainer(config, tmp_path / "run")
    losses = []
    original = trainer._compute_loss
    trainer._compute_loss = lambda m, inputs: losses.append(len(inputs["completion_ids"])) or original(m, inputs)
    trainer.train()
    rollout.policy.close()
    assert losses == [1, 1, 1, 1]  # four micro-batches of one trajectory each
    assert len((tmp_path / "run" / "train_log.jsonl").read_text().splitlines()) == 1  # from one rollout
    assert trainer.state.global_step == 1


def test_the_held_out_curve_is_logged_before_the_first_step_and_every_eval_every(tmp_path):
    from training.train import train

    config = TrainConfig.model_validate({
        "output_dir": str(tmp_path / "run"), "model": {"name": "tiny-random"},
        "env": {"name": "arithmetic", "kwargs": {"level": 1}, "train_tasks": 4},
        "agent": {"max_turns": 2, "max_new_tokens": 8},
        "training": {"steps": 2, "tasks_per_step": 1, "num_generations": 2, "report_to": [], "eval_every": 2,
                     "curve_tasks": 2, "save_steps": 10},
    })
    run_dir = train(config)
    points = [json.loads(line) for line in (run_dir / "heldout_log.jsonl").read_text().splitlines()]
    assert [p["step"] for p in points] == [0, 2]
    assert all(0.0 <= p["acc_t2"] <= 1.0 and "vacuous_check_rate" in p for p in points)
    steps = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == [0, 1]
    assert "heldout_acc_t2" in steps[1] and "heldout_acc_t2" not in steps[0]
    assert "vacuous_check_rate" in steps[0] and steps[0]["injected_runs"] == 0


def test_recomputation_is_turned_off_under_either_name_transformers_uses():
    """transformers 5.2x renamed gradient_checkpointing to activation_checkpointing; an older one (as on a
    GPU image with transformers 5.17) refused the new name, so the trainer could not be built there."""
    from dataclasses import dataclass

    from trl import GRPOConfig

    from training.train import no_recomputation

    @dataclass
    class Old:
        gradient_checkpointing: bool = True

    @dataclass
    class New:
        activation_checkpointing: bool = True

    assert no_recomputation(Old) == {"gradient_checkpointing": False}
    assert no_recomputation(New) == {"activation_checkpointing": False}
    args = GRPOConfig(output_dir="unused", use_cpu=True, **no_recomputation(GRPOConfig))
    assert getattr(args, next(iter(no_recomputation(GRPOConfig)))) is False


def test_verify_temperature_makes_only_the_training_checks_hotter():
    from training.train import rollout_sampling

    plain = TrainConfig.model_validate({"agent": {"temperature": 0.7}})
    assert set(rollout_sampling(plain)) == {"sampling"} and rollout_sampling(plain)["sampling"].temperature == 0.7
    hot = rollout_sampling(TrainConfig.model_validate({"agent": {"temperature": 0.7},
                                                       "training": {"verify_temperature": 1.2}}))
    assert (hot["sampling"].temperature, hot["verify_sampling"].temperature) == (0.7, 1.2)


def test_adam_epsilon_and_reward_scaling_reach_the_trainer(tmp_path):
    from training.train import build_trainer

    config = TrainConfig.model_validate({
        "output_dir": str(tmp_path / "run"), "model": {"name": "tiny-random"},
        "env": {"name": "arithmetic", "kwargs": {"level": 1}, "train_tasks": 4},
        "training": {"steps": 1, "tasks_per_step": 1, "num_generations": 2, "report_to": [], "adam_epsilon": 1e-5,
                     "scale_rewards": "none"},
    })
    (tmp_path / "run").mkdir()
    trainer, _ = build_trainer(config, tmp_path / "run")
    trainer.create_optimizer()
    assert {group["eps"] for group in trainer.optimizer.param_groups} == {1e-5}
    assert trainer.scale_rewards == "none"
