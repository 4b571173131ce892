"""Training configuration: one TOML file, validated; an unknown or misspelt key is an error naming it."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agent.policy import MAX_NEW_TOKENS


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelConfig(_Section):
    name: str = "smollm2-135m"
    lora: bool = False
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)


class EnvConfig(_Section):
    name: str = "arithmetic"
    kwargs: dict[str, Any] = Field(default_factory=dict)
    train_tasks: int = Field(64, ge=1)
    eval_tasks: int = Field(32, ge=1)
    seed: int = 0
    probes: list[str] = Field(default_factory=list)  # run by the demo's evaluations, e.g. ["injected-errors"]
    # tools offered next to the env's own: built-ins, "module:function", "module:Tool", plug-ins (`--tool`)
    tools: list[str] = Field(default_factory=list)

    @field_validator("tools", mode="before")
    @classmethod
    def _one_tool(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    def build(self) -> Any:
        """The env this section names, with its options and extra tools (names checked, nothing loaded)."""
        from envs import get_env, with_tools

        return with_tools(get_env(self.name, **self.kwargs), self.tools)


class AgentConfig(_Section):
    protocol: Literal["auto", "code", "json"] = "auto"
    max_turns: int = Field(6, ge=1)
    max_tool_calls: int = Field(4, ge=0)
    max_new_tokens: int = Field(MAX_NEW_TOKENS, ge=8)
    temperature: float = Field(0.8, gt=0.0)
    self_correct: bool = True
    verify_with_tools: bool = True
    restate_question: bool = True  # the verify turn quotes the question before asking for the check
    verify_instruction: str = ""  # the verify turn's own words; empty: agent.prompts.VERIFY_WITH_TOOLS (or _WITHOUT_)
    # in the verify step, a call identical to the first attempt's is not run: its observation asks for another route
    refuse_repeats: bool = False
    # the worked examples (agent.prompts.EXEMPLAR_SETS): "rewrite", "stepwise", "assign", "bracket", "parts"
    exemplars: str = "rewrite"
    # your own LangGraph graph instead of ours: "module:function", a function(model, tools) returning a compiled
    # graph (training.graph_agent; one attempt per run, the verify options above are ignored)
    graph: str = ""

    @field_validator("exemplars")
    @classmethod
    def _known_exemplars(cls, name: str) -> str:
        from agent.prompts import exemplar_set

        exemplar_set(name)  # raises, naming the sets there are
        return name

    @field_validator("graph")
    @classmethod
    def _importable_graph(cls, path: str) -> str:
        if path.strip():
            from training.graph_agent import check_graph

            check_graph(path)  # raises, naming the path and what to do
        return path.strip()

    def build_options(self) -> dict[str, Any]:
        """The ``build_env_agent`` options this section sets (sampling is the caller's: training samples,
        evaluation is greedy)."""
        return {"protocol": self.protocol, "max_turns": self.max_turns, "max_tool_calls": self.max_tool_calls,
                "self_correct": self.self_correct, "verify_with_tools": self.verify_with_tools,
                "restate_question": self.restate_question, "exemplars": self.exemplars,
                "refuse_repeats": self.refuse_repeats,
                **({"verify_instruction": self.verify_instruction} if self.verify_instruction.strip() else {}),
                **({"graph": self.graph} if self.graph else {})}


class RewardConfig(_Section):
    """Weights of the reward terms. ``progress`` is SCoRe's alpha on (r_last - r_first)."""

    correctness: float = 1.0
    progress: float = 1.0
    format: float = 0.0
    tool: float = 0.0
    check: float = 0.0  # −weight × last score when the verify step computed nothing new (a vacuous check)
    # what `check` counts as computing nothing new: "call", only the first attempt's own calls again (the
    # rule every run before BENCHMARKS round 14 trained with); "computation", the same arithmetic in any
    # form too (`x = E` / `print(x)` after `print(E)`), the rule the vacuous-check metric counts by
    check_rule: Literal["call", "computation"] = "call"
    # label-free signals (training.signals; audit them first: `anchorloop audit`), no answer key read:
    majority: float = 0.0  # 1 when the answer is the group's unique most common one (TTRL)
    self_judge: float = 0.0  # the policy's consistency-weighted win rate over its group's answers (SERL), in [0, 1]
    tool_check: float = 0.0  # 1 when the run's own tool outputs back its answer (the anchored signal)
    belief: float = 0.0  # rise of log p(own answer) over the run, in nats (ΔBelief); costs forward passes

    def signals(self) -> list[str]:
        """The label-free signals with a non-zero weight: the ones a rollout must compute."""
        from training.signals import SIGNALS

        return [name for name in SIGNALS if getattr(self, name)]


