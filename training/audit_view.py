"""Showing an audit: the rich tables on the terminal and the PNG beside ``audit.json``."""

from __future__ import annotations

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
