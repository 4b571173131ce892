"""`anchorloop train` survives kill -9: `--resume` continues from the last checkpoint, losing no
steps before it and repeating none in the log."""

import json
import os
import signal
import subprocess
import sys
import time

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
steps = 4
tasks_per_step = 1
num_generations = 2
save_steps = 1
save_total_limit = 5
report_to = []
"""


def _train(config, *extra):
    return subprocess.Popen([sys.executable, "-m", "anchorloop", "train", "--config", str(config), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def test_kill_nine_then_resume(tmp_path):
    out = tmp_path / "run"
    config = tmp_path / "c.toml"
    config.write_text(CONFIG.format(out=out))
    first = _train(config)
    deadline = time.time() + 240
    while not (out / "checkpoints" / "checkpoint-2" / "trainer_state.json").exists():
        assert first.poll() is None, first.stdout.read()[-3000:]
        assert time.time() < deadline, "no checkpoint-2 within 240 s"
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert not (out / "final").exists()

    again = _train(config)  # without --resume: refuses to overwrite the run
    assert again.wait(120) != 0 and "--resume" in again.stdout.read()

    resumed = _train(config, "--resume")
    output = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, output[-3000:]
    steps = [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert steps == [0, 1, 2, 3], steps
    state = json.loads((out / "checkpoints" / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    assert (out / "final" / "config.json").exists()
