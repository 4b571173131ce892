"""Two processes on CPU (gloo) run the same training (run with `pytest -m slow`)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CONFIG = """
output_dir = "{out}"
[model]
name = "tiny-random"
[env]
name = "arithmetic"
kwargs = {{ level = 1 }}
train_tasks = 8
[agent]
max_turns = 2
max_new_tokens = 8
[training]
steps = 2
tasks_per_step = 1
num_generations = 2
save_steps = 2
report_to = []
"""


def test_accelerate_launch_two_processes(tmp_path):
    out = tmp_path / "run"
    config = tmp_path / "c.toml"
    config.write_text(CONFIG.format(out=out))
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    result = subprocess.run(
        [accelerate, "launch", "--cpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
         "--dynamo_backend", "no", "-m", "anchorloop", "train", "--config", str(config)],
        capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    steps = [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert steps == [0, 1]  # written once, by process 0
    assert (out / "final" / "config.json").exists()
