"""Progress bars where there is no terminal: a line per tenth of the work, not silence until the end."""

from __future__ import annotations

import io
import re

from rich.console import Console

from training.runner import progress_bar

LINE = re.compile(r"^rollouts: (\d+)/20 \((\d+)%\) (\d+) right · 0:00:0\d elapsed$")


def run_bar(console: Console) -> None:
    with progress_bar(console) as progress:
        bar = progress.add_task("rollouts", total=20, status="")
        for i in range(1, 21):
            progress.update(bar, advance=1, status=f"{i // 2} right")


def test_a_log_file_gets_a_line_at_each_tenth_of_the_work():
    out = io.StringIO()
    run_bar(Console(file=out, width=200))  # a file is not a terminal
    lines = [m.groups() for line in out.getvalue().splitlines() if (m := LINE.match(line))]
    assert lines == [(str(2 * k), str(10 * k), str(k)) for k in range(1, 10)]
    finished = [line for line in out.getvalue().splitlines() if "20/20" in line]
    assert len(finished) == 1 and re.search(r"20/20 10 right \d:\d\d:\d\d$", finished[0])  # rich's own, once


def test_a_terminal_gets_the_live_bar_and_no_log_lines():
    out = io.StringIO()
    run_bar(Console(file=out, width=200, force_terminal=True))
    text = out.getvalue()
    assert "20/20" in text and "\x1b[" in text  # the bar, drawn with terminal codes
    assert not any(LINE.match(line) for line in text.splitlines())


def test_a_task_without_a_total_prints_no_lines():
    out = io.StringIO()
    with progress_bar(Console(file=out, width=200)) as progress:
        bar = progress.add_task("open-ended", total=None, status="")
        progress.advance(bar, 5)
    assert "open-ended: " not in out.getvalue()
