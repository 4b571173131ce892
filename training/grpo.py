"""Multi-turn online RL with TRL's ``GRPOTrainer``: our rollout engine generates, TRL optimizes.

``AgentRollout`` is the ``rollout_func``: it runs the self-correcting agent on the trainer's own
weights (same model object, eval mode, no gradient) or on a vLLM server TRL keeps in sync
(``training.rollout_backend``), batched across the whole generation batch,
and returns exact ids, sampled log-probs and the ``env_mask`` that keeps inserted tokens out of
the loss. Per-trajectory fields (first/last score, tool and parse counts) go to the reward
functions in ``training.rewards``.

``SelfCorrectionGRPOTrainer`` adds the one thing TRL cannot express: SCoRe's Stage I. For the
first ``stage1_steps`` steps, tokens up to the first answer get zero advantage (token-level
advantages, which TRL supports), so only the KL term (``beta``) acts on attempt 1 and holds it near
the reference model, while the reward (attempt 2's correctness; the progress bonus is off, as in
SCoRe) shapes attempt 2. After that, Stage II optimizes every
model token with the progress-bonus reward.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from trl import GRPOTrainer

from envs import Env, Task
from training.metrics import compute_metrics
from training.rewards import no_signal_fraction, total_rewards
from training.rollout import rollout
from training.shared_prefix import shared_prefix_logps
from training.trajectory import Trajectory, save_jsonl

log = logging.getLogger(__name__)


def first_attempt_mask(traj: Trajectory) -> list[int]:
    """1 on model tokens up to and including the turn that gave the first answer (all, if none)."""
    last_turn = traj.attempts[0].turn if traj.attempts else None
    mask, turn, previous = [], -1, 0
    for m in traj.env_mask:
        if m and not previous:
            turn += 1
        mask.append(int(bool(m) and (last_turn is None or turn <= last_turn)))
        previous = m
    return mask


class AgentRollout:
    """The ``rollout_func`` for ``GRPOTrainer``: prompts in (already repeated per generation), one
    exact trajectory per prompt out."""

    def __init__(self, policy: Any, agent: Any, env: Env, tasks: list[Task], rewards: Any, run_dir: Path) -> None:
        self.policy = policy
        self.agent = agent
        self.env = env
        self.by_prompt = {t.question: t for t in tasks}
        self.rewards = rewards
        self.run_dir = run_dir
        self.last_stats: dict[str, float] = {}
        self.first_attempt_masks: list[list[int]] = []

    def __call__(self, prompts: list[Any], trainer: Any) -> dict[str, list]:
        tasks = [self._task(p) for p in prompts]
        model = trainer.model  # in-process, the policy samples from this very module
        was_training = model.training
        model.eval()
        if hasattr(self.policy, "reset_cache"):  # cached keys/values of the old weights (a vLLM
            self.policy.reset_cache()  # server's cache is reset by TRL when it pushes new ones)
        started = time.perf_counter()
        try:
            trajectories = asyncio.run(rollout(self.agent, self.env, tasks))
        finally:
            model.train(was_training)
        seconds = time.perf_counter() - started
        seen: Counter[str] = Counter()
        for traj in trajectories:
            traj.group = seen[traj.task_id]
            seen[traj.task_id] += 1
        step = trainer.state.global_step
        stage = 1 if step < getattr(trainer, "stage1_steps", 0) else 2
        fields = {**_reward_fields(trajectories), "stage": [stage] * len(trajectories)}
        self.first_attempt_masks = [first_attempt_mask(t) for t in trajectories]
        self._record(step, trajectories, fields, seconds, trainer)
        _stop_if_all_failed(step, trajectories)
        batch = [_trainable(t, self.policy.tokenizer) for t in trajectories]
        return {
            "prompt_ids": [b[0] for b in batch],
            "completion_ids": [b[1] for b in batch],
            "logprobs": [b[2] for b in batch],
            "env_mask": [b[3] for b in batch],
            **fields,
        }

    def _task(self, prompt: Any) -> Task:
        text = prompt if isinstance(prompt, str) else prompt[-1]["content"]
        try:
            return self.by_prompt[text]
        except KeyError:
            raise KeyError(f"rollout got a prompt that is not one of the env's training tasks: {text[:80]!r}") from None

    def _record(self, step: int, trajectories: list[Trajectory], fields: dict[str, list], seconds: float,
                trainer: Any) -> None:
        m = compute_metrics(trajectories)
        rewards = total_rewards(self.rewards, fields)
        groups: dict[str, list[float]] = {}
        for t, r in zip(trajectories, rewards, strict=True):
            groups.setdefault(t.task_id, []).append(r)
        tokens = sum(t.num_model_tokens for t in trajectories)
        stats = {
            "step": step, "reward_mean": sum(rewards) / len(rewards), "acc_t1": m.acc_t1.value,
            "acc_t2": m.acc_t2.value, "delta_i_to_c": m.delta_i_to_c.value, "delta_c_to_i": m.delta_c_to_i.value,
            "tool_use_rate": m.tool_use_rate.value, "tool_error_rate": m.tool_error_rate.value,
            "parse_error_rate": m.parse_error_rate.value, "mean_turns": m.mean_turns,
            "no_signal_fraction": no_signal_fraction(list(groups.values())),
            "rollout_s": seconds, "tokens_per_s": tokens / seconds if seconds else 0.0,
            "stage": fields["stage"][0] if fields["stage"] else 2,
        }
        self.last_stats = stats
        if not trainer.accelerator.is_main_process:  # with several processes, process 0 writes the log
            return
        with (self.run_dir / "train_log.jsonl").open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(stats) + "\n")
        save_jsonl(trajectories, self.run_dir / "trajectories" / f"step_{step:05d}.jsonl")
        metrics = getattr(trainer, "_metrics", None)  # TRL averages and logs these (TensorBoard, W&B)
        if metrics is not None:
            for key in ("acc_t1", "acc_t2", "no_signal_fraction", "tool_use_rate", "tokens_per_s", "rollout_s"):
                metrics["train"][f"selfcorrect/{key}"].append(stats[key])


class SelfCorrectionGRPOTrainer(GRPOTrainer):
    """``GRPOTrainer`` with SCoRe Stage I for the first ``stage1_steps`` steps (see module docstring)."""

    def __init__(self, *args: Any, agent_rollout: AgentRollout, stage1_steps: int = 0, share_prefix: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(*args, rollout_func=agent_rollout, **kwargs)
        self.agent_rollout = agent_rollout
        self.stage1_steps = stage1_steps
        self.share_prefix = share_prefix

    def _get_per_token_logps_and_entropies(self, model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                                           logits_to_keep: int, batch_size: int | None = None,
                                           compute_entropy: bool = False, compute_aux_loss: bool = False,
                                           **multimodal: Any) -> tuple[torch.Tensor, torch.Tensor | None, None]:
        """TRL's log-probs, with the rows' common prefix (system prompt, exemplars) encoded once per
        micro-batch (``training.shared_prefix``). Falls back to TRL's own path for multimodal or MoE
        inputs and for models wrapped for several processes (DDP/FSDP expect one forward per backward)."""
        wrapped = self.accelerator.unwrap_model(model) is not model
        if (not self.share_prefix or wrapped or compute_aux_loss or input_ids.size(0) < 2
                or any(v is not None for v in multimodal.values())):
            return super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, batch_size=batch_size,
                compute_entropy=compute_entropy, compute_aux_loss=compute_aux_loss, **multimodal)
        chunk = batch_size or input_ids.size(0)
        parts = []
        for start in range(0, input_ids.size(0), chunk):
            with self.accelerator.autocast():
                parts.append(shared_prefix_logps(model, input_ids[start : start + chunk],
                                                 attention_mask[start : start + chunk], logits_to_keep,
                                                 compute_entropy=compute_entropy))
        logps = torch.cat([p[0] for p in parts])
        entropies = torch.cat([p[1] for p in parts]) if compute_entropy else None
        return logps, entropies, None

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        out = super()._generate_and_score_completions(inputs)
        if self.state.global_step < self.stage1_steps:
            masks = self.agent_rollout.first_attempt_masks
            width = out["completion_ids"].shape[1]
            first = torch.zeros(len(masks), width, device=out["advantages"].device)
            for i, mask in enumerate(masks):
                first[i, : len(mask)] = torch.tensor(mask[:width], dtype=first.dtype)
            out["advantages"] = out["advantages"].reshape(-1, 1) * (1 - first)
        return out


def _stop_if_all_failed(step: int, trajectories: list[Trajectory]) -> None:
    """One broken trajectory is data; a step where every one broke (the model server is down, the
    policy ran out of memory) would train on nothing, step after step: stop and say why instead."""
    errors = [t.stop_reason for t in trajectories if t.stop_reason.startswith("error:")]
    if trajectories and len(errors) == len(trajectories):
        cause = errors[0].removeprefix("error: ")
        raise RuntimeError(f"every trajectory of training step {step} failed, e.g. {cause}. "
                           "Fix the cause, then continue from the last checkpoint with --resume.")


def _reward_fields(trajectories: list[Trajectory]) -> dict[str, list]:
    return {
        "first_score": [t.first_score for t in trajectories],
        "last_score": [t.last_score for t in trajectories],
        "parse_errors": [t.parse_errors for t in trajectories],
        "turns": [t.turns for t in trajectories],
        "tool_calls": [t.tool_calls for t in trajectories],
        "tool_errors": [t.tool_errors for t in trajectories],
        "num_attempts": [len(t.attempts) for t in trajectories],
    }


def _trainable(traj: Trajectory, tokenizer: Any) -> tuple[list[int], list[int], list[float], list[int]]:
    """A failed run still yields a row (so the batch keeps its shape) that carries no loss."""
    if traj.prompt_ids and traj.completion_ids:
        return traj.prompt_ids, traj.completion_ids, traj.logprobs, traj.env_mask
    eos = tokenizer.eos_token_id
    prompt = traj.prompt_ids or [eos]
    return prompt, [eos], [0.0], [0]
