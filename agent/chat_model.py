"""``PolicyChatModel``: any ``Policy`` as a LangChain chat model, so any LangGraph graph yields exact trajectories.

The model reads tool calls and final answers with our action protocols (``json``, ``code``) and puts the
tool schemas in the system prompt as our own graph does. Every call is recorded in ``model.recorder``: the
prompt ids it rendered, the ids it sampled and their log-probs, under a run key (see ``TrajectoryRecorder``).

Prompts are built the way ``agent.graph`` builds them. When the messages a call is given are those of an
earlier call, then that call's reply unchanged, then new messages (tool results, a user turn), the prompt is
the earlier prompt + the ids it sampled + the new messages rendered as a delta: the model's own tokens are
never re-tokenized. Any other history (trimmed, summarized, rewritten) is rendered afresh.

Rows for training are then made from the ids alone, not from the messages: a call joins a row when its prompt
starts with that row's prompt + completion (the longest such row), the ids in between being inserted
(``env_mask`` 0); otherwise it starts a new row. A growing history is one row; a rewritten one is split into
several, each exact. A call whose backend says its ids or log-probs are not the sampled ones (an OpenAI-style
server that re-tokenized its text) flags its row ``exact=False``, and ``trajectories()`` leaves it out.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import threading
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables.config import ensure_config
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field, PrivateAttr

from agent.chat_format import ChatFormat
from agent.policy import Generation, SamplingParams
from agent.protocols import Action, get_protocol
from agent.sync import run_sync
from tools.base import Tool, safe_text

_RUN: contextvars.ContextVar[str | None] = contextvars.ContextVar("anchorloop_run", default=None)
_EXACT_KEYS = ("token_ids_exact", "logprobs_exact", "prompt_exact")  # Generation.metadata flags


@dataclass
class PolicyCall:
    """One model call: what the policy was given and what it sampled."""

    call_id: str
    run: str
    prompt_ids: list[int]
    completion_ids: list[int]
    logprobs: list[float]
    text: str  # the sampled text, as the backend decoded it
    finish_reason: str
    content: str  # the AIMessage content returned for it
    tool_calls: list[dict]  # [{"name", "args"}] as parsed
    error: str | None  # the protocol's complaint, when the reply was neither a call nor an answer
    exact: bool  # the backend vouches that these are the ids it saw and sampled, with their log-probs
    continues: str | None  # the call whose sampled ids this prompt extends; None: rendered afresh
    context: str = field(repr=False, default="")  # the rendered messages and tools, as a key


@dataclass
class Row:
    """One exact training row: ``prompt_ids + completion_ids`` is what the policy saw and sampled."""

    prompt_ids: list[int]
    completion_ids: list[int] = field(default_factory=list)
    env_mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    calls: list[PolicyCall] = field(default_factory=list)
    spans: list[tuple[int, int]] = field(default_factory=list)  # each call's sampled ids in completion_ids

    @property
    def exact(self) -> bool:
        return all(c.exact for c in self.calls)

    def add(self, call: PolicyCall, inserted: list[int]) -> None:
        self.completion_ids += inserted
        self.env_mask += [0] * len(inserted)
        self.logprobs += [0.0] * len(inserted)
        start = len(self.completion_ids)
        self.completion_ids += call.completion_ids
        self.env_mask += [1] * len(call.completion_ids)
        self.logprobs += call.logprobs
        self.spans.append((start, len(self.completion_ids)))
        self.calls.append(call)

    def trajectory(self, *, task_id: str, env: str = "", question: str = "", group: int = 0) -> Any:
        """This row as the trainer's ``training.trajectory.Trajectory`` (no attempts: score it yourself)."""
        from training.trajectory import Trajectory, TurnSpan

        last = self.calls[-1]
        return Trajectory(
            task_id=task_id, env=env, question=question, group=group,
            prompt_ids=list(self.prompt_ids), completion_ids=list(self.completion_ids),
            env_mask=list(self.env_mask), logprobs=list(self.logprobs),
            messages=[{"role": "assistant", "content": c.text} for c in self.calls],
            turns=len(self.calls), tool_calls=sum(len(c.tool_calls) for c in self.calls),
            parse_errors=sum(c.error is not None for c in self.calls),
            stop_reason="tool_calls" if last.tool_calls else "error" if last.error else "answered",
            turn_spans=[TurnSpan(start=s, end=e, attempt=0) for s, e in self.spans],
        )


