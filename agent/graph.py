"""The self-correcting ReAct agent as a LangGraph ``StateGraph``.

    start → generate → (tool calls? run_tools → generate …)
                     → (garbled? correct_format → generate …)
                     → record_answer → (self-correct? ask_to_verify → generate …) → finish

The model writes a first answer, is then asked to check it *with the tools* and either confirm it
or correct it; every final answer is recorded as an attempt, so ``attempts[0]`` and
``attempts[-1]`` are the self-correction pair. The whole run is one token sequence: model tokens
exactly as sampled (``env_mask`` 1) and inserted segments tokenized once (``env_mask`` 0).
"""

from __future__ import annotations

import asyncio
import operator
import time
from dataclasses import asdict
from typing import Annotated, Any, TypedDict

from langchain_core.runnables import RunnableConfig
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph

from agent.chat_format import ChatFormat
from agent.policy import Policy, SamplingParams
from agent.prompts import (
    VERIFY_WITH_TOOLS,
    VERIFY_WITHOUT_TOOLS,
    Exemplar,
    exemplar_messages,
    exemplar_set,
    system_prompt,
    verify_message,
    with_tool_examples,
)
from agent.protocols import ToolCall, get_protocol
from agent.repeats import REPEAT_REFUSED, attempt_calls, call_key
from agent.sync import run_sync
from tools import Tool, ToolResult
from tools.base import call_tool, safe_text

DEFAULT_SAMPLING = SamplingParams(temperature=0.7)


class AgentState(TypedDict, total=False):
    question: str
    prompt_ids: list[int]
    completion_ids: Annotated[list[int], operator.add]
    env_mask: Annotated[list[int], operator.add]
    logprobs: Annotated[list[float], operator.add]
    messages: Annotated[list[dict], operator.add]  # readable transcript
    turn_spans: Annotated[list[dict], operator.add]  # {start, end, attempt} of each model turn in completion_ids
    # input only: a given first attempt {"calls": [{tool, arguments}], "answer", "replayed"?} to verify
    first_attempt: dict
    attempts: list[dict]  # overwritten, so each new question in a conversation starts afresh
    action: dict
    turns: int
    tool_calls: int
    tool_errors: int
    parse_errors: int
    last_closed_turn: bool  # did the model's last turn end with its own end-of-turn token?
    stop_reason: str
    generate_s: float
    tools_s: float


