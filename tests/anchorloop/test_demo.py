"""`anchorloop demo` end to end (evaluate → train → evaluate → report) on the tiny model."""

import os
import subprocess
import sys

CONFIG = """
[model]
name = "tiny-random"
[env]
name = "arithmetic"
kwargs = { level = 1 }
train_tasks = 4
eval_tasks = 3
[agent]
max_turns = 2
max_new_tokens = 8
[training]
steps = 1
tasks_per_step = 1
num_generations = 2
report_to = []
"""


def test_demo_runs_the_whole_loop(tmp_path):
    config = tmp_path / "demo.toml"
    config.write_text(CONFIG)
    out = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "anchorloop", "demo", "--config", str(config), "--output-dir",
                             str(out)], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    for piece in ("eval_before/eval.json", "eval_after/eval.json", "train_log.jsonl", "final/config.json",
                  "report.html"):
        assert (out / piece).exists(), piece
    assert not (out / "checkpoints").exists()  # the footprint: the final model, no optimizer state
    assert "before (n=3)" in result.stdout and "after (n=3)" in result.stdout
    assert "Acc@t1" in result.stdout


def test_the_demo_config_keeps_one_resumable_checkpoint_at_most():
    from pathlib import Path

    from training.config import load_config

    config = load_config(Path(__file__).resolve().parents[2] / "configs" / "quickstart.toml")
    assert config.training.save_total_limit == 1
