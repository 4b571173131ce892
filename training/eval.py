"""Evaluation: self-correction metrics per env and per agent configuration, on the same tasks.

    report = evaluate(policy, ["arithmetic", "wikiqa"], n=50, ablations=["verify-tools", "self-correct"])
    report.save("runs/eval1")          # eval.json + trajectories.jsonl
    console.print(report.table())

Every configuration runs on exactly the tasks the baseline runs on, with the one loaded policy, so
the rows of the table differ only by the switch being ablated. The ablations that answer the
project's question: ``verify-tools`` (the verify step without tools: self-reflection with no
external anchor) and ``self-correct`` (no verify step at all: one attempt).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from training.metrics import DiffRate, Metrics, Rate, compute_metrics, stops_text
from training.probe import PROBES, ProbeResult, probe_result
from training.trajectory import Trajectory, read_jsonl, save_jsonl

EVAL_FILE = "eval.json"
TRAJECTORIES_FILE = "trajectories.jsonl"
BASELINE = "baseline"
PROBE_PREFIX = "probe:"  # the saved trajectories of a probe are labelled "probe:<name>"

log = logging.getLogger(__name__)


class Configuration(BaseModel):
    """One way of running the agent: ``agent`` holds the ``build_agent`` options that differ from the baseline."""

    name: str
    agent: dict[str, Any] = Field(default_factory=dict)
    description: str = ""


ABLATIONS: dict[str, Configuration] = {
    "verify-tools": Configuration(
        name="no-verify-tools", agent={"verify_with_tools": False},
        description="the verify step without tools: self-reflection with no external anchor",
    ),
    "self-correct": Configuration(
        name="no-self-correct", agent={"self_correct": False},
        description="no verify step: the first answer is final",
    ),
    "restate-question": Configuration(
        name="no-restate-question", agent={"restate_question": False},
        description="the verify turn without the question quoted above its instruction",
    ),
}


class Transitions(BaseModel):
    """How runs moved between the first and the last attempt (correct = score ≥ 0.5)."""

    right_right: int = 0
    right_wrong: int = 0
    wrong_right: int = 0
    wrong_wrong: int = 0

    @classmethod
    def count(cls, trajectories: Sequence[Trajectory]) -> Transitions:
        counts = cls()
        for t in trajectories:
            key = f"{'right' if t.first_right else 'wrong'}_{'right' if t.last_right else 'wrong'}"
            setattr(counts, key, getattr(counts, key) + 1)
        return counts

    def matrix(self) -> list[list[int]]:
        """Rows: attempt 1 right / wrong; columns: last attempt right / wrong."""
        return [[self.right_right, self.right_wrong], [self.wrong_right, self.wrong_wrong]]


class EvalRow(BaseModel):
    env: str  # an env name, or "all" across the envs
    config: str
    metrics: Metrics
    transitions: Transitions


class EvalReport(BaseModel):
    """What ``evaluate`` measured. ``trajectories`` (per configuration) is kept out of the JSON;
    ``save`` writes it next to it as JSONL."""

    model: str = ""
    split: str
    n: int | None  # tasks per env; None: all of them
    seed: int
    generations: int
    envs: list[str]
    configs: list[Configuration]
    agent: dict[str, Any] = Field(default_factory=dict)  # the baseline's agent options
    rows: list[EvalRow]
    probes: list[ProbeResult] = Field(default_factory=list)
    seconds: float = 0.0
    generated_tokens: int = 0
    created: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    trajectories: dict[str, list[Trajectory]] = Field(default_factory=dict, exclude=True)

    def row(self, env: str, config: str = BASELINE) -> EvalRow:
        for row in self.rows:
            if row.env == env and row.config == config:
                return row
        raise KeyError(f"No row for env {env!r} and configuration {config!r}; "
                       f"have {[(r.env, r.config) for r in self.rows]}.")

    def table(self, title: str | None = None) -> Table:
        return eval_table(self.rows, title=title or self.model or "evaluation")

    def probe_table(self) -> Table:
        return probe_table(self.probes)

    def save(self, out_dir: str | Path) -> Path:
        """Write ``eval.json`` and ``trajectories.jsonl`` into ``out_dir``; returns the JSON's path."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / EVAL_FILE
        path.write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")
        save_trajectories(self.trajectories, out_dir / TRAJECTORIES_FILE)
        return path

    def rescored(self) -> EvalReport:
        """The rows and probe results computed again from the saved trajectories, with the metrics as
        they are defined now (a definition that changed, such as what counts as a vacuous check)."""
        if BASELINE not in self.trajectories:
            raise ValueError("this evaluation was saved without its trajectories; evaluate again")
        probes = []
        for result in self.probes:
            runs = [t for t in self.trajectories.get(PROBE_PREFIX + result.probe, []) if t.env == result.env]
            baseline = [t for t in self.trajectories[BASELINE] if t.env == result.env]
            probes.append(probe_result(result.env, baseline, runs, probe=result.probe))
        return self.model_copy(update={"rows": eval_rows(self.trajectories, self.envs), "probes": probes})

    @classmethod
    def load(cls, path: str | Path) -> EvalReport:
        """Read an ``eval.json`` (or the directory holding it) and its trajectories, when present."""
        path = Path(path)
        if path.is_dir():
            path = path / EVAL_FILE
        report = cls.model_validate_json(path.read_text(encoding="utf-8"))
        jsonl = path.parent / TRAJECTORIES_FILE
        if jsonl.is_file():
            report.trajectories = load_trajectories(jsonl)
        return report


