"""``anchorloop train``: build the model, env, agent and trainer from a config, then train.

A run directory holds everything: ``config.json`` (as resolved), ``train_log.jsonl`` (one line per
step), ``trajectories/`` (every rollout), ``checkpoints/`` (TRL/Trainer checkpoints, resumable),
``tb/`` (TensorBoard) and ``final/`` (the trained model and tokenizer).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback

from agent.policy import SamplingParams
from training.config import TrainConfig
from training.progress import Progress
from training.recorder import RunRecorder

log = logging.getLogger(__name__)


class RichProgress(TrainerCallback):
    """One progress bar for the whole run, showing reward, Acc@t1/t2 and tokens/s of the last step."""

    def __init__(self, recorder: RunRecorder, console: Console | None = None) -> None:
        self.recorder = recorder
        self.progress = Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(), console=console,
        )
        self.bar = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.progress.start()
        self.bar = self.progress.add_task("train", total=state.max_steps, completed=state.global_step, stats="")

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        s = self.recorder.last_stats
        text = (f"reward {s.get('reward_mean', 0):+.2f}  Acc@t1 {100 * s.get('acc_t1', 0):.0f}%  "
                f"Acc@t2 {100 * s.get('acc_t2', 0):.0f}%  {s.get('tokens_per_s', 0):.0f} tok/s")
        if "heldout_acc_t2" in s:
            text += f"  held-out Acc@t2 {100 * s['heldout_acc_t2']:.0f}%"
        self.progress.update(self.bar, completed=state.global_step, stats=text)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.progress.stop()


def last_checkpoint(run_dir: Path) -> Path | None:
    from transformers.trainer_utils import get_last_checkpoint

    ckpt_dir = run_dir / "checkpoints"
    return Path(found) if ckpt_dir.is_dir() and (found := get_last_checkpoint(str(ckpt_dir))) else None


def _trim_logs(run_dir: Path, upto_step: int) -> None:
    """On resume, forget log lines of steps after the checkpoint: they will be run again."""
    for path, keep in ((run_dir / "train_log.jsonl", lambda s: s < upto_step),
                       (run_dir / "heldout_log.jsonl", lambda s: s <= upto_step)):
        if path.is_file():
            lines = [ln for ln in path.read_text().splitlines() if ln.strip() and keep(json.loads(ln)["step"])]
            path.write_text("".join(ln + "\n" for ln in lines))


def no_recomputation(config_class: type) -> dict[str, bool]:
    """The argument that turns activation checkpointing off, under the name this transformers uses:
    ``activation_checkpointing`` since 5.2x, ``gradient_checkpointing`` before (GRPOConfig turns it on)."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(config_class)}
    return {"activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing": False}


def rollout_sampling(cfg: TrainConfig) -> dict[str, SamplingParams]:
    """How training rollouts sample: ``sampling`` (at ``agent.temperature``, which the loss also uses) and,
    with ``training.verify_temperature``, a ``verify_sampling`` for the turns after the first answer."""
    sampling = SamplingParams(temperature=cfg.agent.temperature, max_new_tokens=cfg.agent.max_new_tokens)
    hot = cfg.training.verify_temperature
    return {"sampling": sampling} | ({} if hot is None else
                                     {"verify_sampling": sampling.model_copy(update={"temperature": hot})})