def rows_of(calls: Sequence[PolicyCall]) -> list[Row]:
    """Exact rows from calls in the order they were made, by token prefixes alone (see the module doc)."""
    rows: list[Row] = []
    for call in calls:
        best, best_len = None, -1
        for row in rows:
            n = len(row.prompt_ids) + len(row.completion_ids)
            if n > best_len and n <= len(call.prompt_ids) and \
                    call.prompt_ids[: len(row.prompt_ids)] == row.prompt_ids and \
                    call.prompt_ids[len(row.prompt_ids) : n] == row.completion_ids:
                best, best_len = row, n
        if best is None:
            best = Row(prompt_ids=list(call.prompt_ids))
            rows.append(best)
            best.add(call, [])
        else:
            best.add(call, call.prompt_ids[best_len:])
    return rows


class TrajectoryRecorder:
    """The calls of a ``PolicyChatModel``, by run.

    A call's run is, first found: the key of the innermost ``with recorder.run(key)`` around it (a context
    variable, so concurrent ``asyncio`` tasks each keep their own); the ``anchorloop_run`` key of the
    LangChain config's metadata; LangGraph's ``thread_id``; else ``"default"``. Keys only group calls: rows
    are made by token prefixes, so calls of two runs under one key still give exact rows (but one list).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[str, list[PolicyCall]] = {}
        self._by_context: dict[str, list[PolicyCall]] = {}

    @contextlib.contextmanager
    def run(self, key: str | None = None) -> Iterator[str]:
        """Record the calls made inside under ``key`` (a fresh one by default), which it yields."""
        key = key or uuid.uuid4().hex
        token = _RUN.set(key)
        try:
            yield key
        finally:
            _RUN.reset(token)

    def record(self, call: PolicyCall) -> None:
        with self._lock:
            self._runs.setdefault(call.run, []).append(call)
            self._by_context.setdefault(call.context, []).append(call)

    def runs(self) -> list[str]:
        with self._lock:
            return list(self._runs)

    def calls(self, run: str) -> list[PolicyCall]:
        with self._lock:
            return list(self._runs.get(run, []))

    def rows(self, run: str) -> list[Row]:
        return rows_of(self.calls(run))

    def trajectories(self, run: str, *, task_id: str | None = None, env: str = "", question: str = "",
                     group: int = 0, exact_only: bool = True) -> list[Any]:
        """The run's rows as ``Trajectory`` records (task ids ``task_id#i``); rows flagged inexact are left
        out unless ``exact_only=False``."""
        rows = [r for r in self.rows(run) if r.exact or not exact_only]
        return [r.trajectory(task_id=f"{task_id or run}#{i}", env=env, question=question, group=group)
                for i, r in enumerate(rows)]

    def pop(self, run: str) -> list[PolicyCall]:
        """Forget a run (its calls are returned); later calls continuing it are rendered afresh."""
        with self._lock:
            calls = self._runs.pop(run, [])
            for call in calls:
                same = self._by_context.get(call.context, [])
                if call in same:
                    same.remove(call)
                if not same:
                    self._by_context.pop(call.context, None)
            return calls

    def candidates(self, context: str) -> list[PolicyCall]:
        with self._lock:
            return list(self._by_context.get(context, []))


class PolicyChatModel(BaseChatModel):
    """A LangChain chat model that samples from an anchorloop ``Policy`` and records every call exactly.

    ``PolicyChatModel(policy, protocol="json", sampling=SamplingParams(...))``; ``bind_tools`` takes LangChain
    tools, our ``tools.Tool``s, OpenAI tool dicts or anything ``convert_to_openai_tool`` reads. Tool calls
    come back in ``AIMessage.tool_calls``; a final answer as the content; a reply that is neither keeps its
    text as content (and ``invalid_tool_calls`` for a call that did not parse), so a graph simply ends or
    goes on. Streamed (``astream``, LangGraph's ``stream_mode="messages"``), the content is the text as
    sampled, since chunks only add up. ``response_metadata["anchorloop"]`` holds the call id, the sampled
    text and the protocol's error.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    policy: Any = Field(exclude=True)
    protocol: Any = "json"  # a protocol name or an ActionProtocol
    sampling: SamplingParams = Field(default_factory=lambda: SamplingParams(temperature=0.7))
    recorder: TrajectoryRecorder = Field(default_factory=TrajectoryRecorder, exclude=True)

    _fmt: ChatFormat = PrivateAttr()
    _proto: Any = PrivateAttr()

    def __init__(self, policy: Any = None, /, **kwargs: Any) -> None:
        if policy is not None:
            kwargs["policy"] = policy
        super().__init__(**kwargs)
        self._fmt = ChatFormat(self.policy.tokenizer)
        self._proto = get_protocol(self.protocol)

    @property
    def _llm_type(self) -> str:
        return "anchorloop-policy"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"protocol": self._proto.name, "sampling": self.sampling.model_dump()}

    def bind_tools(self, tools: Sequence[Any], *, tool_choice: Any = None, **kwargs: Any) -> Any:
        """This model with ``tools`` described in its system prompt (``tool_choice`` is not enforced)."""
        return self.bind(tools=[_schema(t) for t in tools], **kwargs)

    # -- LangChain entry points ---------------------------------------------------------------------

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        run = _run_key(run_manager)
        message = run_sync(self._call(messages, stop, run, kwargs))[0]
        return ChatResult(generations=[ChatGeneration(message=message)])

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: Any = None, **kwargs: Any) -> ChatResult:
        message = (await self._call(messages, stop, _run_key(run_manager), kwargs))[0]
        return ChatResult(generations=[ChatGeneration(message=message)])

    async def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                       run_manager: Any = None, **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        loop, deltas, done = asyncio.get_running_loop(), asyncio.Queue(), object()

        def on_text(delta: str) -> None:  # HFPolicy calls it on the loop; a backend thread may not
            loop.call_soon_threadsafe(deltas.put_nowait, delta)

        task = asyncio.ensure_future(self._call(messages, stop, _run_key(run_manager), kwargs, on_text))
        task.add_done_callback(lambda _: loop.call_soon_threadsafe(deltas.put_nowait, done))
        streamed = ""
        try:
            while (delta := await deltas.get()) is not done:
                delta = safe_text(delta)
                streamed += delta
                yield ChatGenerationChunk(message=AIMessageChunk(content=delta))
        finally:
            if not task.done():
                task.cancel()
        message, call = task.result()
        rest = call.text[len(streamed):] if call.text.startswith(streamed) else ""
        chunks = [{"name": c["name"], "args": json.dumps(c["args"]), "id": c["id"], "index": i,
                   "type": "tool_call_chunk"} for i, c in enumerate(message.tool_calls)]
        yield ChatGenerationChunk(message=AIMessageChunk(
            content=rest, id=message.id, tool_call_chunks=chunks, response_metadata=message.response_metadata,
            chunk_position="last"))

    # -- one call -----------------------------------------------------------------------------------

    async def _call(self, messages: list[BaseMessage], stop: list[str] | None, run: str, kwargs: dict,
                    on_text: Any = None) -> tuple[AIMessage, PolicyCall]:
        schemas = kwargs.get("tools") or []
        overrides = {k: v for k, v in kwargs.items() if k in SamplingParams.model_fields and k != "stop"}
        sampling = self.sampling.model_copy(update={
            **overrides, "stop": list(dict.fromkeys([*self._proto.stop, *self.sampling.stop, *(stop or [])]))})
        chat = self._chat(messages, schemas)
        context = _key(chat, schemas)
        prompt_ids, continues = self._continuation(messages, schemas, run)
        if prompt_ids is None:
            prompt_ids = self._fmt.prompt_ids(chat, tools=schemas or None)
        gen: Generation = await self.policy.generate(prompt_ids, sampling, on_text=on_text)
        text = safe_text(gen.text)
        action = self._proto.parse(text)
        if gen.finish_reason == "length" and not action.tool_calls and action.final_answer is None:
            action.error = f"The reply was cut off after {len(gen.token_ids)} tokens."
        call_id = f"anchorloop-{uuid.uuid4().hex}"
        tool_calls = [{"name": c.name, "args": c.arguments, "id": f"call_{uuid.uuid4().hex[:24]}",
                       "type": "tool_call"} for c in action.tool_calls]
        content = action.final_answer if action.final_answer is not None and not tool_calls else text
        call = PolicyCall(
            call_id=call_id, run=run, prompt_ids=list(prompt_ids), completion_ids=list(gen.token_ids),
            logprobs=list(gen.logprobs), text=text, finish_reason=gen.finish_reason, content=content,
            tool_calls=[{"name": c["name"], "args": c["args"]} for c in tool_calls], error=action.error,
            exact=all(gen.metadata.get(k, True) for k in _EXACT_KEYS), continues=continues, context=context)
        self.recorder.record(call)
        meta = {"anchorloop": {"call_id": call_id, "text": text, "content": content,
                               "tool_calls": call.tool_calls, "error": action.error},
                "finish_reason": gen.finish_reason}
        return AIMessage(content=content, id=call_id, tool_calls=tool_calls,
                         invalid_tool_calls=_invalid(action, text), response_metadata=meta), call

    def _continuation(self, messages: list[BaseMessage], schemas: list[dict], run: str
                      ) -> tuple[list[int] | None, str | None]:
        """Prompt ids extending an earlier call's sampled ids, when the messages are that call's messages,
        then its reply unchanged, then new ones; ``(None, None)`` when they are not."""
        for j in range(len(messages) - 1, -1, -1):
            reply = messages[j]
            if not isinstance(reply, AIMessage) or _ours(reply) is None:
                continue
            candidates = [c for c in self.recorder.candidates(_key(self._chat(messages[:j], schemas), schemas))
                          if _unchanged(reply, c.content, c.text, c.tool_calls)]
            if not candidates:
                continue
            # the very call that replied, else one of this run, else any with the same context and reply
            call = next((c for c in candidates if c.call_id == reply.id), None) or \
                next((c for c in candidates if c.run == run), candidates[0])
            closed = self._fmt.closes_turn(call.completion_ids)
            inserted = self._fmt.insert_ids(self._chat(messages[j + 1 :], None), model_closed_turn=closed)
            return call.prompt_ids + call.completion_ids + inserted, call.call_id
        return None, None

    # -- messages as chat-template dicts ------------------------------------------------------------

    def _chat(self, messages: Sequence[BaseMessage], schemas: list[dict] | None) -> list[dict]:
        """``messages`` as chat dicts; with ``schemas``, the protocol's instructions in the system message.
        Consecutive tool results are one observation turn, as ``ChatFormat.observation_messages`` makes it."""
        out: list[dict] = []
        observations: list[str] = []
        for m in [*messages, None]:
            if isinstance(m, ToolMessage | FunctionMessage):
                observations.append(_text(m.content))
                continue
            if observations:
                out += self._fmt.observation_messages(observations)
                observations = []
            if m is not None:
                out.append({"role": _role(m), "content": self._content(m)})
        if schemas:
            instructions = self._proto.instructions(schemas, self._fmt.native_tools)
            if out and out[0]["role"] == "system":
                out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{instructions}"}
            else:
                out.insert(0, {"role": "system", "content": instructions})
        return out

    def _content(self, m: BaseMessage) -> str:
        if isinstance(m, AIMessage):
            ours = _ours(m)
            if ours is not None and _unchanged(m, ours.get("content"), ours.get("text"), ours.get("tool_calls")):
                return safe_text(ours["text"])  # our reply as it was sampled
            calls = [self._proto.render_call(c["name"], c["args"]) for c in m.tool_calls]
            return "\n".join(p for p in [_text(m.content), *calls] if p)
        return _text(m.content)


