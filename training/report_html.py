"""The HTML pieces of the report page: trajectories as collapsible transcripts, and the page's shell."""

from __future__ import annotations

import html
import json
import re
from typing import Any

from training.trajectory import Trajectory

KINDS = {(True, True): ("right → right", "rr"), (True, False): ("right → wrong", "rw"),
         (False, True): ("wrong → right", "wr"), (False, False): ("wrong → wrong", "ww")}
PRIORITY = {"wr": 0, "rw": 1, "ww": 2, "na": 3, "rr": 4}
ROLE_LABELS = {"user": "question", "assistant": "model", "tool": "tool", "verify": "verify request",
               "feedback": "format feedback"}
ACTION = re.compile(r"(<tool_call>.*?</tool_call>|```.*?```)", re.DOTALL)


def outcome(t: Trajectory) -> tuple[str, str]:
    if not t.attempts:  # not the same as a wrong answer: the run never gave one
        return "no answer", "na"
    right = [a.right for a in t.attempts]
    return KINDS[right[0], right[-1]]


def trajectory_html(t: Trajectory) -> str:
    label, cls = outcome(t)
    answers = " → ".join(f"{a.answer!r} {'✓' if a.right else '✗'}" for a in t.attempts)
    summary = (f"<span class='badge {cls}'>{label}</span> {html.escape(f'{t.env}/{t.task_id}')} · "
               f"{html.escape(answers or '(no answer)')} · turns {t.turns} · tool calls {t.tool_calls}")
    messages = "".join(message_html(m) for m in t.messages) or note("(no messages recorded)")
    foot = html.escape(f"stop: {t.stop_reason or '?'} · {t.tool_errors} tool errors · {t.parse_errors} "
                       f"parse errors · {t.num_model_tokens} model tokens · {t.timings.total_s:.1f} s")
    return f"<details><summary>{summary}</summary>{messages}<p class='hint'>{foot}</p></details>"


def message_html(message: dict[str, Any]) -> str:
    role = str(message.get("role", "?"))
    label = ROLE_LABELS.get(role, role)
    if role == "tool":
        args = json.dumps(message.get("arguments", {}), ensure_ascii=False)
        label = f"{message.get('name', 'tool')}({args})" + (" ✗ error" if message.get("error") else "")
    content = str(message.get("content", ""))
    body = highlight_actions(content) if role == "assistant" else html.escape(content)
    error = " error" if message.get("error") else ""
    css_role = role if role in ROLE_LABELS else "other"
    return (f"<div class='msg {css_role}{error}'><div class='role'>{html.escape(label)}</div>"
            f"<pre>{body}</pre></div>")


def highlight_actions(text: str) -> str:
    """Escape the model's text, marking the tool calls and code blocks in it."""
    pieces = ACTION.split(text)
    return "".join(f"<span class='call'>{html.escape(p)}</span>" if i % 2 else html.escape(p)
                   for i, p in enumerate(pieces))


def note(text: str) -> str:
    return f"<p class='note'>{text}</p>"


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title><style>{css}</style></head>
<body>
{body}
</body></html>
"""
CSS = """
body { font: 14px/1.45 system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 2em; }
img { max-width: 100%; display: block; margin: .8em 0; } small { color: #777; } summary { cursor: pointer; }
table { border-collapse: collapse; font-size: 12.5px; margin: .6em 0; } th { background: #f4f4f4; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: right; } td:nth-child(-n+3) { text-align: left; }
tr.all { font-weight: 600; background: #fafafa; } td.good { color: #1a7f37; } td.bad { color: #c62828; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: .4em .8em; } .hint, .meta { color: #666; }
details { border: 1px solid #ddd; border-radius: 4px; margin: .4em 0; padding: .3em .6em; }
.badge { font-size: 11px; padding: 1px 6px; border-radius: 8px; color: white; }
.badge.wr { background: #1a7f37; } .badge.rw { background: #c62828; } .badge.rr { background: #6b8e6b; }
.badge.ww { background: #8d6e63; } .badge.na { background: #9e9e9e; }
.msg { margin: .4em 0; border-left: 4px solid #bbb; padding: .2em .6em; }
.msg .role { font-size: 11px; text-transform: uppercase; color: #555; font-weight: 600; }
.msg pre { margin: .2em 0; white-space: pre-wrap; word-break: break-word; font-size: 12.5px; }
.msg.user { border-color: #0288d1; background: #f1f8fd; } .msg.assistant { border-color: #555; }
.msg.tool { border-color: #f0b400; background: #fffbea; } .msg.verify { border-color: #8e24aa; background: #f7eefa; }
.msg.tool.error, .msg.feedback { border-color: #c62828; background: #fdecea; }
.call { background: #fff3c4; outline: 1px solid #f0d264; }
"""
