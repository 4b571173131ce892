"""Progress bars that also show in a log file.

On a terminal rich draws a live bar. Elsewhere (``nohup``, CI, a pipe into ``tee``) a live bar draws
nothing until the work ends, so :class:`Progress` prints a plain line each time another tenth is done
(rich prints the finished bar itself):

    eval · arithmetic: 64/128 (50%) 41 right · 3:12 elapsed
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from rich import progress as rich_progress
from rich.progress import TaskID

STEPS = 10  # lines per task where there is no terminal


class Progress(rich_progress.Progress):
    """``rich.progress.Progress``, plus a line per tenth of each task where the console is not a terminal."""

    def __init__(self, *columns: Any, **kwargs: Any) -> None:
        super().__init__(*columns, **kwargs)
        self._logged: dict[TaskID, int] = {}

    def update(self, task_id: TaskID, **kwargs: Any) -> None:
        super().update(task_id, **kwargs)
        self._log(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._log(task_id)

    def _log(self, task_id: TaskID) -> None:
        if self.console.is_terminal or self.console.is_jupyter:  # a live bar (or widget) shows it
            return
        task = next(t for t in self.tasks if t.id == task_id)
        if not task.total:
            return
        step = int(STEPS * min(task.completed, task.total) / task.total)
        if step <= self._logged.get(task_id, 0) or step == STEPS:  # the whole: rich prints the bar as it stops
            return
        self._logged[task_id] = step
        done = f"{task.completed:.0f}/{task.total:.0f} ({100 * task.completed / task.total:.0f}%)"
        shown = [f"{task.description}: {done}",
                 *(str(v) for v in task.fields.values() if str(v)),
                 f"· {timedelta(seconds=int(task.elapsed or 0))} elapsed"]
        self.console.print(" ".join(shown), markup=False, highlight=False)
