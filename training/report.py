"""One self-contained HTML page about a run directory: training curves, before/after evaluation,
transition matrices, tool use, and a browsable sample of trajectories.

    run_dir/
      train_log.jsonl          one JSON object per training step (step, reward_mean, acc_t1, ...)
      eval_before/, eval_after/  each eval.json + trajectories.jsonl, as `anchorloop eval --out` writes
      audit.json or audit*/    as `anchorloop audit --out` writes (label-free signals vs the answer key)
      *.jsonl                  otherwise: any trajectory files

Every piece is optional; a section whose input is missing says so. The plots are embedded in the
page as data URIs and also written to ``run_dir/plots/``.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
import shlex
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from training.audit_view import audit_section
from training.eval import BASELINE, EVAL_FILE, SEPARABLE_NOTE, TABLE_NOTE, EvalReport, EvalRow, eval_rows, format_rate
from training.eval import REPORT_COLUMNS as COLUMNS
from training.metrics import stops_text
from training.report_html import CSS, PAGE, PRIORITY, note, outcome, trajectory_html
from training.trajectory import Trajectory

log = logging.getLogger(__name__)

TRAIN_LOG = "train_log.jsonl"
HELDOUT_LOG = "heldout_log.jsonl"
REPORT_FILE = "report.html"
PLOTS_DIR = "plots"
ORDER = {"before": 0, "after": 2}  # other evaluations sit between the two


@dataclass
class Evaluation:
    """One evaluation found in the run dir, with its rows computed or read from eval.json."""

    label: str
    source: Path
    report: EvalReport | None = None
    trajectories: dict[str, list[Trajectory]] = field(default_factory=dict)
    rows: list[EvalRow] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def write_report(run_dir: str | Path, *, sample: int = 24) -> Path:
    """Write ``run_dir/report.html`` (and ``run_dir/plots/*.png``); returns the HTML's path.

    ``sample``: how many trajectories to show per evaluation (changed answers first).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"No run directory at {run_dir} (resolved to {run_dir.resolve()}).")
    figures = Figures(run_dir / PLOTS_DIR)
    steps = read_train_log(run_dir / TRAIN_LOG)
    evaluations = find_evaluations(run_dir)
    latest = _latest_training_rollouts(run_dir)
    body = [
        _overview(run_dir, steps, evaluations),
        _training_section(steps, figures),
        _curve_section(read_train_log(run_dir / HELDOUT_LOG), figures),
        _evaluation_section(evaluations, figures, run_dir),
        _tools_section(steps, figures),
        audit_section(run_dir, figures.img),
        _trajectories_section(evaluations + ([latest] if latest else []), sample),
    ]
    path = run_dir / REPORT_FILE
    path.write_text(PAGE.format(title=html.escape(f"anchorloop report · {run_dir.resolve().name}"),
                                css=CSS, body="\n".join(body)), encoding="utf-8")
    return path


# -- reading the run dir -----------------------------------------------------------------------------


def read_train_log(path: Path) -> list[dict[str, Any]] | None:
    """The log's records (``None`` without a file); lines that are not JSON objects are skipped."""
    if not path.is_file():
        return None
    records, skipped = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        else:
            skipped += 1
    if skipped:
        log.warning("%s: skipped %d lines that are not JSON objects", path, skipped)
    return records


def find_evaluations(run_dir: Path) -> list[Evaluation]:
    """``eval.json`` in the run dir or its ``eval*`` subdirs; failing that, trajectory ``*.jsonl`` files."""
    dirs = [run_dir] if (run_dir / EVAL_FILE).is_file() else []
    dirs += [d for d in sorted(run_dir.glob("eval*")) if d.is_dir() and (d / EVAL_FILE).is_file()]
    found = [_read_eval_dir(d, run_dir) for d in dirs]
    if not found:
        for path in sorted(run_dir.glob("*.jsonl")):
            if path.name != TRAIN_LOG and (evaluation := _read_trajectory_file(path)) is not None:
                found.append(evaluation)
    return sorted(found, key=lambda e: ORDER.get(e.label, 1))


def _read_eval_dir(directory: Path, run_dir: Path) -> Evaluation:
    from training.eval import TRAJECTORIES_FILE, load_trajectories

    label = directory.name.removeprefix("eval_") if directory != run_dir else "eval"
    evaluation = Evaluation(label=label, source=directory)
    try:
        evaluation.report = EvalReport.model_validate_json((directory / EVAL_FILE).read_text(encoding="utf-8"))
        evaluation.rows = evaluation.report.rows
    except ValueError as exc:
        evaluation.problems.append(f"{directory / EVAL_FILE} could not be read ({_first_line(exc)}).")
    jsonl = directory / TRAJECTORIES_FILE
    if jsonl.is_file():
        try:
            evaluation.trajectories = {k or BASELINE: v for k, v in load_trajectories(jsonl).items()}
        except (ValueError, OSError) as exc:
            evaluation.problems.append(f"{jsonl} could not be read ({_first_line(exc)}).")
    else:
        evaluation.problems.append(f"No {TRAJECTORIES_FILE} in {directory}: no trajectories to show.")
    if not evaluation.rows and evaluation.trajectories:
        evaluation.rows = eval_rows(evaluation.trajectories)
    return evaluation


def _read_trajectory_file(path: Path) -> Evaluation | None:
    from training.eval import load_trajectories

    try:
        grouped = {k or BASELINE: v for k, v in load_trajectories(path).items()}
    except (ValueError, OSError):
        log.info("%s is not a trajectory file; skipped", path)
        return None
    if not grouped:
        return None
    return Evaluation(label=path.stem, source=path, trajectories=grouped, rows=eval_rows(grouped))


def _latest_training_rollouts(run_dir: Path) -> Evaluation | None:
    """The rollouts of the last training step that saved them (``trajectories/step_*.jsonl``)."""
    files = sorted((run_dir / "trajectories").glob("step_*.jsonl"))
    latest = _read_trajectory_file(files[-1]) if files else None
    if latest is not None:
        latest.label = f"training rollouts, {files[-1].stem.replace('_', ' ')}"
    return latest


def _overall(rows: list[EvalRow]) -> list[EvalRow]:
    """Per configuration, the row across all envs (the only env's row when there is one)."""
    by_config: dict[str, EvalRow] = {}
    for row in rows:
        if row.config not in by_config or row.env == "all":
            by_config[row.config] = row
    return list(by_config.values())


# -- sections ----------------------------------------------------------------------------------------


class Figures:
    """Writes each PNG into the plots dir and hands back an ``<img>`` that embeds it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def img(self, name: str, data: bytes, alt: str) -> str:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / f"{name}.png").write_bytes(data)
        encoded = base64.b64encode(data).decode("ascii")
        return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{encoded}">'


def _training_section(steps: list[dict[str, Any]] | None, figures: Figures) -> str:
    from training.plots import line_plot, series_from_log

    parts = ["<h2>Training</h2>"]
    if steps is None:
        return parts[0] + note(f"No training log ({TRAIN_LOG}) in this run directory: no training curves.")
    if not steps:
        return parts[0] + note(f"{TRAIN_LOG} holds no records yet.")
    plots = [  # (file, title, keys → labels, rates?, say so when missing?)
        ("reward", "Mean reward", {"reward_mean": "reward"}, False, True),
        ("accuracy", "Accuracy per attempt (training rollouts)", {"acc_t1": "Acc@t1", "acc_t2": "Acc@t2"},
         True, True),
        ("changes", "Answer changes (training rollouts)", {"delta_i_to_c": "Δi→c", "delta_c_to_i": "Δc→i"},
         True, False),
        ("signal", "Groups with no learning signal (all rewards equal)", {"no_signal_fraction": "no signal"},
         True, True),
        ("checks", "Quality of the checks (training rollouts)",
         {"vacuous_check_rate": "vacuous checks", "confirmatory_rate": "confirmed", "injected_fix_rate":
          "injected errors fixed"}, True, False),
        ("labelfree", "Label-free signals and answer diversity (training rollouts)",
         {"answer_diversity": "distinct answers / group", "signal_majority": "majority", "signal_self_judge":
          "self-judge", "signal_tool_check": "tool check"}, True, False),
    ]
    xs, _ = series_from_log(steps, {})
    stage2 = next((x for x, r in zip(xs, steps) if r.get("stage") == 2), None)
    marks = [(stage2, "Stage II")] if stage2 is not None and any(r.get("stage") == 1 for r in steps) else []
    for name, title, keys, unit, required in plots:
        xs, series = series_from_log(steps, keys)
        if series:
            figure = line_plot(title, xs, series, unit_interval=unit, smooth=True, marks=marks)
            parts.append(figures.img(name, figure, title))
        elif required:
            parts.append(note(f"{TRAIN_LOG} has no {' / '.join(f'<code>{k}</code>' for k in keys)} values."))
    return "\n".join(parts)


def _curve_section(points: list[dict[str, Any]] | None, figures: Figures) -> str:
    """The held-out learning curve: greedy evaluation every ``training.eval_every`` steps."""
    from training.plots import line_plot, series_from_log

    if not points:
        return ""
    xs, series = series_from_log(points, {"acc_t1": "Acc@t1", "acc_t2": "Acc@t2", "delta_i_to_c": "Δi→c",
                                          "vacuous_check_rate": "vacuous checks",
                                          "vacuous_separable_rate": "vacuous, separable"})
    title = f"Held-out learning curve (greedy, {HELDOUT_LOG})"
    return "<h2>Held-out learning curve</h2>" + figures.img("heldout", line_plot(title, xs, series,
                                                                                 unit_interval=True), title)


def _tools_section(steps: list[dict[str, Any]] | None, figures: Figures) -> str:
    from training.plots import line_plot, series_from_log

    head = "<h2>Tool use over training</h2>"
    if not steps:
        return head + note(f"No training records ({TRAIN_LOG}): no tool-use curves.")
    xs, series = series_from_log(steps, {"tool_use_rate": "runs with a tool call", "tool_error_rate": "failed calls"})
    if not series:
        return head + note(f"{TRAIN_LOG} has no <code>tool_use_rate</code> / <code>tool_error_rate</code> values.")
    return head + figures.img("tools", line_plot("Tool use", xs, series, unit_interval=True), "Tool use")


def _evaluation_section(evaluations: list[Evaluation], figures: Figures, run_dir: Path) -> str:
    from training.plots import attempt_bars, transition_matrices

    parts = ["<h2>Evaluation</h2>"]
    if not evaluations:
        return parts[0] + note("No evaluation found: expected eval_before/ and eval_after/ (each with "
                                "eval.json and trajectories.jsonl, as `anchorloop eval --out DIR` writes) "
                                "or *.jsonl trajectory files." + _how_to_evaluate(run_dir))
    labels = [e.label for e in evaluations]
    if "before" in labels and "after" not in labels:
        parts.append(note("No eval_after/ yet: showing the evaluation before training only."))
    if "after" in labels and "before" not in labels:
        parts.append(note("No eval_before/: nothing to compare the evaluation after training with."))
    for e in evaluations:
        parts += [note(html.escape(p)) for p in e.problems]
    parts.append(_metrics_table(evaluations))
    before = next((e for e in evaluations if e.label == "before"), None)
    after = next((e for e in evaluations if e.label == "after"), None)
    if before and after:
        parts.append(_change_table(before.rows, after.rows))
    if any(e.report and e.report.probes for e in evaluations):
        parts.append(_probe_table(evaluations))
    overall = [(e.label, row) for e in evaluations for row in _overall(e.rows)]
    if overall:
        name = lambda label, row: label if row.config == BASELINE else f"{label} · {row.config}"  # noqa: E731
        bars = [(name(label, r), {"Acc@t1": _triple(r.metrics.acc_t1), "Acc@t2": _triple(r.metrics.acc_t2)})
                for label, r in overall]
        parts.append(figures.img("attempts", attempt_bars(bars), "Accuracy per attempt"))
        panels = [(name(label, r), r.transitions.matrix()) for label, r in overall[:9]]
        parts.append("<h3>Transitions between attempt 1 and the last attempt</h3>")
        parts.append(figures.img("transitions", transition_matrices(panels), "Transition matrices"))
    return "\n".join(parts)


def _how_to_evaluate(run_dir: Path) -> str:
    """For a training run (its ``config.json``): the commands that evaluate it as the demo does."""
    from training.config import TrainConfig

    try:
        config = TrainConfig.model_validate_json((run_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    env, agent = config.env, config.agent
    common = [f"--env {shlex.quote(env.name)}", *(f"--env-arg {shlex.quote(f'{k}={json.dumps(v)}')}"
                                                  for k, v in env.kwargs.items()),
              *(f"--tool {shlex.quote(t)}" for t in env.tools), f"--n {env.eval_tasks}", f"--seed {env.seed}",
              f"--protocol {agent.protocol}", f"--max-turns {agent.max_turns}",
              f"--max-new-tokens {agent.max_new_tokens}", *(f"--probe {p}" for p in env.probes)]
    run = shlex.quote(str(run_dir))
    commands = [f"anchorloop eval {' '.join(common)} --model {shlex.quote(model)} --out {run}/{out}"
                for model, out in ((config.model.name, "eval_before"), (f"{run_dir}/final", "eval_after"))]
    return ("<br>This training run was not evaluated (<code>anchorloop train</code> trains only; "
            "<code>anchorloop demo</code> evaluates before and after). To evaluate it on its held-out tasks "
            "as the demo does, run:<pre>" + html.escape("\n".join([*commands, f"anchorloop report {run}"]))
            + "</pre>")


def _triple(rate: Any) -> tuple[float, float, float]:
    return (rate.value, rate.low, rate.high) if rate.n else (math.nan, math.nan, math.nan)


def _metrics_table(evaluations: list[Evaluation]) -> str:
    heads = "".join(f"<th>{h}</th>" for h in ("evaluation", "env", "config", "n", *(c for c, _ in COLUMNS), "turns",
                                                       "stopped"))
    lines = []
    for e in evaluations:
        for row in e.rows:
            cells = []
            for _, key in COLUMNS:
                value, interval = format_rate(getattr(row.metrics, key))
                cells.append(f"<td>{value}<br><small>{interval}</small></td>")
            cls = ' class="all"' if row.env == "all" else ""
            lines.append(f"<tr{cls}><td>{html.escape(e.label)}</td><td>{html.escape(row.env)}</td>"
                         f"<td>{html.escape(row.config)}</td><td>{row.metrics.n}</td>{''.join(cells)}"
                         f"<td>{row.metrics.mean_turns:.1f}</td><td>{html.escape(stops_text(row.metrics))}</td></tr>")
    meta = "".join(f"<li><b>{html.escape(e.label)}</b>: {_describe(e)}</li>" for e in evaluations)
    return (f"<ul class='meta'>{meta}</ul><table><thead><tr>{heads}</tr></thead><tbody>{''.join(lines)}"
            f"</tbody></table><p class='hint'>{html.escape(TABLE_NOTE + ' ' + SEPARABLE_NOTE)}</p>")


# which way is better for each column of the after − before table: 1 higher, -1 lower, 0 neither
# (more tool use or more confirmations is not better in itself)
BETTER = {"acc_t1": 1, "acc_t2": 1, "no_answer_rate": -1, "delta": 1, "delta_i_to_c": 1, "delta_c_to_i": -1,
          "tool_use_rate": 0, "tool_error_rate": -1, "confirmatory_rate": 0, "verification_precision": 1,
          "vacuous_check_rate": -1, "vacuous_separable_rate": -1}


def _change_table(before: list[EvalRow], after: list[EvalRow]) -> str:
    old = {(r.env, r.config): r for r in before}
    lines = []
    for row in after:
        if (prior := old.get((row.env, row.config))) is None:
            continue
        cells = []
        for _, key in COLUMNS:
            a, b = getattr(prior.metrics, key), getattr(row.metrics, key)
            diff = 100 * (b.value - a.value) if a.n and b.n else None
            cells.append(f"<td{_colour(diff, BETTER[key])}>{'–' if diff is None else f'{diff:+.1f}'}</td>")
        lines.append(f"<tr><td>{html.escape(row.env)}</td><td>{html.escape(row.config)}</td>{''.join(cells)}</tr>")
    if not lines:
        return note("The evaluations before and after share no env × configuration to compare.")
    heads = "".join(f"<th>{h}</th>" for h in ("env", "config", *(c for c, _ in COLUMNS)))
    return (f"<h3>After − before (percentage points)</h3><table><thead><tr>{heads}</tr></thead>"
            f"<tbody>{''.join(lines)}</tbody></table><p class='hint'>Green: better, red: worse (lower is "
            "better for no answer, Δc→i, tool errors and vacuous checks); tool use and confirmations are not "
            "coloured. –: not measured in one of the two.</p>")


def _colour(diff: float | None, better: int) -> str:
    """The cell class of a change of ``diff`` points where ``better`` says which way is better (1 up, -1 down,
    0 neither): good, bad, or none for no change (under 0.05 points) or nothing to compare."""
    signed = 0 if diff is None or abs(diff) < 0.05 else better * diff
    return " class='good'" if signed > 0 else " class='bad'" if signed < 0 else ""


# the probe's columns, and which way is better: a higher fix rate, fewer false alarms and vacuous checks
PROBE_COLUMNS = (("fix", "fix_rate", 1), ("false alarm", "false_alarm_rate", -1), ("vacuous", "vacuous_check_rate", -1))


def _probe_table(evaluations: list[Evaluation]) -> str:
    """Each evaluation's injected-error probes per env; after training, each rate coloured against before."""
    results = {(e.label, p.env, p.probe): p for e in evaluations if e.report for p in e.report.probes}
    lines = []
    for (label, env, probe), p in results.items():
        prior = results.get(("before", env, probe)) if label == "after" else None
        cells = []
        for _, key, better in PROBE_COLUMNS:
            rate = getattr(p, key)
            value, interval = format_rate(rate)
            old = getattr(prior, key) if prior else None
            diff = 100 * (rate.value - old.value) if old is not None and old.n and rate.n else None
            cells.append(f"<td{_colour(diff, better)}>{value}<br><small>{interval}</small></td>")
        lines.append(f"<tr><td>{html.escape(label)}</td><td>{html.escape(env)}</td><td>{html.escape(probe)}</td>"
                     f"<td>{p.injected}</td>"
                     f"<td>{p.skipped}</td>{''.join(cells)}</tr>")
    names = ("evaluation", "env", "probe", "injected", "skipped", *(c for c, _, _ in PROBE_COLUMNS))
    heads = "".join(f"<th>{h}</th>" for h in names)
    return (f"<h3>Injected-error probes</h3><table><thead><tr>{heads}</tr></thead><tbody>{''.join(lines)}"
            "</tbody></table><p class='hint'>fix: injected wrong first attempts the verify step made right; false "
            "alarm: right first attempts it made wrong; vacuous: checks that computed nothing new (on the injected "
            "runs). After training, green is better than before and red worse.</p>")


def _describe(e: Evaluation) -> str:
    if e.report is None:
        return html.escape(str(e.source))
    r = e.report
    configs = ", ".join(c.name for c in r.configs)
    return html.escape(f"{r.model or 'model ?'} · envs {', '.join(r.envs)} · split {r.split} · n {r.n or 'all'} · "
                       f"seed {r.seed} · configurations {configs} · {r.created}")


def _overview(run_dir: Path, steps: list[dict[str, Any]] | None, evaluations: list[Evaluation]) -> str:
    found = [f"{len(steps)} training steps" if steps else f"no {TRAIN_LOG}"]
    found += [f"evaluation “{e.label}” ({sum(map(len, e.trajectories.values()))} trajectories)" for e in evaluations]
    when = datetime.now().strftime("%Y-%m-%d %H:%M")
    return (f"<h1>anchorloop report · {html.escape(run_dir.resolve().name)}</h1>"
            f"<p class='hint'>{html.escape(str(run_dir.resolve()))} · written {when} · "
            f"{html.escape('; '.join(found))}</p>")


# -- trajectories ------------------------------------------------------------------------------------

def _trajectories_section(evaluations: list[Evaluation], sample: int) -> str:
    head = "<h2>Trajectories</h2>"
    groups = [(e.label, config, ts) for e in evaluations for config, ts in e.trajectories.items() if ts]
    if not groups:
        return head + note("No trajectories to show.")
    parts = [head, "<p class='hint'>A sample per evaluation: changed answers first, then the rest. "
             "Click a run to open it.</p>"]
    for e in evaluations:
        configs = [(c, ts) for c, ts in e.trajectories.items() if ts]
        share = max(1, sample // max(len(configs), 1))
        for config, trajectories in configs:
            chosen = sorted(trajectories, key=lambda t: PRIORITY[outcome(t)[1]])[:share]
            title = e.label if config == BASELINE else f"{e.label} · {config}"
            parts.append(f"<h3>{html.escape(title)} <small>({len(chosen)} of {len(trajectories)})</small></h3>")
            parts += [trajectory_html(t) for t in chosen]
    return "\n".join(parts)



def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