def build_trainer(config: TrainConfig, run_dir: Path, *, model: Any = None, tokenizer: Any = None,
                  console: Console | None = None) -> tuple[Any, Any]:
    """The trainer and its rollout function. ``model``/``tokenizer`` override ``config.model.name``."""
    import torch
    from trl import GRPOConfig

    from agent.models import load_model
    from training.grpo import AgentRollout, SelfCorrectionGRPOTrainer
    from training.injection import ErrorInjector
    from training.metrics import compute_metrics
    from training.rewards import reward_functions
    from training.rollout import build_env_agent
    from training.rollout import rollout as run_rollout
    from training.rollout_backend import rollout_policy, vllm_args

    cfg, tr = config, config.training
    os.environ.setdefault("TENSORBOARD_LOGGING_DIR", str(run_dir / "tb"))  # how transformers 5 takes it
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is TRL-experimental; we know
    env = cfg.env.build()  # a bad env or tool name fails before the model loads
    if model is None:
        model, tokenizer = load_model(cfg.model.name)
    cuda = torch.cuda.is_available()
    tasks = env.tasks("train", n=cfg.env.train_tasks, seed=cfg.env.seed)
    dataset = env.as_dataset("train", n=cfg.env.train_tasks, seed=cfg.env.seed)
    funcs, weights = reward_functions(cfg.rewards)
    args = GRPOConfig(
        output_dir=str(run_dir / "checkpoints"),
        # one rollout of tasks_per_step × num_generations trajectories per optimizer step, trained in
        # micro-batches (attention activations grow with the square of the length: memory, not speed)
        per_device_train_batch_size=tr.micro_batch,
        gradient_accumulation_steps=tr.tasks_per_step * tr.num_generations // tr.micro_batch,
        num_generations=tr.num_generations,
        max_steps=tr.steps,
        learning_rate=tr.learning_rate,
        beta=tr.beta,
        loss_type=tr.loss_type,
        scale_rewards=tr.scale_rewards,
        max_grad_norm=tr.max_grad_norm,
        adam_epsilon=tr.adam_epsilon,
        temperature=cfg.agent.temperature,  # TRL recomputes log-probs at this temperature: keep them equal
        max_completion_length=cfg.agent.max_turns * cfg.agent.max_new_tokens,
        **no_recomputation(GRPOConfig),  # small model, plenty of memory: recomputation only costs time
        use_cpu=not cuda,
        bf16=cuda and torch.cuda.is_bf16_supported(),
        logging_steps=1,
        save_steps=tr.save_steps,
        save_total_limit=tr.save_total_limit,
        report_to=tr.report_to,
        seed=tr.seed,
        disable_tqdm=True,
        reward_weights=weights,
        **vllm_args(tr),
    )
    peft_config = None
    if cfg.model.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=cfg.model.lora_r, lora_alpha=cfg.model.lora_alpha, target_modules="all-linear",
                                 task_type="CAUSAL_LM")
    sampling = rollout_sampling(cfg)
    agent_options = cfg.agent.build_options()

    def build(policy_model: Any) -> tuple[Any, Any]:
        policy = rollout_policy(tr, policy_model, tokenizer)
        return policy, build_env_agent(policy, env, **sampling, **agent_options)

    def injector(policy: Any) -> Any:
        # replayed errors are the model's greedy ones, the first attempts evaluation sees
        first = {"sampling": SamplingParams(temperature=0.0, max_new_tokens=cfg.agent.max_new_tokens)} \
            if tr.replay_own_errors else {"sampling": sampling["sampling"]}
        first_agent = build_env_agent(policy, env, **first, **agent_options | {"self_correct": False})
        return ErrorInjector(first_agent, env, tr.injected_errors, seed=tr.seed, failed_calls=tr.injected_failed_calls,
                             replay_own=tr.replay_own_errors)

    rollout = AgentRollout(build, env, tasks, injector=injector if tr.injected_errors else None,
                           signals=cfg.signals(), injected_redraws=tr.injected_redraws,
                           check_rule=cfg.rewards.check_rule)
    curve_tasks = env.tasks("test", n=tr.curve_tasks, seed=cfg.env.seed)

    greedy_agent: list[Any] = []  # built once, on the first curve point, for the policy the rollout uses

    def heldout() -> Any:
        """Greedy runs on held-out tasks with the weights as they are now."""
        policy = rollout.sync(trainer)
        if not greedy_agent:
            greedy = SamplingParams(temperature=0.0, max_new_tokens=cfg.agent.max_new_tokens)
            greedy_agent.append(build_env_agent(policy, env, sampling=greedy, **agent_options))
        return compute_metrics(asyncio.run(run_rollout(greedy_agent[0], env, curve_tasks)))

    trainer = SelfCorrectionGRPOTrainer(
        model=model, processing_class=tokenizer, reward_funcs=funcs, args=args, train_dataset=dataset,
        peft_config=peft_config, agent_rollout=rollout, stage1_steps=tr.stage1_steps, share_prefix=tr.share_prefix,
        credit=tr.credit, belief_turns=tr.belief_turns, first_attempt_beta=tr.first_attempt_beta,
        injected_baseline=tr.injected_baseline,
    )
    recorder = RunRecorder(run_dir, cfg.rewards, heldout=heldout if tr.eval_every else None,
                           eval_every=tr.eval_every)
    recorder.attach(trainer, rollout)
    trainer.remove_callback(PrinterCallback)  # the progress bar shows what matters; TensorBoard gets the rest
    trainer.add_callback(RichProgress(recorder, console))
    return trainer, rollout


