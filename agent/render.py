"""Showing agent messages to people: question, model turns, tool calls, observations, verify steps."""

from __future__ import annotations

from typing import Any

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
    if message.get("injected"):  # written for the model (the injected-error probe), not by it
        label += " (given)"
    text = Text(f"{label}: ", style=f"bold {style}")
    text.append(str(message.get("content", "")).rstrip(), style=style if role != "assistant" else "")
    return text
