"""What a training run writes down: every rollout, one log line per step, the held-out curve.

``RunRecorder`` is a ``TrainerCallback`` that also listens to the rollout (``AgentRollout.listeners``):

- each rollout's trajectories go to ``trajectories/step_NNNNN.jsonl`` as soon as they exist, before
  anything can stop the step (a step whose every run failed is kept for inspection); injected groups
  set aside by a redraw (``training.injected_redraws``) go to ``trajectories/redrawn/step_NNNNN.jsonl``;
- at the end of each step, one line of ``train_log.jsonl`` (reward, per-attempt accuracies, check
  quality, answer diversity and the label-free signals' means, throughput, SCoRe stage), and the same
  numbers under ``selfcorrect/`` in the trainer's logs (TensorBoard, W&B), through the public ``on_log`` hook;
- every ``eval_every`` steps (and before the first), greedy evaluation on held-out tasks: the
  learning curve, logged as ``heldout/*`` and plotted by the report.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from training.config import RewardConfig
from training.grpo import reward_fields, signal_fields
from training.metrics import Metrics, compute_metrics
from training.rewards import no_signal_fraction, total_rewards
from training.signals import SIGNALS, AnswerKey, answer_diversity, answer_key, final_answer, groups_of, key_of
from training.trajectory import Trajectory, save_jsonl

log = logging.getLogger(__name__)

LOGGED = ("acc_t1", "acc_t2", "delta_i_to_c", "delta_c_to_i", "no_signal_fraction", "tool_use_rate",
          "vacuous_check_rate", "vacuous_separable_rate", "confirmatory_rate", "tokens_per_s", "rollout_s",
          "injected_fix_rate", "replayed_fix_rate", "answer_diversity", *(f"signal_{name}" for name in SIGNALS))
HELDOUT = ("acc_t1", "acc_t2", "delta_i_to_c", "delta_c_to_i", "vacuous_check_rate", "vacuous_separable_rate",
           "confirmatory_rate")


def step_stats(trajectories: list[Trajectory], rewards: RewardConfig, seconds: float, stage: int = 2,
               key: AnswerKey = answer_key) -> dict[str, float]:
    """The numbers one training rollout is summarized by; runs started from an injected wrong attempt
    count only towards ``injected_fix_rate`` (``replayed_fix_rate`` for the model's own, replayed)."""
    injected = [t for t in trajectories if t.starts_injected and not t.attempts[0].replayed]
    replayed = [t for t in trajectories if t.starts_injected and t.attempts[0].replayed]
    m = compute_metrics([t for t in trajectories if not t.starts_injected])
    fields = reward_fields(trajectories, check_rule=rewards.check_rule) | {"stage": [stage] * len(trajectories)}
    totals = total_rewards(rewards, fields)
    groups: dict[str, list[float]] = {}
    for t, r in zip(trajectories, totals, strict=True):
        groups.setdefault(t.task_id, []).append(r)
    tokens = sum(t.num_model_tokens for t in trajectories)
    return {
        "reward_mean": sum(totals) / len(totals) if totals else 0.0, **rates(m),
        "tool_error_rate": m.tool_error_rate.value, "parse_error_rate": m.parse_error_rate.value,
        "mean_turns": m.mean_turns, "no_signal_fraction": no_signal_fraction(list(groups.values())),
        "rollout_s": seconds, "tokens_per_s": tokens / seconds if seconds else 0.0,
        "injected_runs": len(injected),
        "injected_fix_rate": sum(t.last_right for t in injected) / len(injected) if injected else 0.0,
        **({"replayed_runs": len(replayed), "replayed_fix_rate": sum(t.last_right for t in replayed) / len(replayed)}
           if replayed else {}),
        "answer_diversity": mean_answer_diversity(trajectories, key),
        **{f"signal_{name}": sum(values) / len(values) for name, values in signal_fields(trajectories).items()
           if name in SIGNALS},
    }


def mean_answer_diversity(trajectories: list[Trajectory], key: AnswerKey = answer_key) -> float:
    """Distinct final answers / group size, averaged over the batch's groups: drift towards one answer per
    task (what a label-free reward can buy without being right) shows as this falling."""
    groups = groups_of(trajectories)
    return sum(answer_diversity([final_answer(trajectories[i]) for i in g], key) for g in groups) / len(groups) \
        if groups else 0.0


def rates(m: Metrics) -> dict[str, float]:
    return {"acc_t1": m.acc_t1.value, "acc_t2": m.acc_t2.value, "delta_i_to_c": m.delta_i_to_c.value,
            "delta_c_to_i": m.delta_c_to_i.value, "tool_use_rate": m.tool_use_rate.value,
            "confirmatory_rate": m.confirmatory_rate.value, "vacuous_check_rate": m.vacuous_check_rate.value,
            "vacuous_separable_rate": m.vacuous_separable_rate.value}


class RunRecorder(TrainerCallback):
    """See the module docstring. ``heldout()`` (optional) returns the metrics of a greedy held-out run."""

    def __init__(self, run_dir: Path, rewards: RewardConfig, *, heldout: Callable[[], Metrics] | None = None,
                 eval_every: int = 0) -> None:
        self.run_dir = run_dir
        self.rewards = rewards
        self.heldout = heldout
        self.eval_every = eval_every
        self.trainer: Any = None
        self.rollout: Any = None
        self.pending: dict[str, Any] = {}
        self.last_stats: dict[str, Any] = {}

    def attach(self, trainer: Any, rollout: Any) -> None:
        """Listen to ``rollout``'s batches and log through ``trainer`` (first among its callbacks, so
        that the loggers after it see what ``on_log`` adds)."""
        self.trainer = trainer
        self.rollout = rollout
        rollout.listeners.append(self.on_batch)
        trainer.callback_handler.callbacks.insert(0, self)

    @property
    def _main(self) -> bool:
        return self.trainer is None or self.trainer.accelerator.is_main_process

    def on_batch(self, trajectories: list[Trajectory], seconds: float) -> None:
        step, stage = self.trainer.state.global_step, getattr(self.trainer, "stage", 2)
        redrawn = list(getattr(self.rollout, "redrawn", None) or [])
        if self._main:  # first: a row that cannot be saved is written as a failed run, and the step goes on
            save_jsonl(trajectories, self.run_dir / "trajectories" / f"step_{step:05d}.jsonl")
            if redrawn:
                save_jsonl(redrawn, self.run_dir / "trajectories" / "redrawn" / f"step_{step:05d}.jsonl")
        key = key_of(getattr(self.rollout, "env", None))  # which answers are the same, as the env says
        self.pending = {"step": step, **step_stats(trajectories, self.rewards, seconds, stage, key), "stage": stage,
                        **({"injected_redrawn_runs": len(redrawn)} if redrawn else {})}

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.heldout is not None and self.eval_every and state.global_step == 0:
            self._write("heldout_log.jsonl", {"step": 0, **self._heldout()})

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        stats = dict(self.pending)
        due = self.eval_every and (state.global_step % self.eval_every == 0 or state.global_step == state.max_steps)
        if self.heldout is not None and due:
            point = self._heldout()
            self._write("heldout_log.jsonl", {"step": state.global_step, **point})
            stats |= {f"heldout_{k}": v for k, v in point.items()}
        self.last_stats = stats
        if stats:
            self._write("train_log.jsonl", stats)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        if logs is None or "loss" not in logs:  # training logs only, not the final summary
            return
        for key in LOGGED:
            if key in self.last_stats:
                logs[f"selfcorrect/{key}"] = self.last_stats[key]
        for key in HELDOUT:
            if f"heldout_{key}" in self.last_stats:
                logs[f"heldout/{key}"] = self.last_stats[f"heldout_{key}"]

    def _heldout(self) -> dict[str, float]:
        model = self.trainer.model if self.trainer is not None else None
        was_training = bool(model is not None and model.training)
        if model is not None:
            model.eval()
        try:
            return rates(self.heldout())
        finally:
            if model is not None:
                model.train(was_training)

    def _write(self, name: str, record: dict[str, Any]) -> None:
        if not self._main:  # with several processes, process 0 writes the logs
            return
        with (self.run_dir / name).open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