def build_agent(
    policy: Policy,
    tools: list[Tool],
    *,
    protocol: str = "auto",
    max_turns: int = 8,
    max_tool_calls: int = 6,
    self_correct: bool = True,
    verify_with_tools: bool = True,
    restate_question: bool = True,
    verify_instruction: str = "",
    checkpointer: Any = None,
    sampling: SamplingParams | None = None,
    verify_sampling: SamplingParams | None = None,
    system_hint: str = "",
    exemplars: list[Exemplar] | str | None = None,
    tool_timeout_s: float = 60.0,
    code_functions: bool = True,
    refuse_repeats: bool = False,
) -> Any:
    """Compile the agent graph. Invoke it with ``{"question": ...}``; the final state is the trajectory.

    ``protocol``: ``"code"``, ``"json"``, or ``"auto"`` (code when a ``python`` tool is given).
    ``exemplars``: the worked examples to show, or the name of a set in ``agent.prompts.EXEMPLAR_SETS``
    (default ``"rewrite"``), shown with one more per tool that carries an ``example``.
    ``restate_question``: the verify turn quotes the question before its instruction.
    ``verify_instruction``: the verify turn's instruction (also in the exemplars); empty: the default
    for ``verify_with_tools`` (``agent.prompts.VERIFY_WITH_TOOLS`` or ``VERIFY_WITHOUT_TOOLS``).
    ``verify_sampling``: how turns after the first answer are sampled (default: ``sampling``), e.g. hotter,
    so training explores checks the usual temperature rarely writes.
    ``code_functions``: under ``code``, the other tools are also functions the model's code can call
    (``tools.code_functions``), and the system prompt lists them so; ``False`` offers them only as
    ``<tool_call>`` tools.
    ``refuse_repeats``: in the verify step, a call identical to one the first attempt made (whitespace
    aside) is not run; its observation says that a repeat checks nothing and asks for another route.
    """
    tools_by_name = {t.name: t for t in tools}
    if protocol == "auto":  # code blocks when Python is among the tools, JSON tool calls otherwise
        protocol = "code" if "python" in tools_by_name else "json"
    proto = get_protocol(protocol)
    fmt = ChatFormat(policy.tokenizer)
    if proto.name == "code" and "python" not in tools_by_name:
        raise ValueError("The 'code' protocol runs fenced Python blocks and needs the 'python' tool.")
    if proto.name == "code" and code_functions:
        proto = _with_code_functions(proto, tools_by_name, tool_timeout_s)
        tools = list(tools_by_name.values())
    sampling = (sampling or DEFAULT_SAMPLING).model_copy(update={"stop": proto.stop})
    verify_sampling = verify_sampling.model_copy(update={"stop": proto.stop}) if verify_sampling else sampling
    verify_text = verify_instruction.strip() or (VERIFY_WITH_TOOLS if verify_with_tools else VERIFY_WITHOUT_TOOLS)
    schemas = [t.json_schema() for t in tools]
    preamble = [{"role": "system", "content": system_prompt(proto, tools, fmt, system_hint)}]
    chosen, limit = (exemplars, len(exemplars)) if isinstance(exemplars, list) else \
        with_tool_examples(exemplar_set(exemplars or "rewrite"), tools)
    preamble += run_sync(exemplar_messages(chosen, proto, tools, fmt, verify_text if self_correct else None,
                                           limit=limit, restate_question=restate_question))

    def inserted(messages: list[dict], state: AgentState, shown: list[dict]) -> dict:
        ids = fmt.insert_ids(messages, model_closed_turn=state.get("last_closed_turn", False))
        return {"completion_ids": ids, "env_mask": [0] * len(ids), "logprobs": [0.0] * len(ids),
                "messages": shown, "last_closed_turn": True}

    # -- nodes --------------------------------------------------------------------------------------

    async def start(state: AgentState) -> dict:
        question = safe_text(state["question"])
        # budgets and attempts are per question, also for a follow-up in a persisted conversation
        fresh = {"attempts": [], "stop_reason": "", "action": {}, "turns": 0, "tool_calls": 0}
        if state.get("prompt_ids"):
            return fresh | inserted([{"role": "user", "content": question}], state,
                                    [{"role": "user", "content": question}])
        conversation, shown = [{"role": "user", "content": question}], [{"role": "user", "content": question}]
        given = state.get("first_attempt")
        if given and not self_correct:
            raise ValueError("A given first_attempt is there to be verified; build the agent with self_correct=True.")
        if given:  # the run starts at the verify step, from an attempt the model did not write
            turns, shown_turns, attempt = await given_attempt(given)
            verify = verify_message(verify_text, question, restate_question)
            conversation += turns + [{"role": "user", "content": verify}]
            shown += shown_turns + [{"role": "verify", "content": verify}]
            fresh["attempts"] = [attempt]
        return fresh | {
            "prompt_ids": fmt.prompt_ids(preamble + conversation, tools=schemas), "messages": shown,
            "tool_errors": 0, "parse_errors": 0, "generate_s": 0.0, "tools_s": 0.0,
        }

    async def given_attempt(given: dict) -> tuple[list[dict], list[dict], dict]:
        """Chat turns, transcript and attempt record of a first attempt written for the model: its
        calls in the model's own format, their real tool output, and its final answer."""
        turns, shown = [], []
        for call in given["calls"]:
            result = await _call(tools_by_name, ToolCall(call["tool"], call["arguments"]), tool_timeout_s)
            turns.append({"role": "assistant", "content": proto.render_call(call["tool"], call["arguments"])})
            turns += fmt.observation_messages([result.content])
            shown += [{"role": "assistant", "content": turns[-2]["content"], "injected": True},
                      {"role": "tool", "name": call["tool"], "arguments": call["arguments"], "content": result.content,
                       "error": result.error, "injected": True}]
        final = f"Final answer: {given['answer']}"
        turns.append({"role": "assistant", "content": final})
        shown.append({"role": "assistant", "content": final, "injected": True})
        attempt = {"answer": given["answer"], "turn": -1, "tool_calls_before": len(given["calls"]), "injected": True,
                   "replayed": bool(given.get("replayed"))}
        return turns, shown, attempt

    async def generate(state: AgentState, config: RunnableConfig) -> dict:
        started = time.perf_counter()
        ids = state["prompt_ids"] + state.get("completion_ids", [])
        params = verify_sampling if state.get("attempts") else sampling
        turn = await policy.generate(ids, params, on_text=_token_streamer(config))
        text = safe_text(turn.text)  # the ids are the model's; its text may come from a server, surrogates and all
        at = len(state.get("completion_ids", []))
        span = {"start": at, "end": at + len(turn.token_ids), "attempt": len(state.get("attempts", []))}
        action = proto.parse(text)
        if turn.finish_reason == "length" and not action.tool_calls and action.final_answer is None:
            action.error = (f"Your reply was cut off after {len(turn.token_ids)} tokens. Be brief: "
                            "one tool call, or 'Final answer: ...'.")
        return {
            "completion_ids": turn.token_ids, "env_mask": [1] * len(turn.token_ids),
            "logprobs": turn.logprobs,
            "messages": [{"role": "assistant", "content": text}], "turn_spans": [span],
            "action": asdict(action), "turns": state.get("turns", 0) + 1,
            "last_closed_turn": fmt.closes_turn(turn.token_ids),
            "generate_s": state.get("generate_s", 0.0) + time.perf_counter() - started,
        }

    async def run_tools(state: AgentState) -> dict:
        started = time.perf_counter()
        calls = [ToolCall(**c) for c in state["action"]["tool_calls"]]
        budget = max_tool_calls - state.get("tool_calls", 0)
        repeats = attempt_calls(state.get("messages", [])) if refuse_repeats and state.get("attempts") else set()
        results = await asyncio.gather(*[
            _refused() if call_key(c.name, c.arguments) in repeats
            else _call(tools_by_name, c, tool_timeout_s) if i < budget else _over_budget(max_tool_calls)
            for i, c in enumerate(calls)
        ])
        shown = [{"role": "tool", "name": c.name, "arguments": c.arguments, "content": r.content,
                  "error": r.error, **_function_calls(r)} for c, r in zip(calls, results)]
        update = inserted(fmt.observation_messages([r.content for r in results]), state, shown)
        return update | {
            "tool_calls": state.get("tool_calls", 0) + min(len(calls), max(budget, 0)),
            "tool_errors": state.get("tool_errors", 0) + sum(r.error for r in results),
            "tools_s": state.get("tools_s", 0.0) + time.perf_counter() - started,
        }

    async def correct_format(state: AgentState) -> dict:
        note = state["action"]["error"]
        update = inserted([{"role": "user", "content": note}], state, [{"role": "feedback", "content": note}])
        return update | {"parse_errors": state.get("parse_errors", 0) + 1}

    async def record_answer(state: AgentState) -> dict:
        attempt = {"answer": state["action"]["final_answer"], "turn": state["turns"] - 1,
                   "tool_calls_before": state.get("tool_calls", 0)}
        return {"attempts": state.get("attempts", []) + [attempt]}

    async def ask_to_verify(state: AgentState) -> dict:
        verify = verify_message(verify_text, safe_text(state["question"]), restate_question)
        return inserted([{"role": "user", "content": verify}], state, [{"role": "verify", "content": verify}])

    async def finish(state: AgentState) -> dict:
        return {"stop_reason": "verified" if len(state.get("attempts", [])) > 1 else "answered"}

    async def out_of_turns(state: AgentState) -> dict:
        return {"stop_reason": "max_turns"}

    # -- routing ------------------------------------------------------------------------------------

    async def after_generate(state: AgentState) -> str:
        action = state["action"]
        if action["final_answer"] is not None and not action["tool_calls"]:
            return "record_answer"
        if state["turns"] >= max_turns:
            return "out_of_turns"
        return "run_tools" if action["tool_calls"] else "correct_format"

    async def after_answer(state: AgentState) -> str:
        wants_check = self_correct and len(state["attempts"]) < 2
        return "ask_to_verify" if wants_check and state["turns"] < max_turns else "finish"

    graph = StateGraph(AgentState)
    for node in (start, generate, run_tools, correct_format, record_answer, ask_to_verify, finish,
                 out_of_turns):
        graph.add_node(node.__name__, node)
    graph.add_edge(START, "start")
    graph.add_edge("start", "generate")
    graph.add_conditional_edges("generate", after_generate,
                                ["record_answer", "out_of_turns", "run_tools", "correct_format"])
    graph.add_edge("run_tools", "generate")
    graph.add_edge("correct_format", "generate")
    graph.add_conditional_edges("record_answer", after_answer, ["ask_to_verify", "finish"])
    graph.add_edge("ask_to_verify", "generate")
    graph.add_edge("finish", END)
    graph.add_edge("out_of_turns", END)
    compiled = graph.compile(checkpointer=checkpointer, name="anchorloop-agent")
    return compiled.with_config(recursion_limit=8 + 4 * max_turns)