class TrainingConfig(_Section):
    steps: int = Field(20, ge=1)
    stage1_steps: int = Field(0, ge=0)  # SCoRe Stage I first (attempt 1 held by KL), then Stage II
    tasks_per_step: int = Field(2, ge=1)
    num_generations: int = Field(4, ge=2)
    # sequences per forward/backward (the step accumulates the rest); unset: the largest divisor of the
    # step's batch up to 4 (with the shared prefix, 4 SmolLM2 rows peaked at 5.3 GiB; 4 full rows at 10.2)
    micro_batch_size: int | None = Field(None, ge=1)
    share_prefix: bool = True  # encode a micro-batch's common prefix (system prompt, exemplars) once in the loss
    learning_rate: float = Field(1e-5, gt=0)
    beta: float = Field(0.0, ge=0)  # KL to the reference model; Stage I needs it > 0
    # KL weight on the tokens up to the first answer (unset: beta); SCoRe holds attempt 1 with a larger one
    first_attempt_beta: float | None = Field(None, ge=0)
    max_grad_norm: float = 1.0
    # Adam divides each step by the gradient's running size, so a batch that carries almost no signal (a
    # gradient norm of 0.004) moves every weight as far as one that carries a lot; a larger epsilon makes
    # steps on such tiny gradients small (torch's default 1e-8 never does)
    adam_epsilon: float = Field(1e-8, gt=0)
    loss_type: str = "dapo"
    # TRL's: what divides each advantage, the group's reward standard deviation, the batch's, or nothing
    # ("none", as Dr. GRPO argues: the division turns a group's tiny reward differences into full-size steps)
    scale_rewards: Literal["group", "batch", "none"] = "group"
    # Stage II credit: "per_attempt" credits attempt 1 with its own correctness and the verify turns with
    # the whole reward; "trajectory" gives every token one advantage (rewards a wrong first attempt)
    credit: Literal["per_attempt", "trajectory"] = "per_attempt"
    # ΔBelief's dense credit: each model turn's change of log p(own answer), clipped to ±1 nat, times this
    # weight, added to that turn's token advantages (computes the belief signal; costs forward passes)
    belief_turns: float = Field(0.0, ge=0.0)
    # share of each step's tasks whose group starts from a wrong first attempt made from the model's own
    # (training.injection): a labelled variant; SCoRe trains on natural errors only (0)
    injected_errors: float = Field(0.0, ge=0.0, le=1.0)
    # what the advantage of a run started from an injected attempt is measured against: "group" (GRPO: the
    # other runs of its task) or "batch" (the step's other injected runs, whose rewards measure the check alone)
    injected_baseline: Literal["group", "batch"] = "group"
    # of those injected attempts, the share whose code fails (one bracket dropped) and which answer a number
    # the tool never printed; the rest print a wrong answer
    injected_failed_calls: float = Field(0.0, ge=0.0, le=1.0)
    # dynamic sampling for injected groups: a group whose every run missed the injected error is run again from a
    # new wrong attempt, up to this many times, and replaced by the first draw that fixed it at least once
    injected_redraws: int = Field(0, ge=0)
    # an injected group starts from the model's own first attempt, decoded greedily as in evaluation, as it is when
    # that attempt is wrong (its real error, which the whole group then checks); only right attempts are changed
    replay_own_errors: bool = False
    # temperature of the turns after the first answer in training rollouts (unset: agent.temperature): hotter
    # explores checks the policy rarely writes; the loss still scores them at agent.temperature (no correction)
    verify_temperature: float | None = Field(None, gt=0.0)
    eval_every: int = Field(0, ge=0)  # greedy held-out evaluation every N steps (and before the first): the curve
    curve_tasks: int = Field(16, ge=1)  # held-out tasks (test split) in each point of that curve
    save_steps: int = Field(5, ge=1)
    save_total_limit: int = Field(2, ge=1)
    seed: int = 0
    report_to: list[str] = Field(default_factory=lambda: ["tensorboard"])
    max_batch_size: int = Field(16, ge=1)  # rows decoded together during rollouts
    # what samples the rollouts: "hf" (in this process, on the very weights being trained) or "vllm" (a vLLM
    # engine in this process, given the trained weights before every rollout; with vllm_server, that server)
    engine: Literal["hf", "vllm"] = "hf"
    vllm_kwargs: dict[str, Any] = Field(default_factory=dict)  # vllm.AsyncEngineArgs of the in-process engine
    # generate on a vLLM server (GPU) instead of in-process; TRL pushes the weights to it before each rollout
    vllm_server: str | None = Field(None, pattern=r"^https?://")
    vllm_server_timeout_s: float = Field(240.0, gt=0)  # how long to wait for the server to come up
    # how the trained weights reach the server: "nccl" (TRL's push, GPUs) or "file" (a server on this machine,
    # CPU or GPU, started with VLLM_SERVER_DEV_MODE=1: a safetensors file it reloads; agent.vllm_weights)
    vllm_server_sync: Literal["nccl", "file"] = "nccl"

    @property
    def micro_batch(self) -> int:
        batch = self.tasks_per_step * self.num_generations
        return self.micro_batch_size or max(n for n in range(1, 5) if batch % n == 0)

    @model_validator(mode="after")
    def _consistent(self) -> TrainingConfig:
        batch = self.tasks_per_step * self.num_generations
        if self.micro_batch_size and batch % self.micro_batch_size:
            raise ValueError(f"training.micro_batch_size ({self.micro_batch_size}) must divide the step's batch "
                             f"(tasks_per_step × num_generations = {batch}).")
        if self.stage1_steps and self.beta <= 0:
            raise ValueError("training.stage1_steps > 0 needs training.beta > 0: Stage I holds attempt 1 with KL.")
        if self.first_attempt_beta is not None and self.beta <= 0:
            raise ValueError("training.first_attempt_beta needs training.beta > 0: the reference model it measures "
                             "the KL to exists only then.")
        if self.vllm_server and self.engine != "vllm":
            raise ValueError("training.vllm_server is where a vLLM engine runs: set training.engine = \"vllm\" "
                             "too, or drop vllm_server to generate in this process.")
        if self.vllm_server_sync != "nccl" and not self.vllm_server:
            raise ValueError("training.vllm_server_sync is how weights reach a vLLM server; set vllm_server too, "
                             "or drop vllm_server_sync.")
        if self.vllm_kwargs and (self.engine != "vllm" or self.vllm_server):
            raise ValueError("training.vllm_kwargs configure the in-process vLLM engine (training.engine = \"vllm\" "
                             "without vllm_server); a server takes its options on its own command line.")
        for key, what in NEEDS_INJECTED_ERRORS.items():
            if getattr(self, key) != type(self).model_fields[key].default and not self.injected_errors:
                raise ValueError(f"training.{key} {what}, and training.injected_errors is 0: set injected_errors "
                                 f"too, or drop {key}.")
        return self


