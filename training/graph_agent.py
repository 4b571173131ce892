"""Your own LangGraph agent, run, scored and trained like ours: ``GraphAgent``.

    # my_agent.py
    from langgraph.prebuilt import create_react_agent

    def build_graph(model, tools):
        return create_react_agent(model, tools)

    anchorloop eval --graph my_agent:build_graph --model tiny-random
    anchorloop train --graph my_agent:build_graph --config configs/quickstart.toml

``GraphAgent(policy, env_tools, factory)`` calls ``factory(model, tools)`` once, with a ``PolicyChatModel``
over the policy and the env's tools as LangChain tools (``to_langchain``), and runs the compiled graph it
returns on ``{"messages": [("user", question)]}``. Its ``ainvoke({"question": ...})`` returns a state shaped
as our own graph's final state, so ``run_one``, ``rollout``, ``run_tasks``, ``evaluate`` and training take it
unchanged:

- One attempt per run: a graph of yours has no verify step. ``answer_of(final_state)`` gives the answer the
  env scores; by default the last AI message's content when it is a final answer (none when that message
  calls a tool or is a reply the protocol could not read). As for our own ``self_correct=False`` runs,
  Acc@t2 is then Acc@t1 and confirm./verif. prec./vacuous show '–'.
- Tokens come from the model's recorder. A run that is one exact row (its history only grew) is trained on
  as it is. A run that is not — the graph rewrote the history the model saw (trimmed, summarized: the run
  splits into several rows) or the backend did not vouch for its ids (``exact=False``) — is kept and scored,
  but one of its rows (the one holding the answer's call, else the last) is carried with ``env_mask`` all 0
  (no loss), and its ``stop_reason`` says why:
  ``"answered; not trained: history rewritten"`` or ``"…; not trained: inexact ids"``.
- ``max_turns`` bounds a run's model calls: the call past it is refused, which stops the graph, and the run
  ends ``max_turns`` with the state it had reached; LangGraph's recursion limit ends one as
  ``recursion_limit``. A graph that raises otherwise is a failed run (``run_one`` records it).

Options that only our own graph has are ignored (``IGNORED``): ``self_correct`` (one attempt either way),
``verify_with_tools``, ``restate_question``, ``verify_instruction``, ``exemplars``, ``refuse_repeats``,
``max_tool_calls`` and ``tool_timeout_s`` (your graph runs its tools), ``code_functions``, ``system_hint`` (your graph
writes its own prompt) and ``checkpointer``. A given first attempt (the injected-errors probe,
``training.injected_errors``) needs our verify step and is refused; the command line refuses what needs it (``eval
--ablate``/``--probe``, ``training.injected_errors``, ``training.stage1_steps``, ``env.probes``) before the model
loads.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage

from agent.chat_model import PolicyCall, PolicyChatModel, Row, rows_of
from agent.policy import SamplingParams
from tools.base import Tool, safe_text

log = logging.getLogger(__name__)

IGNORED = ("self_correct", "verify_with_tools", "restate_question", "verify_instruction", "verify_sampling",
           "exemplars", "refuse_repeats", "max_tool_calls", "tool_timeout_s", "code_functions", "system_hint",
           "checkpointer")
REWRITTEN = "history rewritten"  # the run split into several rows: no one row is what the model saw throughout
INEXACT = "inexact ids"  # the backend did not vouch for the ids or log-probs it returned
NOT_TRAINED = "; not trained: "  # stop_reason = "answered; not trained: history rewritten"
HOW_TO_NAME = ("Name a function in your own code as 'module:function' (importable from the current folder), "
               "e.g. my_agent:build_graph with def build_graph(model, tools): return create_react_agent(model, tools).")

_TURNS: contextvars.ContextVar[_Turns | None] = contextvars.ContextVar("anchorloop_graph_turns", default=None)


class TurnLimitReached(Exception):
    """The graph asked for a model call past ``max_turns``; the run stops there."""


class _Turns:
    """One run's model calls: how many, against which limit, and the seconds spent in them."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used, self.seconds, self.reached = limit, 0, 0.0, False


class _CountedPolicy:
    """The policy, with each run's calls counted (``max_turns``) and timed."""

    def __init__(self, policy: Any) -> None:
        self.policy = policy
        self.tokenizer = policy.tokenizer

    async def generate(self, prompt_ids: list[int], sampling: SamplingParams, *, on_text: Any = None) -> Any:
        turns = _TURNS.get()
        if turns is None:  # a call made outside GraphAgent.ainvoke (the model used on its own)
            return await self.policy.generate(prompt_ids, sampling, on_text=on_text)
        if turns.used >= turns.limit:
            turns.reached = True
            raise TurnLimitReached(f"the graph asked for model call {turns.used + 1}; max_turns is {turns.limit}")
        turns.used += 1
        started = time.perf_counter()
        try:
            return await self.policy.generate(prompt_ids, sampling, on_text=on_text)
        finally:
            turns.seconds += time.perf_counter() - started

    def __getattr__(self, name: str) -> Any:
        return getattr(self.policy, name)


