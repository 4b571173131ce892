"""The report's figures, as PNG bytes. Figures are built on matplotlib's object API with the Agg
canvas, so nothing here touches pyplot's global state or needs a display."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

Series = dict[str, list[float]]  # label → values, NaN where a step did not log the key
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]


def series_from_log(records: Sequence[dict[str, Any]], keys: dict[str, str]) -> tuple[list[float], Series]:
    """Steps (a record's ``step``, else its index) and one series per ``key → label`` that has any value.

    Values that are missing or not numbers become NaN, which the plots draw as gaps.
    """
    steps = [as_number(r.get("step", i)) for i, r in enumerate(records)]
    steps = [float(i) if math.isnan(x) else x for i, x in enumerate(steps)]
    series = {label: [as_number(r.get(key)) for r in records] for key, label in keys.items()}
    return steps, {label: ys for label, ys in series.items() if not all(math.isnan(y) for y in ys)}


def as_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    return float(value)


def png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight", facecolor="white")
    return buffer.getvalue()


def line_plot(title: str, steps: Sequence[float], series: Series, **options: Any) -> bytes:
    """``line_figure`` as PNG bytes."""
    return png(line_figure(title, steps, series, **options))


def line_figure(title: str, steps: Sequence[float], series: Series, *, ylabel: str = "",
                unit_interval: bool = False, smooth: bool = False,
                marks: Sequence[tuple[float, str]] = ()) -> Figure:
    """One line per series over training steps (whole-number ticks); gaps where a step did not log the value.

    ``smooth`` adds a moving average (window ≈ 1/10 of the run) over each noisy raw line;
    ``marks`` draws labelled vertical lines (e.g. where Stage II begins).
    """
    fig = Figure(figsize=(6.4, 3.4))
    ax = fig.add_subplot()
    for colour, (label, values) in zip(COLOURS, series.items()):
        marker = "o" if len(values) <= 30 else None
        if smooth and len(values) >= 20:
            ax.plot(steps, values, color=colour, alpha=0.3, linewidth=1)
            ax.plot(steps, moving_average(values, max(3, len(values) // 10)), color=colour, label=label)
        else:
            ax.plot(steps, values, color=colour, marker=marker, markersize=3, label=label)
    for x, label in marks:
        ax.axvline(x, color="grey", linestyle="--", linewidth=1)
        ax.annotate(label, (x, 1), xycoords=("data", "axes fraction"), xytext=(3, -12),
                    textcoords="offset points", fontsize=8, color="grey")
    ax.set_title(title, loc="left", fontsize=11)
    ax.set_xlabel("training step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
    ax.set_ylabel(ylabel)
    if unit_interval:
        ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=9)
    return fig


def moving_average(values: Sequence[float], window: int) -> list[float]:
    """Trailing mean over the last ``window`` logged values (missing ones skipped)."""
    out = []
    for i in range(len(values)):
        seen = [v for v in values[max(0, i - window + 1): i + 1] if not math.isnan(v)]
        out.append(sum(seen) / len(seen) if seen else math.nan)
    return out


def transition_matrices(panels: Sequence[tuple[str, list[list[int]]]]) -> bytes:
    """2×2 heatmaps side by side: rows attempt 1 right/wrong, columns last attempt right/wrong."""
    cols = min(len(panels), 3)
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(3.3 * cols, 3.1 * rows))
    for k, (title, matrix) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, k + 1)
        total = sum(map(sum, matrix)) or 1
        ax.imshow([[v / total for v in row] for row in matrix], cmap="Blues", vmin=0, vmax=1)
        for i in range(2):
            for j in range(2):
                share = matrix[i][j] / total
                ax.text(j, i, f"{matrix[i][j]}\n{100 * share:.0f}%", ha="center", va="center",
                        fontsize=10, color="white" if share > 0.55 else "black")
        ax.set_xticks([0, 1], ["right", "wrong"])
        ax.set_yticks([0, 1], ["right", "wrong"])
        ax.set_xlabel("last attempt")
        ax.set_ylabel("attempt 1")
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return png(fig)


def attempt_bars(groups: Sequence[tuple[str, dict[str, tuple[float, float, float]]]], *,
                 title: str = "Accuracy per attempt (95% CI)", ylabel: str = "accuracy",
                 reference: tuple[float, str] | None = None) -> bytes:
    """Rates with 95% intervals, grouped: ``groups`` = [(label, {"Acc@t1": (value, low, high), …})], by default
    accuracy per attempt. ``reference`` draws a labelled horizontal line (a base rate to beat)."""
    names = list(dict.fromkeys(name for _, bars in groups for name in bars))
    width = 0.8 / max(len(names), 1)
    fig = Figure(figsize=(max(4.0, 1.2 * len(groups) + 2), 3.4))
    ax = fig.add_subplot()
    for b, (name, colour) in enumerate(zip(names, COLOURS)):
        xs = [g + (b - (len(names) - 1) / 2) * width for g in range(len(groups))]
        stats = [bars.get(name, (math.nan, math.nan, math.nan)) for _, bars in groups]
        values = [v for v, _, _ in stats]
        # rounding can put a bound a hair past its value (Wilson's low end at a rate of 0)
        errors = [[max(v - lo, 0.0) for v, lo, _ in stats], [max(hi - v, 0.0) for v, _, hi in stats]]
        ax.bar(xs, values, width, yerr=errors, capsize=3, color=colour, label=name)
    ax.set_xticks(range(len(groups)), [label for label, _ in groups], fontsize=8, rotation=15)
    if reference is not None:
        ax.axhline(reference[0], color="grey", linestyle="--", linewidth=1, label=reference[1])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(ylabel)
    ax.set_title(title, loc="left", fontsize=11)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(frameon=False, fontsize=9)
    return png(fig)
