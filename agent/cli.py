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
Protocol = Annotated[str, typer.Option(help="How tool calls are written: 'code' (```python) or 'json'.")]
MaxTurns = Annotated[int, typer.Option(min=1, help="Model turns allowed per run.")]
SelfCorrect = Annotated[bool, typer.Option(help="Ask the model to verify its answer with the tools.")]
Temperature = Annotated[float, typer.Option(min=0.0, help="Sampling temperature (0 = greedy).")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Log debug messages.")]


@app.callback()
def main(verbose: Verbose = False) -> None:
    level = logging.DEBUG if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def friendly_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Bad input (an unknown env, a missing model, a broken config) ends with one clear line."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (ValueError, FileNotFoundError, RuntimeError) as exc:
            if logging.getLogger().isEnabledFor(logging.DEBUG):
                raise
            console.print(f"[bold red]error:[/] {exc}")
            raise typer.Exit(2) from None

    return wrapper


@app.command()
@friendly_errors
def run(
    env: Annotated[str, typer.Option(help="See `anchorloop envs`, or jsonl:PATH.")] = "arithmetic",
    n: Annotated[int, typer.Option(min=1, help="Number of tasks.")] = 4,
    split: Annotated[str, typer.Option(help="'test' or 'train'.")] = "test",
    seed: Annotated[int, typer.Option(help="Which tasks to draw.")] = 0,
    model: Model = "smollm2-135m",
    protocol: Protocol = "code",
    max_turns: MaxTurns = 8,
    self_correct: SelfCorrect = True,
    temperature: Temperature = 0.0,
    generations: Annotated[int, typer.Option(min=1, help="Runs per task.")] = 1,
    out: Annotated[Path | None, typer.Option(help="Also write the trajectories as JSONL here.")] = None,
    quiet: Annotated[bool, typer.Option(help="Print only the summary.")] = False,
) -> None:
    """Run the agent on N tasks of one environment; print each trajectory and a summary."""
    from agent.render import print_trajectories
    from training.metrics import summary_line
    from training.runner import run_env
    from training.trajectory import save_jsonl

    result = run_env(env, n=n, split=split, seed=seed, model=model, protocol=protocol, max_turns=max_turns,
                     self_correct=self_correct, temperature=temperature, generations=generations,
                     console=console)
    if not quiet:
        print_trajectories(result.trajectories, console)
    console.print(summary_line(env, result.metrics), style="bold green")
    console.print(f"{result.tokens_per_s:.1f} generated tokens/s, {result.seconds:.1f} s in all")
    if out is not None:
        console.print(f"trajectories written to {save_jsonl(result.trajectories, out)}")


@app.command("envs")
def list_envs_command() -> None:
    """List the environments that `--env` accepts."""
    from envs import list_envs

    for name in list_envs():
        console.print(name)


@app.command("tools")
def list_tools_command() -> None:
    """List the built-in tools and installed tool plug-ins."""
    from tools import available_tools

    for name in available_tools():
        console.print(name)


if __name__ == "__main__":
    app()