# options of the injected groups (training.injected_errors > 0), and what each does
NEEDS_INJECTED_ERRORS = {
    "injected_baseline": "sets the baseline of runs started from an injected attempt",
    "replay_own_errors": "chooses how injected groups start",
    "injected_redraws": "redraws groups started from an injected attempt",
    "injected_failed_calls": "is a share of the injected attempts",
}


class TrainConfig(_Section):
    output_dir: str = "runs/quickstart"
    model: ModelConfig = Field(default_factory=ModelConfig)
    env: EnvConfig = Field(default_factory=EnvConfig)
    agent: AgentConfig = Field(default_factory=AgentConfig)
    rewards: RewardConfig = Field(default_factory=RewardConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)


    @model_validator(mode="after")
    def _signals_can_run(self) -> TrainConfig:
        if (self.rewards.belief or self.training.belief_turns) and self.training.engine == "vllm":
            raise ValueError("rewards.belief and training.belief_turns score answers with the rollout policy's "
                             "transformers model, which training.engine = \"vllm\" does not have: drop one of them.")
        if self.model.lora and self.training.engine == "vllm" and not self.training.vllm_server:
            raise ValueError("model.lora with the in-process vLLM engine is not supported (the engine would need "
                             "the adapters merged at every step): train LoRA with training.engine = \"hf\".")
        return self

    def signals(self) -> list[str]:
        """The label-free signals a rollout must compute: those weighted in [rewards], and belief for
        ``training.belief_turns``."""
        names = self.rewards.signals()
        return names + ["belief"] if self.training.belief_turns and "belief" not in names else names


class ConfigError(ValueError):
    """The config file cannot be used; the message names the file, the key and the problem."""


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Config file {path} does not exist. Start from configs/quickstart.toml.")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    for dotted, value in (overrides or {}).items():
        *parents, leaf = dotted.split(".")
        node = data
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            if err["type"] == "extra_forbidden":
                problems.append(f"unknown key '{key}'{_known_keys(err['loc'][:-1])}")
            else:
                problems.append(f"'{key}': {err['msg']}")
        raise ConfigError(f"{path}: " + "; ".join(problems)) from None


def _known_keys(section: tuple[Any, ...]) -> str:
    """``" (known: a, b, c)"``: the keys the section at ``section`` takes (nothing when it cannot be found)."""
    model: Any = TrainConfig
    for part in section:
        field = model.model_fields.get(str(part)) if isinstance(model, type) else None
        model = field.annotation if field is not None else None
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return ""
    return f" (known: {', '.join(model.model_fields)})"