def save_trajectories(by_config: dict[str, list[Trajectory]], path: str | Path) -> Path:
    """One trajectory per line, each with a ``config`` key; ``training.trajectory.load_jsonl`` still reads it."""
    pairs = [(config, traj) for config, trajectories in by_config.items() for traj in trajectories]
    return save_jsonl([t for _, t in pairs], path, labels=[{"config": c} for c, _ in pairs])


def load_trajectories(path: str | Path) -> dict[str, list[Trajectory]]:
    """Trajectories grouped by their ``config`` key (``""`` for files written without one)."""
    grouped: dict[str, list[Trajectory]] = {}
    for record, traj in read_jsonl(path):
        grouped.setdefault(str(record.get("config", "")), []).append(traj)
    return grouped


def configurations(ablations: Sequence[str | Configuration], agent_options: dict[str, Any]) -> list[Configuration]:
    """The baseline first, then one configuration per ablation that actually changes something."""
    configs = [Configuration(name=BASELINE, description="the agent as configured")]
    for item in ablations:
        if isinstance(item, str):
            if item not in ABLATIONS:
                raise ValueError(f"Unknown ablation {item!r}; choose from {sorted(ABLATIONS)} "
                                 "or pass a training.eval.Configuration.")
            item = ABLATIONS[item]
        if item.name in {c.name for c in configs}:
            raise ValueError(f"Two configurations are named {item.name!r}; give each a distinct name.")
        # an option the baseline leaves out takes build_agent's default, which no built-in ablation repeats
        if all(key in agent_options and agent_options[key] == value for key, value in item.agent.items()):
            raise ValueError(f"Ablation {item.name!r} sets {item.agent}, which the baseline already has; "
                             "drop the ablation or change the baseline options.")
        options = agent_options | item.agent
        if not options.get("self_correct", True) and item.agent.keys() & {"verify_with_tools", "restate_question"}:
            raise ValueError(f"Ablation {item.name!r} changes the verify step, which self_correct=False removes; "
                             "turn self-correction on or drop the ablation.")
        configs.append(item)
    return configs


def check_probes(probes: Sequence[str], agent_options: dict[str, Any]) -> None:
    unknown = [p for p in probes if p not in PROBES]
    if unknown:
        raise ValueError(f"Unknown probe {unknown[0]!r}; choose from {list(PROBES)}.")
    if probes and not agent_options.get("self_correct", True):
        raise ValueError("The injected-error probes run the verify step, which self_correct=False removes.")