# -- helpers ----------------------------------------------------------------------------------------


def _run_key(run_manager: Any) -> str:
    key = _RUN.get()
    if key is not None:
        return key
    metadata = {**(ensure_config().get("metadata") or {}), **(getattr(run_manager, "metadata", None) or {})}
    for name in ("anchorloop_run", "thread_id"):
        if metadata.get(name) is not None:
            return str(metadata[name])
    return "default"


def _schema(tool: Any) -> dict:
    if isinstance(tool, Tool):
        return tool.json_schema()
    if isinstance(tool, BaseTool):
        from tools.langchain import from_langchain

        return from_langchain(tool).json_schema()
    if isinstance(tool, dict) and tool.get("type") == "function" and "function" in tool:
        return tool
    return convert_to_openai_tool(tool)


def _key(chat: list[dict], schemas: list[dict] | None) -> str:
    return json.dumps([chat, schemas or []], sort_keys=True, ensure_ascii=False, default=str)


def _ours(m: AIMessage) -> dict | None:
    meta = (m.response_metadata or {}).get("anchorloop")
    return meta if isinstance(meta, dict) and isinstance(meta.get("text"), str) else None


def _unchanged(m: AIMessage, content: Any, text: Any, tool_calls: Any) -> bool:
    """``m`` still says what our reply said: its content (either form) and its tool calls."""
    calls = [{"name": c["name"], "args": c["args"]} for c in m.tool_calls]
    return _text(m.content) in (content, text) and calls == (tool_calls or [])


def _invalid(action: Action, text: str) -> list[dict]:
    if action.error is None or "<tool_call>" not in text:
        return []
    return [{"name": None, "args": text, "id": f"call_{uuid.uuid4().hex[:24]}", "error": action.error,
             "type": "invalid_tool_call"}]


def _role(m: BaseMessage) -> str:
    if isinstance(m, HumanMessage):
        return "user"
    if isinstance(m, AIMessage):
        return "assistant"
    if isinstance(m, SystemMessage):
        return "system"
    if isinstance(m, ChatMessage):
        return m.role
    return "user"


def _text(content: Any) -> str:
    if isinstance(content, str):
        return safe_text(content)
    if isinstance(content, list):  # content blocks: their text
        parts = [b if isinstance(b, str) else b.get("text", "") if isinstance(b, dict) else "" for b in content]
        return safe_text("".join(parts))
    return safe_text(str(content))
