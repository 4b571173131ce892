"""Showing an audit: the rich tables on the terminal and the PNG beside ``audit.json``."""

from __future__ import annotations

import html
from collections.abc import Callable
from pathlib import Path

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from training.audit import AuditReport
from training.eval import format_rate
from training.metrics import Rate
from training.plots import attempt_bars


def _rate(rate: Rate) -> Text:
    value, interval = format_rate(rate)
    return Text(value).append(f"\n{interval}" if interval else "", style="dim")


def audit_table(report: AuditReport) -> Group:
    """One row per signal (precision, recall, AUROC, cost), then the judge's habits when it was audited."""
    base, confirmed = format_rate(report.accuracy), format_rate(report.confirmatory_rate)[0]
    table = Table(title=f"label-free signals vs the answer key · {report.env} · {report.model or 'model'}",
                  title_justify="left", box=box.SIMPLE_HEAD, show_lines=True, pad_edge=False,
                  caption=f"{report.runs} runs ({report.n} tasks × {report.generations}); right: {base[0]}% "
                  f"[{base[1]}] (the precision of paying every run); confirmatory verify steps: "
                  f"{confirmed}{'%' if confirmed != '–' else ' (no verify step)'}. Rates in %, 95% Wilson interval "
                  "underneath. "
                  f"Cost: extra model calls (judge generations, belief forward passes) and seconds, beside the "
                  f"runs' own {report.rollout_turns} turns in {report.rollout_seconds:.1f} s.",
                  caption_justify="left")
    for header in ("signal", "says right when", "precision", "recall", "AUROC", "paid", "calls", "seconds"):
        table.add_column(header, justify="left" if header in ("signal", "says right when") else "right")
    for a in report.audits:
        table.add_row(Text(a.signal, style="bold"), a.says_right_when, _rate(a.precision), _rate(a.recall),
                      "–" if a.auroc is None else f"{a.auroc:.2f}", f"{a.says_right}/{a.n}", str(a.cost.calls),
                      f"{a.cost.seconds:.1f}")
    if report.judge is None:
        return Group(table)
    judge = Table(title="self-judge habits", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
                  caption=f"{report.judge.pairs} pairs of distinct answers, each judged in both orders. wrong > "
                  "right: replies (pairs) preferring a wrong answer over a right one; commoner: consistent "
                  "verdicts for the answer the group wrote more often; first: replies choosing the answer shown "
                  "first (50 = no position bias); no verdict: replies naming neither letter or both.",
                  caption_justify="left")
    bias = report.judge
    columns = [("consistent", bias.consistency), ("wrong > right", bias.wrong_over_right),
               ("wrong > right (pairs)", bias.wrong_over_right_pairs), ("commoner", bias.prefers_common),
               ("first", bias.first_position), ("no verdict", bias.unparsed)]
    for header, _ in columns:
        judge.add_column(header, justify="right")
    judge.add_row(*(_rate(rate) for _, rate in columns))
    return Group(table, judge)


def audit_plot(report: AuditReport) -> bytes:
    """Precision and recall per signal with their intervals, against the share of right runs."""
    groups = [(a.signal, {"precision": (a.precision.value, a.precision.low, a.precision.high),
                          "recall": (a.recall.value, a.recall.low, a.recall.high)}) for a in report.audits]
    return attempt_bars(groups, title=f"Label-free signals vs the answer key: {report.env} (95% CI)", ylabel="rate",
                        reference=(report.accuracy.value, "share of right runs"))


def audit_section(run_dir: Path, img: Callable[[str, bytes, str], str]) -> str:
    """The report page's section on the audits in ``run_dir`` (its own ``audit.json`` or ``audit*/``);
    empty when there is none. ``img(name, png, alt)`` embeds a figure."""
    from training.audit import AUDIT_FILE

    paths = ([run_dir / AUDIT_FILE] if (run_dir / AUDIT_FILE).is_file() else []) + sorted(
        d / AUDIT_FILE for d in run_dir.glob("audit*") if (d / AUDIT_FILE).is_file())
    if not paths:
        return ""
    parts = ["<h2>Label-free signals vs the answer key (audit)</h2>"]
    for path in paths:
        try:
            report = AuditReport.load(path)
        except ValueError as exc:
            parts.append(f"<p class='note'>{html.escape(str(path))} could not be read ({html.escape(str(exc))[:200]})"
                         "</p>")
            continue
        rows = "".join(
            f"<tr><td>{html.escape(a.signal)}</td><td>{html.escape(a.says_right_when)}</td><td>{a.precision}</td>"
            f"<td>{a.recall}</td><td>{'–' if a.auroc is None else f'{a.auroc:.2f}'}</td>"
            f"<td>{a.says_right}/{a.n}</td><td>{a.cost.calls}</td><td>{a.cost.seconds:.1f}</td></tr>"
            for a in report.audits)
        parts.append(
            f"<p>{html.escape(str(path.parent))}: {report.env}, {report.runs} runs ({report.n} tasks × "
            f"{report.generations}), right {report.accuracy}.</p><table><tr><th>signal</th><th>says right when</th>"
            f"<th>precision</th><th>recall</th><th>AUROC</th><th>paid</th><th>calls</th><th>seconds</th></tr>{rows}"
            "</table>")
        if report.judge is not None:
            j = report.judge
            parts.append(f"<p>self-judge over {j.pairs} pairs: consistent {j.consistency}; wrong over right "
                         f"{j.wrong_over_right}; commoner answer {j.prefers_common}; first position "
                         f"{j.first_position}; no verdict {j.unparsed}.</p>")
        parts.append(img(f"audit-{path.parent.name}", audit_plot(report), "label-free signals vs the answer key"))
    return "\n".join(parts)
