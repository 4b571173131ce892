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


def test_step_stats_log_answer_diversity_and_signal_means():
    from training.recorder import step_stats

    def run(task, answer, majority):
        return Trajectory(task_id=task, prompt_ids=[1], completion_ids=[2], env_mask=[1], logprobs=[-0.5],
                          attempts=[Attempt(answer=answer, turn=0, score=0.0)], signals={"majority": majority})

    batch = [run("a", "1", 1.0), run("a", "1", 1.0), run("b", "2", 0.0), run("b", "3", 0.0)]
    stats = step_stats(batch, RewardConfig(majority=1.0), seconds=1.0)
    assert stats["answer_diversity"] == (1 / 2 + 2 / 2) / 2  # task a agrees, task b splits
    assert stats["signal_majority"] == 0.5 and stats["reward_mean"] == 0.5 + 0.0  # correctness 0 everywhere
