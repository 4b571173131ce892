"""Showing trajectories to people: every message, then the attempts with their scores."""

from __future__ import annotations

from rich.console import Console, Group
from rich.panel import Panel
from rich.text import Text

from agent.render import message_text
from training.trajectory import Trajectory


def trajectory_panel(traj: Trajectory, index: int | None = None) -> Panel:
    body = [message_text(m) for m in traj.messages]
    answers = " → ".join(
        f"{a.answer!r} ({'✓' if a.right else '✗'} {a.score if a.score is not None else '?'})"
        for a in traj.attempts
    ) or "(no answer)"
    footer = Text(
        f"attempts: {answers}   turns: {traj.turns}   tool calls: {traj.tool_calls} "
        f"({traj.tool_errors} failed)   stop: {traj.stop_reason}   {traj.timings.total_s:.1f} s",
        style="bold",
    )
    title = f"[{index}] {traj.env}/{traj.task_id}" if index is not None else f"{traj.env}/{traj.task_id}"
    return Panel(Group(*body, footer), title=title, title_align="left")


def print_trajectories(trajectories: list[Trajectory], console: Console | None = None) -> None:
    console = console or Console()
    for i, traj in enumerate(trajectories):
        console.print(trajectory_panel(traj, i))
