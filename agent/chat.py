"""Interactive sessions: the agent in a terminal, streamed, persisted, resumable.

Every session is a LangGraph thread stored by the SQLite checkpointer, so ``anchorloop chat
--resume ID`` continues a conversation even after the process was killed. Model text streams as it
is generated; tool calls, observations and the verify step are shown as they happen.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.panel import Panel
from rich.text import Text

from agent.render import message_text

HELP = "Commands: /new (new session), /history, /tools, /help, /exit. Anything else is a question."


class ChatSession:
    def __init__(self, agent: Any, tools: list[Any], console: Console, session_id: str | None = None) -> None:
        self.agent = agent
        self.tools = tools
        self.console = console
        self.session_id = session_id or uuid.uuid4().hex[:8]

    @property
    def config(self) -> dict:
        return {"configurable": {"thread_id": self.session_id, "stream_tokens": True}}

    async def history(self) -> list[dict]:
        snapshot = await self.agent.aget_state(self.config)
        return list(snapshot.values.get("messages", [])) if snapshot and snapshot.values else []

    async def ask(self, question: str) -> dict:
        """Run one question through the graph, printing as it goes; returns the final state."""
        streaming = False
        async for mode, chunk in self.agent.astream({"question": question}, self.config,
                                                    stream_mode=["custom", "updates"]):
            if mode == "custom":
                if not streaming:
                    self.console.print(Text("Model: ", style="bold"), end="")
                    streaming = True
                self.console.print(chunk["token"], end="", markup=False, highlight=False, soft_wrap=True)
                continue
            for node, update in chunk.items():
                if streaming and node == "generate":
                    self.console.print()
                    streaming = False
                self._show(node, update or {})
        snapshot = await self.agent.aget_state(self.config)
        return snapshot.values

    def _show(self, node: str, update: dict) -> None:
        if node in ("run_tools", "correct_format", "ask_to_verify"):
            for message in update.get("messages", []):
                self.console.print(Panel(message_text(message), border_style="yellow" if node == "run_tools"
                                         else "magenta", expand=False))
        elif node == "record_answer":
            attempts = update.get("attempts", [])
            label = "Answer" if len(attempts) == 1 else "Answer after checking"
            self.console.print(Text(f"{label}: {attempts[-1]['answer']}", style="bold green"))
        elif node == "out_of_turns":
            self.console.print(Text("(stopped: turn limit reached)", style="red"))

    async def loop(self, stdin: TextIO) -> None:
        self.console.print(f"Session [bold]{self.session_id}[/] — resume later with "
                           f"`anchorloop chat --resume {self.session_id}`. {HELP}")
        past = await self.history()
        if past:
            self.console.print(f"(resumed: {len(past)} messages so far; /history shows them)")
        while True:
            self.console.print(Text("you> ", style="bold cyan"), end="")
            line = await asyncio.to_thread(stdin.readline)
            if not line:  # end of input
                self.console.print()
                return
            text = line.strip()
            if not text:
                continue
            if text == "/exit":
                return
            if text == "/help":
                self.console.print(HELP)
            elif text == "/new":
                self.session_id = uuid.uuid4().hex[:8]
                self.console.print(f"New session [bold]{self.session_id}[/].")
            elif text == "/tools":
                for t in self.tools:
                    self.console.print(f"[bold]{t.name}[/]: {t.description}")
            elif text == "/history":
                for message in await self.history():
                    self.console.print(message_text(message))
            elif text.startswith("/"):
                self.console.print(f"Unknown command {text}. {HELP}")
            else:
                await self.ask(text)


async def run_chat(policy: Any, tools: list[Any], *, db: Path, session_id: str | None, console: Console,
                   stdin: TextIO = sys.stdin, **agent_kwargs: Any) -> str:
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    from agent.graph import build_agent

    db.parent.mkdir(parents=True, exist_ok=True)
    async with AsyncSqliteSaver.from_conn_string(str(db)) as saver:
        agent = build_agent(policy, tools, checkpointer=saver, **agent_kwargs)
        session = ChatSession(agent, tools, console, session_id)
        await session.loop(stdin)
    return session.session_id