def evaluate(
    policy: Any,
    envs: Sequence[Any],
    *,
    n: int | None,
    split: str = "test",
    seed: int = 0,
    generations: int = 1,
    ablations: Sequence[str | Configuration] = (),
    probes: Sequence[str] = (),
    temperature: float = 0.0,
    model: str = "",
    console: Console | None = None,
    **agent_kwargs: Any,
) -> EvalReport:
    """Run every configuration on the same tasks of every env with one loaded ``policy``.

    ``envs``: env names (``get_env``) or ``Env`` objects. ``n`` tasks per env (``None``: all).
    ``ablations``: names from ``ABLATIONS`` or your own ``Configuration``s, each run beside the
    baseline. ``probes``: ``"injected-errors"`` (``training.probe``) runs the verify step on wrong
    first attempts made from the baseline's own; its runs are kept as configuration ``probe:NAME``.
    ``agent_kwargs`` go to ``build_agent`` (``protocol``, ``max_turns``, ``sampling``, …);
    without ``sampling``, turns are sampled at ``temperature`` (greedy by default). ``model`` is a
    label recorded in the report.
    """
    from agent.policy import SamplingParams
    from training.runner import run_probe, run_tasks

    environments = [_resolve_env(e) for e in envs]
    names = [e.name for e in environments]
    if not environments:
        raise ValueError("evaluate() needs at least one env.")
    if len(set(names)) != len(names) or "all" in names:
        raise ValueError(f"Env names must be distinct and not 'all' (they label the rows), got {names}.")
    configs = configurations(ablations, agent_kwargs)
    check_probes(probes, agent_kwargs)
    if generations > 1 and temperature == 0 and "sampling" not in agent_kwargs:
        log.warning("generations=%d at temperature 0: greedy decoding repeats the same run", generations)
    agent_kwargs.setdefault("sampling", SamplingParams(temperature=temperature))
    tasks = {env.name: env.tasks(split, n=n, seed=seed) for env in environments}  # drawn once, shared

    started = time.perf_counter()
    by_config: dict[str, list[Trajectory]] = {}
    for config in configs:
        for env in environments:
            result = run_tasks(policy, env, tasks[env.name], generations=generations, console=console,
                               description=f"{env.name} · {config.name}", **(agent_kwargs | config.agent))
            by_config.setdefault(config.name, []).extend(result.trajectories)
    results = []
    for probe in probes:
        for env in environments:
            baseline = [t for t in by_config[BASELINE] if t.env == env.name]
            runs = run_probe(policy, env, tasks[env.name], baseline, probe=probe, seed=seed, console=console,
                             **agent_kwargs)
            by_config.setdefault(PROBE_PREFIX + probe, []).extend(runs)
            results.append(probe_result(env.name, baseline, runs, probe=probe))
    seconds = time.perf_counter() - started

    return EvalReport(probes=results,
        model=model, split=split, n=n, seed=seed, generations=generations, envs=names, configs=configs,
        agent=_jsonable(agent_kwargs), rows=eval_rows(by_config, names), seconds=seconds,
        generated_tokens=sum(t.num_model_tokens for ts in by_config.values() for t in ts),
        trajectories=by_config,
    )


def add_probes(report: EvalReport, policy: Any, envs: Sequence[Any], probes: Sequence[str], *,
               console: Console | None = None, **agent_kwargs: Any) -> EvalReport:
    """``report`` with ``probes`` run on its saved baseline runs: a probe added to an evaluation without
    running the baseline again. ``policy`` must be the model the report evaluated and ``agent_kwargs``
    its agent options (the probe's verify turns are that model's). A probe already in it is refused."""
    from training.runner import run_probe

    check_probes(probes, agent_kwargs)
    if BASELINE not in report.trajectories:
        raise ValueError("this evaluation was saved without its trajectories; evaluate again")
    have = {(p.env, p.probe) for p in report.probes}
    by_config = dict(report.trajectories)
    results = list(report.probes)
    for env in (_resolve_env(e) for e in envs):
        tasks = env.tasks(report.split, n=report.n, seed=report.seed)
        baseline = [t for t in report.trajectories[BASELINE] if t.env == env.name]
        for probe in probes:
            if (env.name, probe) in have:
                raise ValueError(f"The evaluation already has the {probe} probe on {env.name}.")
            runs = run_probe(policy, env, tasks, baseline, probe=probe, seed=report.seed, console=console,
                             **agent_kwargs)
            by_config[PROBE_PREFIX + probe] = by_config.get(PROBE_PREFIX + probe, []) + runs
            results.append(probe_result(env.name, baseline, runs, probe=probe))
    return report.model_copy(update={"probes": results, "trajectories": by_config,
                                     "rows": eval_rows(by_config, report.envs)})


def eval_rows(by_config: dict[str, list[Trajectory]], envs: Sequence[str] | None = None) -> list[EvalRow]:
    """Rows per configuration: one per env (in ``envs`` order, default as met) and ``"all"`` for several."""
    rows = []
    for config, trajectories in by_config.items():
        names = list(envs) if envs is not None else list(dict.fromkeys(t.env for t in trajectories))
        groups = [(env, [t for t in trajectories if t.env == env]) for env in names]
        if len(names) > 1:
            groups.append(("all", list(trajectories)))
        rows += [EvalRow(env=env or "?", config=config, metrics=compute_metrics(group),
                         transitions=Transitions.count(group)) for env, group in groups]
    return rows