def check_graph(graph: str | Callable[..., Any]) -> Callable[..., Any]:
    """The graph factory ``graph`` names (a ``module:function`` path, or the function itself); a ValueError
    names the path and what to do. Cheap: run it before a model loads."""
    if callable(graph):
        return graph
    from tools.registry import import_target

    if not isinstance(graph, str) or not graph.strip():
        raise ValueError(f"A graph is named as 'module:function', got {graph!r}. {HOW_TO_NAME}")
    try:
        factory = import_target(graph.strip(), kind="graph")
    except ValueError as exc:
        raise ValueError(f"{exc} {HOW_TO_NAME}") from None
    except (ImportError, SyntaxError) as exc:  # the module is there, but importing it failed
        raise ValueError(f"Cannot load graph {graph!r}: importing its module raised "
                         f"{type(exc).__name__}: {exc}") from None
    if not callable(factory):
        raise ValueError(f"The graph {graph!r} is a {type(factory).__name__}, not a function. {HOW_TO_NAME}")
    return factory


def build_graph_agent(policy: Any, env: Any, graph: str | Callable[..., Any], **options: Any) -> GraphAgent:
    """``GraphAgent`` for ``env`` (its tools) from ``build_env_agent`` options: ``protocol``, ``max_turns``,
    ``sampling`` and ``answer_of`` are used, those in ``IGNORED`` dropped, any other is a TypeError."""
    unknown = sorted(set(options) - set(IGNORED) - {"protocol", "max_turns", "sampling", "answer_of"})
    if unknown:
        raise TypeError(f"build_graph_agent() got options it does not know: {', '.join(unknown)}")
    ignored = {k: options.pop(k) for k in IGNORED if k in options}
    if ignored:
        log.debug("graph %s: ignoring options of anchorloop's own graph: %s", graph, ", ".join(ignored))
    return GraphAgent(policy, env.tools(), check_graph(graph), name=graph if isinstance(graph, str) else "", **options)


class GraphAgent:
    """Your LangGraph graph as an anchorloop agent: ``await agent.ainvoke({"question": ...})`` is a state
    ``Trajectory.from_state`` reads (see the module doc). ``protocol``: ``"json"``, ``"code"`` or ``"auto"``
    (code when a ``python`` tool is there, as for our own graph)."""

    def __init__(self, policy: Any, env_tools: Sequence[Tool], factory: Callable[[Any, list[Any]], Any], *,
                 answer_of: Callable[[dict[str, Any]], str | None] | None = None, protocol: str = "json",
                 sampling: SamplingParams | None = None, max_turns: int = 8, name: str = "") -> None:
        from tools.langchain import to_langchain

        tools = list(env_tools)
        if protocol == "auto":
            protocol = "code" if any(t.name == "python" for t in tools) else "json"
        if max_turns < 1:
            raise ValueError(f"max_turns must be at least 1, got {max_turns}.")
        self.name = name or getattr(factory, "__qualname__", repr(factory))
        self.max_turns = max_turns
        self.answer_of = answer_of or last_answer
        self.model = PolicyChatModel(_CountedPolicy(policy), protocol=protocol,
                                     sampling=sampling or SamplingParams(temperature=0.7))
        self.tools = [to_langchain(t) for t in tools]
        self.graph = factory(self.model, self.tools)
        if not _is_graph(self.graph):
            raise TypeError(f"The graph factory {self.name} returned {type(self.graph).__name__}, not a compiled "
                            "LangGraph graph (e.g. create_react_agent(model, tools), or builder.compile()).")

    async def ainvoke(self, inputs: dict[str, Any], config: Any = None) -> dict[str, Any]:
        if inputs.get("first_attempt"):
            raise ValueError(f"graph {self.name}: a given first attempt (the injected-errors probe, "
                             "training.injected_errors) needs anchorloop's own verify step; run it without a graph.")
        from langgraph.errors import GraphRecursionError

        question = safe_text(inputs["question"])
        turns = _Turns(self.max_turns)
        token = _TURNS.set(turns)
        final: dict[str, Any] = {}
        stop = ""
        try:
            with self.model.recorder.run() as key:
                try:  # the last full state, also when the run is stopped part way
                    async for state in self.graph.astream({"messages": [("user", question)]}, config,
                                                          stream_mode="values"):
                        final = state
                except TurnLimitReached:
                    stop = "max_turns"
                except GraphRecursionError:
                    stop = "recursion_limit"
                finally:
                    calls = self.model.recorder.pop(key)
        finally:
            _TURNS.reset(token)
        if turns.reached:  # the limit was hit, even where the graph caught the error itself
            stop = "max_turns"
        return run_state(question, final, calls, self.answer_of(final) if final else None, stop=stop,
                         generate_s=turns.seconds)


