"""Showing trajectories to people: question, model turns, tool calls, observations, answers, scores."""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group
from rich.panel import Panel
from rich.text import Text

STYLES = {
    "user": ("Question", "bold cyan"),
    "assistant": ("Model", "white"),
    "tool": ("Tool", "yellow"),
    "verify": ("Verify", "magenta"),
    "feedback": ("Format feedback", "red"),
}


def message_text(message: dict[str, Any]) -> Text:
    role = message.get("role", "?")
    label, style = STYLES.get(role, (role, "white"))
    if role == "tool":
        name = message.get("name", "tool")
        label = f"{name} ✗" if message.get("error") else name
    text = Text(f"{label}: ", style=f"bold {style}")
    text.append(str(message.get("content", "")).rstrip(), style=style if role != "assistant" else "")
    return text


def trajectory_panel(traj: Any, index: int | None = None) -> Panel:
    body = [message_text(m) for m in traj.messages]
    answers = " → ".join(
        f"{a.answer!r} ({'✓' if (a.score or 0) >= 1 else '✗'} {a.score if a.score is not None else '?'})"
        for a in traj.attempts
    ) or "(no answer)"
    footer = Text(
        f"attempts: {answers}   turns: {traj.turns}   tool calls: {traj.tool_calls} "
        f"({traj.tool_errors} failed)   stop: {traj.stop_reason}   {traj.timings.total_s:.1f} s",
        style="bold",
    )
    title = f"[{index}] {traj.env}/{traj.task_id}" if index is not None else f"{traj.env}/{traj.task_id}"
    return Panel(Group(*body, footer), title=title, title_align="left")


def print_trajectories(trajectories: list[Any], console: Console | None = None) -> None:
    console = console or Console()
    for i, traj in enumerate(trajectories):
        console.print(trajectory_panel(traj, i))
