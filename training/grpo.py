"""Multi-turn online RL with TRL's ``GRPOTrainer``: our rollout engine generates, TRL optimizes.

``AgentRollout`` is the ``rollout_func``, and only adapts: it runs the self-correcting agent on the
trainer's own weights (same model object, eval mode, no gradient) or on a vLLM server TRL keeps in
sync (``training.rollout_backend``), batched across the whole generation batch, and returns exact ids,
sampled log-probs, the ``env_mask`` that keeps inserted tokens out of the loss, and per-row fields:
the ones the reward functions read (``training.rewards``; the label-free signals of ``signals``, computed
on the batch once it is collected) and ``first_attempt_mask``. Logging and
saving live in ``training.recorder``.

``SelfCorrectionGRPOTrainer`` adds what TRL cannot express, as token-level advantages (which TRL
supports) — SCoRe's stages and per-attempt credit below, and ΔBelief's per-turn credit
(``belief_turns``: each model turn's change of the model's belief in its own answer, on that turn's tokens):
- SCoRe's Stage I, decided in one place (``stage``). For the first ``stage1_steps`` steps, tokens up to
  the first answer get zero advantage, so only the KL term (``beta``) acts on attempt 1 and holds it
  near the reference model, while the reward (attempt 2's correctness; the progress bonus is off, as
  in SCoRe) shapes attempt 2.
- A KL weight of its own for attempt 1 (``first_attempt_beta``): SCoRe holds the first attempt with a
  larger KL weight than the rest, and TRL's KL term has one weight for every token. The difference is
  added to TRL's loss on the tokens up to the first answer, normalized the way the loss type normalizes.
- A baseline across tasks for runs started from an injected wrong attempt
  (``injected_baseline="batch"``). Such a run samples only its check, so its reward measures the check
  alone, and checks of different tasks compare. GRPO's baseline is the run's own group, and whether a
  check re-reads the question or copies the given code is nearly fixed per task (BENCHMARKS.md round 7),
  so such groups are all fixed or all missed and carry no advantage. Against the other injected runs of
  the step (leave-one-out mean, scaled by their standard deviation unless ``scale_rewards="none"``) a
  group that fixed every run still teaches, and one that fixed none teaches the opposite (RLOO's and
  REINFORCE++'s baselines, restricted to the runs whose rewards are comparable).
- Per-attempt credit in Stage II (``credit="per_attempt"``, the default). Each attempt is credited
  with its own reward, as SCoRe's per-attempt rewards do: the tokens up to the first answer get the
  group-normalized advantage of the reward the run would have earned had the first answer been its
  last (the same reward functions on ``first_attempt_view``: correctness of attempt 1, no progress
  bonus, no verify step to judge); the verify turns get that of the whole reward (correctness of the
  last answer plus the progress bonus). One trajectory-level advantage (``credit="trajectory"``)
  would pay a first attempt for being wrong: wrong→right (1 + α) outranks right→right (1), and
  right→wrong (−α) ranks below wrong→wrong (0), so the policy learns to start wrong. That is how the
  earlier lr 1e-4 runs collapsed (BENCHMARKS.md "Learning to check").

TRL names we rely on that are not public API (check these on a TRL upgrade):
- ``_generate_and_score_completions``: the one place where advantages exist before the loss; Stage I
  reshapes them to token level there.
- ``_get_per_token_logps_and_entropies``: where the loss computes log-probs; the shared-prefix path
  replaces it (``training.shared_prefix``).
- ``_compute_loss`` and its per-loss-type normalization (``_as_loss`` mirrors it), the
  ``ref_per_token_logps`` / ``old_per_token_logps`` / ``num_items_in_batch`` inputs it reads.
- that extra keys returned by ``rollout_func`` are written into the ``inputs`` rows (how a row's
  ``first_attempt_mask`` reaches Stage I) and that every key of a row reaches the reward functions
  (how ``stage`` reaches ``training.rewards.progress``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from trl import GRPOTrainer

from envs import Env, Task
from training.belief import turn_credit_tokens
from training.labelfree import annotate
from training.metrics import is_vacuous_check
from training.rollout import rollout
from training.shared_prefix import shared_prefix_logps
from training.signals import FIRST, SIGNALS, check_signals, groups_of
from training.trajectory import Trajectory

log = logging.getLogger(__name__)

BatchListener = Callable[[list[Trajectory], float], None]


class AgentRollout:
    """The ``rollout_func`` for ``GRPOTrainer``: prompts in (already repeated per generation), one
    exact trajectory per prompt out.

    ``build(model)`` returns ``(policy, agent)``; it is called on the first rollout with the model
    TRL trains (unwrapped: LoRA adapters and device placement exist only once TRL has wrapped it).
    """

    def __init__(self, build: Callable[[Any], tuple[Any, Any]], env: Env, tasks: list[Task], *,
                 injector: Callable[[Any], Any] | None = None, signals: Sequence[str] = (),
                 injected_redraws: int = 0, check_rule: str = "call") -> None:
        self.build = build
        self.check_rule = check_rule  # what the check reward counts as a repeat (RewardConfig.check_rule)
        self.signals = check_signals(signals)  # label-free signals computed on each batch (training.labelfree)
        self.group_size: int | None = None  # the trainer's num_generations, read on each call
        self.make_injector = injector  # policy → training.injection.ErrorInjector (injected_errors > 0)
        self.injector: Any = None
        self.injected_redraws = injected_redraws  # see ``_redraw_missed``
        self.redrawn: list[Trajectory] = []  # the last batch's runs replaced by a redraw (kept, not trained on)
        self.env = env
        self.by_prompt = {t.question: t for t in tasks}
        self.policy: Any = None
        self.agent: Any = None
        self.listeners: list[BatchListener] = []
        self._synced_step: int | None = None  # the optimizer step whose weights the policy samples with
        self.weight_sync_s: list[float] = []  # seconds each load of weights into the engine took

    def __call__(self, prompts: list[Any], trainer: Any) -> dict[str, list]:
        tasks = [self._task(p) for p in prompts]
        self.sync(trainer)
        self.group_size = getattr(trainer, "num_generations", None)
        model = trainer.model  # with HFPolicy, the policy samples from this very module
        was_training = model.training
        model.eval()
        started = time.perf_counter()
        try:
            trajectories = asyncio.run(self._collect(tasks))
        finally:
            model.train(was_training)
        for listener in self.listeners:  # saved before anything can stop the step: nothing is lost
            listener(trajectories, time.perf_counter() - started)
        _stop_if_all_failed(trainer.state.global_step, trajectories)
        rows = [_trainable(t, self.policy.tokenizer) for t in trajectories]
        return {
            "prompt_ids": [r.prompt_ids for r in rows],
            "completion_ids": [r.completion_ids for r in rows],
            "logprobs": [r.logprobs for r in rows],
            "env_mask": [r.env_mask for r in rows],
            "first_attempt_mask": [r.attempt_mask(0) for r in rows],
            **({"turn_credit": [turn_credit_tokens(r) for r in rows]} if "belief" in self.signals else {}),
            **reward_fields(trajectories, check_rule=self.check_rule),
        }

    async def _collect(self, tasks: list[Task]) -> list[Trajectory]:
        given = await self.injector.first_attempts(tasks) if self.injector is not None else None
        trajectories = await rollout(self.agent, self.env, tasks, first_attempts=given)
        self.redrawn = await self._redraw_missed(tasks, trajectories) if given else []
        if self.signals:  # after the batch, so the judge's calls are batched too, before the rewards read them
            costs = (await annotate(trajectories, self.env, self.signals, policy=self.policy,
                                    group_size=self.group_size)).costs
            log.info("label-free signals: %s", {k: c.model_dump() for k, c in costs.items()})
        return trajectories

    async def _redraw_missed(self, tasks: list[Task], trajectories: list[Trajectory]) -> list[Trajectory]:
        """Dynamic sampling (DAPO's, for injected groups): a group started from an injected attempt whose
        every run missed it is run again from a new wrong attempt (another change of a fresh attempt of
        the model's own), up to ``injected_redraws`` times, and replaced in place (in ``trajectories``) by
        the first draw that fixed it at least once. A check that fixes 1 run in 8 leaves most groups of 4
        with nothing to learn from, and a run whose first steps sample no fix never learns the check.
        Returns the runs replaced (the run keeps them; they are not trained on)."""
        replaced: list[Trajectory] = []
        for _ in range(self.injected_redraws):
            missed = {trajectories[g[0]].task_id: g for g in groups_of(trajectories)
                      if trajectories[g[0]].starts_injected and not any(trajectories[i].last_right for i in g)}
            if not missed:
                break
            given = await self.injector.first_attempts([tasks[rows[0]] for rows in missed.values()], share=1.0)
            rows = [i for task_id in given for i in missed[task_id]]
            redrawn = await rollout(self.agent, self.env, [tasks[i] for i in rows], first_attempts=given)
            for task_id in given:
                new = [t for i, t in zip(rows, redrawn, strict=True) if t.task_id == task_id]
                if any(t.last_right for t in new):
                    replaced += [trajectories[i] for i in missed[task_id]]
                    for i, t in zip(missed[task_id], new, strict=True):
                        trajectories[i] = t
                else:
                    replaced += new
        if replaced:
            log.info("injected groups redrawn: %d runs set aside", len(replaced))
        return replaced

    def ready(self, trainer: Any) -> Any:
        """The policy, built on first use from the model ``trainer`` trains."""
        if self.policy is None:
            self.policy, self.agent = self.build(trainer.accelerator.unwrap_model(trainer.model))
            self.injector = self.make_injector(self.policy) if self.make_injector is not None else None
        return self.policy

    def sync(self, trainer: Any) -> Any:
        """The policy, sampling with the weights ``trainer`` holds now: an engine with weights of its own
        (``VLLMPolicy``) is given them; one that shares them (``HFPolicy``) drops the keys and values it
        cached with the old ones. Once per optimizer step (a server under TRL's push gets them from TRL)."""
        policy = self.ready(trainer)
        step = trainer.state.global_step
        if step != self._synced_step:
            if hasattr(policy, "load_weights"):
                seconds = policy.load_weights(trainer.accelerator.unwrap_model(trainer.model))
                log.info("weights loaded into %r in %.2f s", policy, seconds)
                self.weight_sync_s.append(seconds)
            elif hasattr(policy, "reset_cache"):
                policy.reset_cache()
            self._synced_step = step
        return policy

    def close(self) -> None:
        if self.policy is not None and hasattr(self.policy, "close"):  # HFPolicy's decode thread
            self.policy.close()

    def _task(self, prompt: Any) -> Task:
        text = prompt if isinstance(prompt, str) else prompt[-1]["content"]
        try:
            return self.by_prompt[text]
        except KeyError:
            raise KeyError(f"rollout got a prompt that is not one of the env's training tasks: {text[:80]!r}") from None


class SelfCorrectionGRPOTrainer(GRPOTrainer):
    """``GRPOTrainer`` with SCoRe Stage I for the first ``stage1_steps`` steps (see module docstring)."""

    def __init__(self, *args: Any, agent_rollout: AgentRollout, stage1_steps: int = 0, share_prefix: bool = True,
                 credit: str = "per_attempt", belief_turns: float = 0.0, first_attempt_beta: float | None = None,
                 injected_baseline: str = "group", **kwargs: Any) -> None:
        if credit not in CREDITS:
            raise ValueError(f"credit must be one of {', '.join(CREDITS)}, not {credit!r}")
        if injected_baseline not in BASELINES:
            raise ValueError(f"injected_baseline must be one of {', '.join(BASELINES)}, not {injected_baseline!r}")
        self.injected_baseline = injected_baseline
        if belief_turns and "belief" not in getattr(agent_rollout, "signals", ()):
            raise ValueError("belief_turns adds each turn's belief credit to its tokens' advantages: build the "
                             "AgentRollout with signals=['belief'].")
        self.belief_turns = belief_turns
        self.first_attempt_beta = first_attempt_beta
        super().__init__(*args, rollout_func=agent_rollout, **kwargs)
        self.stage1_steps = stage1_steps
        self.share_prefix = share_prefix
        self.credit = credit
        self._first_attempt_rewards: torch.Tensor | None = None  # per reward function, all processes' rows
        self._rewards: torch.Tensor | None = None  # the weighted reward of every row, all processes' rows
        self._logps: torch.Tensor | None = None  # the last log-probs computed (in the loss: the policy's, with grad)
        if first_attempt_beta is not None and self.beta == 0:
            raise ValueError("first_attempt_beta weighs the KL to the reference model on attempt 1, and beta is 0 "
                             "(no reference model): set beta > 0 too.")

    def _get_per_token_logps_and_entropies(self, model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                                           logits_to_keep: int, batch_size: int | None = None,
                                           compute_entropy: bool = False, compute_aux_loss: bool = False,
                                           **multimodal: Any) -> tuple[torch.Tensor, torch.Tensor | None, None]:
        """TRL's log-probs, with the rows' common prefix (system prompt, exemplars) encoded once per
        micro-batch (``training.shared_prefix``). Falls back to TRL's own path for multimodal or MoE
        inputs and for models wrapped for several processes (DDP/FSDP expect one forward per backward)."""
        logps, entropies, aux = self._logps_and_entropies(model, input_ids, attention_mask, logits_to_keep,
                                                          batch_size, compute_entropy, compute_aux_loss, **multimodal)
        self._logps = logps
        return logps, entropies, aux

    def _logps_and_entropies(self, model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                             logits_to_keep: int, batch_size: int | None, compute_entropy: bool,
                             compute_aux_loss: bool, **multimodal: Any) -> tuple[torch.Tensor, Any, Any]:
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

    @property
    def stage(self) -> int:
        """SCoRe's stage of the step being trained: 1 for the first ``stage1_steps`` steps, then 2."""
        return 1 if self.state.global_step < self.stage1_steps else 2

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        stage = self.stage
        for row in inputs:  # every key of a row reaches the reward functions
            row["stage"] = stage
        out = super()._generate_and_score_completions(inputs)
        advantages = out["advantages"]
        if self.injected_baseline == "batch":
            advantages = out["advantages"] = self._injected_batch_advantages(inputs, advantages)
        width = out["completion_ids"].shape[1]
        first = None  # tokens up to the first answer, read only where something needs them
        if stage == 1 or self.credit == "per_attempt" or self.first_attempt_beta is not None:
            first = _token_rows(inputs, "first_attempt_mask", width).to(advantages.device)
        if self.first_attempt_beta is not None:  # a tensor per row: TRL splits it into micro-batches with the rest
            out["first_attempt_tokens"] = first
        if stage == 1 or self.credit == "per_attempt":
            own = torch.zeros_like(advantages) if stage == 1 else self._first_attempt_advantages(len(inputs))
            out["advantages"] = advantages.reshape(-1, 1) * (1 - first) + own.to(advantages).reshape(-1, 1) * first
        if self.belief_turns:  # in Stage I, attempt 1 is left to the KL term here too
            credit = _token_rows(inputs, "turn_credit", width).to(advantages.device)
            if stage == 1:
                credit = credit * (1 - first)
            tokens = out["advantages"]
            tokens = tokens if tokens.dim() == 2 else tokens.reshape(-1, 1).expand(-1, width)
            out["advantages"] = tokens + self.belief_turns * credit.to(tokens)
        return out

    def _compute_loss(self, model: Any, inputs: dict[str, Any]) -> torch.Tensor:
        """TRL's loss, plus ``(first_attempt_beta - beta) × KL`` on the tokens up to the first answer."""
        loss = super()._compute_loss(model, inputs)
        if self.first_attempt_beta is None or self.first_attempt_beta == self.beta:
            return loss
        logps, ref = self._logps, inputs["ref_per_token_logps"]
        kl = torch.exp(ref - logps) - (ref - logps) - 1  # TRL's estimator (k3)
        if self.args.use_bias_correction_kl:
            old = inputs.get("old_per_token_logps")
            kl = kl * torch.exp(logps - (logps.detach() if old is None else old))
        mask = inputs["completion_mask"] * inputs.get("tool_mask", 1)
        extra = (self.first_attempt_beta - self.beta) * kl * inputs["first_attempt_tokens"].to(kl)
        return loss + self._as_loss(extra, mask, inputs)

    def _as_loss(self, per_token: torch.Tensor, mask: torch.Tensor, inputs: dict[str, Any]) -> torch.Tensor:
        """A per-token term reduced to a loss exactly as TRL's ``_compute_loss`` reduces its own for this
        ``loss_type`` (checked against it in the tests)."""
        training = self.model.training
        accumulation = self.current_gradient_accumulation_steps if training else 1.0
        masked = per_token * mask
        if self.loss_type in ("grpo", "sapo"):
            return (masked.sum(-1) / mask.sum(-1).clamp(min=1.0)).mean() / accumulation
        if self.loss_type == "bnpo":
            return masked.sum() / mask.sum().clamp(min=1.0) / accumulation
        if self.loss_type == "dr_grpo":
            return masked.sum() / (per_token.size(0) * self.max_completion_length) / accumulation
        if self.loss_type in ("cispo", "dapo", "vespo"):
            normalizer = inputs["num_items_in_batch"].clamp(min=1.0) / self.accelerator.num_processes
            if training:
                normalizer = normalizer * self.current_gradient_accumulation_steps / self.args.steps_per_generation
            return masked.sum() / normalizer
        if self.loss_type == "luspo":
            return masked.sum(-1).mean() / accumulation
        raise ValueError(f"first_attempt_beta does not know how loss_type {self.loss_type!r} normalizes its terms")

    def _calculate_rewards(self, inputs: list[dict[str, Any]], prompts: list[Any], completions: list[Any],
                           completion_ids_list: list[Any]) -> torch.Tensor:
        """TRL's rewards; with per-attempt credit in Stage II, also the first attempt's own rewards: the
        same functions on rows whose ``last_score`` is the ``first_score``."""
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._rewards = self._weighted(rewards)
        if self.stage == 2 and self.credit == "per_attempt":
            if "first_score" not in inputs[0]:
                raise KeyError("per-attempt credit needs each row's first_score (AgentRollout returns it); "
                               "set training.credit = 'trajectory' for a rollout that does not")
            as_if_last = [row | first_attempt_view(row) for row in inputs]
            self._first_attempt_rewards = super()._calculate_rewards(as_if_last, prompts, completions,
                                                                     completion_ids_list)
        return rewards

    def _first_attempt_advantages(self, local_rows: int) -> torch.Tensor:
        """Advantages of the first attempt's own reward, normalized the way TRL normalizes the whole
        reward (over all processes' rows), then this process's slice."""
        rewards = self._weighted(self._first_attempt_rewards)
        return self._local(group_advantages(rewards, self.num_generations, self.scale_rewards), local_rows)

    def _injected_batch_advantages(self, inputs: list[dict[str, Any]], advantages: torch.Tensor) -> torch.Tensor:
        """``advantages`` with the injected rows' replaced by ``injected_advantages`` over all processes' rows."""
        flags = torch.tensor([bool(row.get("injected", 0)) for row in inputs], device=advantages.device)
        injected = self.accelerator.gather(flags)
        across = injected_advantages(self._rewards.to(advantages.device), injected, self.scale_rewards)
        return torch.where(self._local(injected, len(inputs)), self._local(across, len(inputs)).to(advantages),
                           advantages)

    def _weighted(self, per_func: torch.Tensor) -> torch.Tensor:
        """Each row's reward: the reward functions' values weighted and summed as TRL sums them."""
        return (per_func * self.reward_weights.to(per_func.device).unsqueeze(0)).nansum(dim=1)

    def _local(self, rows: torch.Tensor, local_rows: int) -> torch.Tensor:
        """This process's slice of a tensor over all processes' rows."""
        start = self.accelerator.process_index * local_rows
        return rows[start : start + local_rows]


CREDITS = ("per_attempt", "trajectory")
BASELINES = ("group", "batch")


def _token_rows(inputs: list[dict[str, Any]], key: str, width: int) -> torch.Tensor:
    """Each row's per-token list under ``key``, cut or zero-padded to ``width`` columns."""
    rows = torch.zeros(len(inputs), width)
    for i, row in enumerate(inputs):
        values = row[key][:width]
        rows[i, : len(values)] = torch.tensor(values, dtype=rows.dtype)
    return rows


def first_attempt_view(row: dict[str, Any]) -> dict[str, Any]:
    """The fields of a run as if it had stopped at its first answer: that answer is the last one (its
    label-free signals too), and there was no verify step to judge."""
    return {"last_score": row["first_score"], "vacuous_check": 0,
            **{name: row[name + FIRST] for name in SIGNALS if name + FIRST in row}}


def group_advantages(rewards: torch.Tensor, group_size: int, scale: str = "group") -> torch.Tensor:
    """GRPO's advantages: reward minus its group's mean, divided by the group's (``"group"``) or the
    batch's (``"batch"``) standard deviation, or not divided (``"none"``). Rows of a group are adjacent."""
    grouped = rewards.view(-1, group_size)
    advantages = (grouped - grouped.mean(dim=1, keepdim=True)).reshape(-1)
    if scale == "group":
        std = grouped.std(dim=1).repeat_interleave(group_size)
    elif scale == "batch":
        std = rewards.std().expand_as(rewards)
    else:
        return advantages
    return advantages / (std + 1e-4)


def injected_advantages(rewards: torch.Tensor, injected: torch.Tensor, scale: str = "group") -> torch.Tensor:
    """Each injected row's reward minus the mean of the *other* injected rows' (leave-one-out), divided by
    the injected rows' standard deviation unless ``scale`` is ``"none"``; 0 for the rest, and for all when
    fewer than two rows are injected."""
    advantages = torch.zeros_like(rewards)
    chosen = rewards[injected]
    n = chosen.numel()
    if n < 2:
        return advantages
    centred = chosen - (chosen.sum() - chosen) / (n - 1)
    if scale != "none":
        centred = centred / (chosen.std() + 1e-4)
    advantages[injected] = centred
    return advantages


def _stop_if_all_failed(step: int, trajectories: list[Trajectory]) -> None:
    """One broken trajectory is data; a step where every one broke (the model server is down, the
    policy ran out of memory) would train on nothing, step after step: stop and say why instead."""
    errors = [t.stop_reason for t in trajectories if t.stop_reason.startswith("error:")]
    if trajectories and len(errors) == len(trajectories):
        cause = errors[0].removeprefix("error: ")
        raise RuntimeError(f"every trajectory of training step {step} failed, e.g. {cause}. "
                           "Fix the cause, then continue from the last checkpoint with --resume.")


def reward_fields(trajectories: list[Trajectory], *, check_rule: str = "call") -> dict[str, list]:
    """The per-row values the reward functions read; ``check_rule`` is ``RewardConfig.check_rule``."""
    return {
        "first_score": [t.first_score for t in trajectories],
        "last_score": [t.last_score for t in trajectories],
        "parse_errors": [t.parse_errors for t in trajectories],
        "turns": [t.turns for t in trajectories],
        "tool_calls": [t.tool_calls for t in trajectories],
        "tool_errors": [t.tool_errors for t in trajectories],
        "num_attempts": [len(t.attempts) for t in trajectories],
        # "call": only the same call is a repeat, the rule the check reward had in BENCHMARKS rounds 2-13;
        # "computation": the same arithmetic in any form, the metrics' rule
        "vacuous_check": [int(bool(is_vacuous_check(t, any_form=check_rule == "computation")))
                          for t in trajectories],
        "injected": [int(t.starts_injected) for t in trajectories],
        **signal_fields(trajectories),
    }


def signal_fields(trajectories: list[Trajectory]) -> dict[str, list[float]]:
    """The label-free signals computed on this batch (last and first answers), one column each."""
    names = [s + suffix for s in SIGNALS for suffix in ("", FIRST)]
    return {name: [t.signals.get(name, 0.0) for t in trajectories]
            for name in names if any(name in t.signals for t in trajectories)}


def _trainable(traj: Trajectory, tokenizer: Any) -> Trajectory:
    """A failed run still yields a row (so the batch keeps its shape) that carries no loss."""
    if traj.prompt_ids and traj.completion_ids:
        return traj
    eos = tokenizer.eos_token_id
    return traj.model_copy(update={"prompt_ids": traj.prompt_ids or [eos], "completion_ids": [eos],
                                   "logprobs": [0.0], "env_mask": [0], "turn_spans": []})