def run_state(question: str, final: dict[str, Any], calls: list[PolicyCall], answer: str | None, *,
              stop: str = "", generate_s: float = 0.0) -> dict[str, Any]:
    """The state our own graph would end with, from a graph's final state and the model calls of the run."""
    messages = _messages(final)
    answering = next((m for m in reversed(messages) if isinstance(m, AIMessage)), None)
    by_id = {c.call_id: i for i, c in enumerate(calls)}
    turn = by_id.get(answering.id, len(calls) - 1) if answering is not None else len(calls) - 1
    at = messages.index(answering) if answering is not None else len(messages)
    attempts = []
    if answer is not None:
        tools_before = sum(isinstance(m, ToolMessage) for m in messages[:at])
        attempts = [{"answer": safe_text(str(answer)), "turn": turn, "tool_calls_before": tools_before}]
    stop = stop or ("answered" if attempts else "no_answer")
    rows = rows_of(calls)  # shown: the row holding the answer's call, else the last one
    row = next((r for r in rows if answering is not None and any(c.call_id == answering.id for c in r.calls)),
               rows[-1] if rows else Row(prompt_ids=[]))
    spans = [{"start": s, "end": e, "attempt": int(bool(attempts) and by_id[c.call_id] > turn)}
             for c, (s, e) in zip(row.calls, row.spans, strict=True)]
    env_mask, logprobs = list(row.env_mask), list(row.logprobs)
    why = REWRITTEN if len(rows) > 1 else INEXACT if not row.exact else ""
    if why:  # scored and reported, but no row is the run as the model saw it: no loss
        env_mask, logprobs = [0] * len(env_mask), [0.0] * len(logprobs)
        stop += NOT_TRAINED + why
    tool_messages = [m for m in messages if isinstance(m, ToolMessage)]
    return {
        "question": question, "prompt_ids": list(row.prompt_ids), "completion_ids": list(row.completion_ids),
        "env_mask": env_mask, "logprobs": logprobs, "turn_spans": spans, "attempts": attempts,
        "messages": transcript(question, messages), "turns": len(calls), "tool_calls": len(tool_messages),
        "tool_errors": sum(m.status == "error" for m in tool_messages),
        "parse_errors": sum(c.error is not None for c in calls), "stop_reason": stop,
        "generate_s": generate_s, "tools_s": 0.0, "rows": len(rows), "graph_state": final,
    }


def last_answer(final: dict[str, Any]) -> str | None:
    """The default ``answer_of``: the last AI message's content, when it is a final answer (not a tool call,
    nor a reply of ours the protocol could not read)."""
    last = next((m for m in reversed(_messages(final)) if isinstance(m, AIMessage)), None)
    if last is None or last.tool_calls or last.invalid_tool_calls:
        return None
    ours = (last.response_metadata or {}).get("anchorloop")
    if isinstance(ours, dict) and ours.get("error") is not None and last.content == ours.get("text"):
        return None  # neither a call nor "Final answer: …"
    text = _text(last.content).strip()
    return text or None


def transcript(question: str, messages: Sequence[BaseMessage]) -> list[dict]:
    """The readable transcript our own graph keeps: the question, the model's turns as sampled, tool results."""
    shown: list[dict] = []
    calls: dict[str, dict] = {}
    for m in messages:
        if isinstance(m, HumanMessage):
            shown.append({"role": "user", "content": _text(m.content)})
        elif isinstance(m, AIMessage):
            ours = (m.response_metadata or {}).get("anchorloop")
            text = ours["text"] if isinstance(ours, dict) and isinstance(ours.get("text"), str) else _text(m.content)
            shown.append({"role": "assistant", "content": safe_text(text)})
            calls |= {c["id"]: c for c in m.tool_calls if c.get("id")}
        elif isinstance(m, ToolMessage):
            call = calls.get(m.tool_call_id, {})
            shown.append({"role": "tool", "name": m.name or call.get("name", ""),
                          "arguments": safe_text(call.get("args", {})), "content": _text(m.content),
                          "error": m.status == "error"})
    if not shown or shown[0] != {"role": "user", "content": question}:
        shown.insert(0, {"role": "user", "content": question})
    return shown


def _is_graph(graph: Any) -> bool:
    """A compiled LangGraph graph, or one with a config bound (``graph.with_config(...)``)."""
    from langchain_core.runnables import RunnableBinding
    from langgraph.pregel import Pregel

    while isinstance(graph, RunnableBinding):
        graph = graph.bound
    return isinstance(graph, Pregel)


def _messages(state: Any) -> list[BaseMessage]:
    """A graph state's messages (a dict's ``messages`` key, or a state object's attribute)."""
    found = state.get("messages") if isinstance(state, dict) else getattr(state, "messages", None)
    return [m for m in found or [] if isinstance(m, BaseMessage)]


def _text(content: Any) -> str:
    if isinstance(content, str):
        return safe_text(content)
    if isinstance(content, list):  # content blocks: their text
        return safe_text("".join(b if isinstance(b, str) else b.get("text", "") if isinstance(b, dict) else ""
                                 for b in content))
    return safe_text(str(content))