# -- showing it -------------------------------------------------------------------------------------

COLUMNS = [  # (header, Metrics field)
    ("Acc@t1", "acc_t1"), ("Acc@t2", "acc_t2"), ("Δ", "delta"), ("Δi→c", "delta_i_to_c"),
    ("Δc→i", "delta_c_to_i"), ("tool use", "tool_use_rate"), ("tool err.", "tool_error_rate"),
    ("confirm.", "confirmatory_rate"), ("verif. prec.", "verification_precision"), ("vacuous", "vacuous_check_rate"),
]


# the report's tables have room for the no-answer share and the separable vacuous rate as columns of their own
REPORT_COLUMNS = [*COLUMNS[:2], ("no answer", "no_answer_rate"), *COLUMNS[2:], ("vac. sep.", "vacuous_separable_rate")]
TABLE_NOTE = ("rates in %, 95% interval underneath (Wilson; Δ: Newcombe). no answer: runs that ended without "
              "one (counted wrong in Acc); stopped: why runs ended. –: nothing to count, e.g. confirm./verif. "
              "prec./vacuous when no run reached the verify step, tool err. when no tool was called.")
SEPARABLE_NOTE = ("vac. sep.: vacuous checks, leaving out a faithful first attempt checked by the same code (copying "
                  "it and reading the question again write the same text there).")


def no_answer_text(m: Metrics) -> str:
    """``"no answer 2 · stopped: max_turns 2"``, under a row's name."""
    return f"no answer {m.no_answers} · stopped: {stops_text(m)}"


def format_rate(rate: Rate | DiffRate) -> tuple[str, str]:
    """(value, 95% interval) in percent, compact; ``("–", "")`` when nothing was counted."""
    if rate.n == 0:
        return "–", ""
    if isinstance(rate, DiffRate):
        return f"{100 * rate.value:+.1f}", f"{100 * rate.low:+.0f},{100 * rate.high:+.0f}"
    return f"{100 * rate.value:.1f}", f"{100 * rate.low:.0f}–{100 * rate.high:.0f}"


def eval_table(rows: Sequence[EvalRow], title: str = "evaluation") -> Table:
    """One row per env × configuration; rates in percent with their 95% interval underneath."""
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_lines=True, pad_edge=False,
                  collapse_padding=True, caption=TABLE_NOTE, caption_justify="left")
    table.add_column("env (n)\nconfig", overflow="fold", min_width=10)
    for header, _ in COLUMNS:
        table.add_column(header.replace(" ", "\n"), justify="right", no_wrap=True)
    for row in rows:
        cells = []
        for _, field in COLUMNS:
            value, interval = format_rate(getattr(row.metrics, field))
            cells.append(Text(value).append(f"\n{interval}" if interval else "", style="dim"))
        name = Text(f"{row.env} ({row.metrics.n})", style="bold" if row.env == "all" else "")
        name.append(f"\n{row.config}", style="cyan").append(f"\n{no_answer_text(row.metrics)}", style="dim")
        table.add_row(name, *cells)
    return table


def probe_table(probes: Sequence[ProbeResult]) -> Table:
    """Per env and probe: fix rate on injected wrong attempts, false alarms on untouched right ones."""
    table = Table(title="injected-error probes", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
                  caption="runs: started from an injected wrong first attempt; fix: those made right; false "
                  "alarm: right first attempts made wrong; vacuous: checks that computed nothing new",
                  caption_justify="left")
    for header in ("env", "probe", "runs", "skipped", "fix", "false alarm", "vacuous"):
        table.add_column(header, justify="left" if header in ("env", "probe") else "right",
                         no_wrap=header in ("env", "probe"))
    for p in probes:
        cells = [" ".join(format_rate(r)) for r in (p.fix_rate, p.false_alarm_rate, p.vacuous_check_rate)]
        table.add_row(p.env, p.probe, str(p.injected), str(p.skipped), *cells)
    return table


# -- helpers ----------------------------------------------------------------------------------------


def _resolve_env(env: Any) -> Any:
    if isinstance(env, str):
        from envs import get_env

        return get_env(env)
    if not hasattr(env, "tasks") or not getattr(env, "name", ""):
        raise TypeError(f"evaluate() takes env names or Env objects with a name, got {env!r}.")
    return env


def _jsonable(value: Any) -> Any:
    """Agent options as JSON: pydantic models dumped, containers walked, anything else by repr."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return repr(value)
