"""`anchorloop train` survives kill -9: `--resume` continues from the last checkpoint, losing no
steps before it and repeating none in the log."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

from rich.console import Console

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


def test_resuming_a_finished_run_trains_nothing_and_resuming_says_nothing_about_tied_weights(tmp_path):
    import logging

    from training.config import load_config
    from training.train import TiedWeightsAreNotMissing, train

    config = tmp_path / "c.toml"
    config.write_text(CONFIG.format(out=tmp_path / "run").replace("steps = 4", "steps = 2"))
    cfg = load_config(config)
    run_dir = train(cfg)
    shutil.rmtree(run_dir / "checkpoints" / "checkpoint-2")  # as if killed after step 1's checkpoint
    shutil.rmtree(run_dir / "final")
    warned = []
    handler = logging.Handler()
    handler.emit = lambda record: warned.append(record.getMessage())
    logging.getLogger("transformers.trainer").addHandler(handler)
    try:
        train(cfg, resume=True)
    finally:
        logging.getLogger("transformers.trainer").removeHandler(handler)
    assert not [m for m in warned if "missing keys" in m], warned
    mtime = (run_dir / "final" / "config.json").stat().st_mtime
    console = Console(record=True, width=200)
    train(cfg, resume=True, console=console)  # finished: nothing trained, nothing written
    assert "already complete: 2 of 2 steps" in console.export_text()
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    assert [json.loads(line)["step"] for line in (run_dir / "train_log.jsonl").read_text().splitlines()] == [0, 1]
    assert (run_dir / "final" / "config.json").stat().st_mtime == mtime
    # the filter keeps a missing key that is not a tied one
    from agent.models import load_model

    model, _ = load_model("tiny-random", device="cpu")
    quiet = TiedWeightsAreNotMissing(model)
    record = logging.LogRecord("t", logging.WARNING, "", 0, "There were missing keys in the checkpoint model "
                               "loaded: %s.", (["lm_head.weight"],), None)
    assert not quiet.filter(record)
    record.args = (["lm_head.weight", "model.norm.weight"],)
    assert quiet.filter(record)