class TiedWeightsAreNotMissing(logging.Filter):
    """Resuming a model whose output layer is its embedding (SmolLM2, the tiny model): the checkpoint
    stores the shared tensor once, and transformers reports the other name (``lm_head.weight``) as a
    missing key. Nothing is missing; that one message is dropped, any other missing key still shows."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        seen: dict[int, str] = {}
        self.tied: set[str] = set()
        for name, param in model.named_parameters(remove_duplicate=False):
            if param.data_ptr() in seen:
                self.tied |= {name, seen[param.data_ptr()]}
            seen.setdefault(param.data_ptr(), name)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "missing keys in the checkpoint" not in message:
            return True
        missing = re.findall(r"'([^']+)'", message.partition("loaded:")[2])
        return not missing or not set(missing) <= self.tied


def _steps_done(checkpoint: Path) -> int:
    state = checkpoint / "trainer_state.json"
    return int(json.loads(state.read_text())["global_step"]) if state.is_file() else -1


def train(config: TrainConfig, *, resume: bool = False, console: Console | None = None, model: Any = None,
          tokenizer: Any = None) -> Path:
    """Train from ``config``; with ``resume``, continue from the last checkpoint in the run dir (a run
    that has already trained all its steps and saved its model is left as it is)."""
    run_dir = Path(config.output_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise FileExistsError(f"output_dir {run_dir} is a file, not a folder: set output_dir (or --output-dir) "
                              "to a folder, or move the file away.")
    checkpoint = last_checkpoint(run_dir) if resume else None
    if resume and checkpoint is None:
        log.warning("no checkpoint in %s; starting from the beginning", run_dir / "checkpoints")
    if checkpoint is not None and _steps_done(checkpoint) >= config.training.steps:
        final = run_dir / "final"
        if not (final / "config.json").is_file() and not (final / "adapter_config.json").is_file():
            from agent.models import load_model  # killed after its last checkpoint: the model is in it

            done_model, done_tokenizer = load_model(str(checkpoint), device="cpu")
            done_model.save_pretrained(str(final))
            done_tokenizer.save_pretrained(str(final))
        (console or Console()).print(
            f"{run_dir} is already complete: {_steps_done(checkpoint)} of {config.training.steps} steps trained, "
            f"model in {final}. Nothing to resume; give more --steps to train further.")
        return run_dir
    if not resume and (run_dir / "train_log.jsonl").exists():
        raise FileExistsError(
            f"{run_dir} already holds a training run. Use --resume to continue it, or set another output_dir."
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(config.model_dump_json(indent=2))
    if checkpoint is not None:
        step = int(checkpoint.name.rsplit("-", 1)[-1])
        _trim_logs(run_dir, step)
    trainer, rollout = build_trainer(config, run_dir, model=model, tokenizer=tokenizer, console=console)
    quiet = TiedWeightsAreNotMissing(trainer.model)
    logging.getLogger("transformers.trainer").addFilter(quiet)
    try:
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    finally:
        logging.getLogger("transformers.trainer").removeFilter(quiet)
        rollout.close()
    final = run_dir / "final"
    trainer.save_model(str(final))
    trainer.processing_class.save_pretrained(str(final))
    return run_dir
