"""The run recorder's saving: a training step survives rows that cannot be saved."""

from __future__ import annotations

from types import SimpleNamespace

from training.config import RewardConfig
from training.recorder import RunRecorder
from training.trajectory import Attempt, Trajectory, load_jsonl


def test_a_row_that_cannot_be_saved_does_not_stop_the_step(tmp_path):
    recorder = RunRecorder(tmp_path, RewardConfig())
    # only what on_batch reads of a trainer: its step counter and whether this is the main process
    recorder.trainer = SimpleNamespace(state=SimpleNamespace(global_step=4),
                                       accelerator=SimpleNamespace(is_main_process=True))
    good = Trajectory(task_id="a", prompt_ids=[1], completion_ids=[2], env_mask=[1], logprobs=[-0.5],
                      attempts=[Attempt(answer="1", turn=0, score=1.0)])
    bad = good.model_copy(update={"task_id": "b", "logprobs": [float("nan")]})
    recorder.on_batch([good, bad], seconds=1.0)
    saved_good, saved_bad = load_jsonl(tmp_path / "trajectories" / "step_00004.jsonl")
    assert saved_good == good
    assert saved_bad.task_id == "b" and "cannot be saved" in saved_bad.stop_reason
    assert recorder.pending["step"] == 4 and recorder.pending["acc_t1"] == 1.0