def _with_code_functions(proto: Any, tools_by_name: dict[str, Tool], timeout_s: float) -> Any:
    """Make the agent's other tools functions of its Python code: ``tools_by_name["python"]`` becomes a
    python tool whose programs can call them, and the protocol lists their signatures. A python tool
    that cannot host functions (not ours), or no tool that can be one, leaves both as they were."""
    python = tools_by_name["python"]
    if not hasattr(python, "with_functions") or not hasattr(proto, "with_functions"):
        return proto
    hosting = python.with_functions([t for t in tools_by_name.values() if t is not python], timeout_s=timeout_s)
    if not hosting.functions:
        return proto
    tools_by_name["python"] = hosting
    return proto.with_functions(hosting.functions.signatures())


def _function_calls(result: ToolResult) -> dict:
    """The transcript's record of the tools a program called as functions, when it called any."""
    calls = result.metadata.get("function_calls")
    return {"function_calls": calls} if calls else {}


def _token_streamer(config: RunnableConfig) -> Any:
    """Text deltas go to LangGraph's custom stream when the caller asked (``stream_tokens``)."""
    if not config.get("configurable", {}).get("stream_tokens"):
        return None
    writer = get_stream_writer()
    return lambda text: writer({"token": text})


async def _call(tools: dict[str, Tool], call: ToolCall, timeout_s: float) -> ToolResult:
    tool = tools.get(call.name)
    if tool is None:
        return ToolResult(content=f"Unknown tool '{call.name}'. Available tools: {', '.join(tools)}.",
                          error=True)
    return await call_tool(tool, call.arguments, timeout_s=timeout_s)


async def _refused() -> ToolResult:
    return ToolResult(content=REPEAT_REFUSED, error=True)


async def _over_budget(limit: int) -> ToolResult:
    return ToolResult(content=f"Tool budget of {limit} calls is used up. Give your Final answer now.",
                      error=True)
