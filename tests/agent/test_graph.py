import asyncio
import copy
import json
import random
import re
import string
import time

import pytest

from agent import build_agent
from tools import Tool, tool


@tool
def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: first number
        b: second number
    """
    return a + b


@tool
def explode(x: str) -> str:
    """Always fails."""
    raise RuntimeError("boom")


CALL = '<tool_call>{"name": "add", "arguments": {"a": 2, "b": 3}}</tool_call>'


def run(agent, question="What is 2 + 3?"):
    return asyncio.run(agent.ainvoke({"question": question}))


def make(scripted, replies, **kw):
    policy = scripted(replies)
    kw.setdefault("protocol", "json")
    kw.setdefault("exemplars", [])
    return policy, build_agent(policy, [add, explode], **kw)


def test_tool_call_answer_verify_confirm(scripted):
    policy, agent = make(scripted, [CALL, "Final answer: 5", CALL, "Final answer: 5"])
    state = run(agent)
    assert [a["answer"] for a in state["attempts"]] == ["5", "5"]
    assert state["stop_reason"] == "verified"
    assert state["tool_calls"] == 2 and state["tool_errors"] == 0
    roles = [m["role"] for m in state["messages"]]
    assert roles == ["user", "assistant", "tool", "assistant", "verify", "assistant", "tool", "assistant"]
    assert state["messages"][2]["content"] == "5"


def test_verify_can_change_the_answer(scripted):
    _, agent = make(scripted, ["Final answer: 6", CALL, "Final answer: 5"])
    state = run(agent)
    assert state["attempts"][0]["answer"] == "6" and state["attempts"][-1]["answer"] == "5"
    assert state["attempts"][-1]["tool_calls_before"] == 1


def test_without_self_correction_the_first_answer_ends_the_run(scripted):
    _, agent = make(scripted, ["Final answer: 6"], self_correct=False)
    state = run(agent)
    assert len(state["attempts"]) == 1 and state["stop_reason"] == "answered"


@pytest.mark.parametrize("template", ["smollm2", "qwen2.5"])
def test_each_turn_prompt_is_the_previous_prompt_plus_completion_plus_inserted(tokenizer, template):
    from tests.conftest import ScriptedPolicy

    if template == "qwen2.5":
        from trl.chat_template_utils import qwen2_5_chat_template

        tokenizer = copy.deepcopy(tokenizer)
        tokenizer.chat_template = qwen2_5_chat_template
    policy = ScriptedPolicy(tokenizer, ["gibberish", CALL, "Final answer: 5", "Final answer: 5"])
    agent = build_agent(policy, [add, explode], protocol="json", exemplars=[])
    state = run(agent)
    seq = state["prompt_ids"] + state["completion_ids"]
    assert len(state["completion_ids"]) == len(state["env_mask"]) == len(state["logprobs"])
    for k, prompt in enumerate(policy.prompts):
        assert seq[: len(prompt)] == prompt, f"turn {k} prompt is not a prefix of the trajectory"
    # model tokens carry their logprob (-1.0 from the script), inserted tokens 0.0 and mask 0
    for m, lp in zip(state["env_mask"], state["logprobs"], strict=True):
        assert (m, lp) in {(1, -1.0), (0, 0.0)}
    assert state["parse_errors"] == 1


def test_tool_errors_and_unknown_tools_become_observations(scripted):
    replies = ['<tool_call>{"name": "explode", "arguments": {"x": "a"}}</tool_call>',
               '<tool_call>{"name": "nope", "arguments": {}}</tool_call>',
               '<tool_call>{"name": "add", "arguments": {"a": "two"}}</tool_call>',
               "Final answer: 1"]
    _, agent = make(scripted, replies, self_correct=False)
    state = run(agent)
    observations = [m["content"] for m in state["messages"] if m["role"] == "tool"]
    assert "boom" in observations[0]
    assert "Unknown tool 'nope'" in observations[1]
    assert "'a'" in observations[2] and "'b'" in observations[2]
    assert state["tool_errors"] == 3 and state["stop_reason"] == "answered"


def test_bounds_end_the_run_cleanly(scripted):
    _, agent = make(scripted, [CALL] * 20, max_turns=4, max_tool_calls=2)
    state = run(agent)
    assert state["stop_reason"] == "max_turns" and state["turns"] == 4
    assert state["tool_calls"] == 2
    assert any("budget" in m["content"] for m in state["messages"] if m["role"] == "tool")


def test_code_protocol_requires_the_python_tool(scripted):
    with pytest.raises(ValueError, match="python"):
        build_agent(scripted([]), [add], protocol="code", exemplars=[])


def _garbage(rng: random.Random) -> str:
    pieces = ["<tool_call>", "</tool_call>", "{", "}", '"name"', '"arguments"', ":", "Final answer:",
              "```python\n", "```", "add", "\x00", "null", "[1,2]", "\ud7ff", "💥", "\n", '"a": 1']
    kind = rng.random()
    if kind < 0.4:
        return "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
    if kind < 0.7:
        return "".join(rng.choice(string.printable) for _ in range(rng.randint(0, 200)))
    return rng.choice([CALL, "Final answer: 5", "", " ", "<tool_call>{}</tool_call>",
                       '<tool_call>{"name": "add", "arguments": "{\\"a\\": 1, \\"b\\": 2}"}</tool_call>'])


def test_fuzz_parser_with_10000_garbage_replies_never_raises():
    from agent.protocols import get_protocol

    rng = random.Random(7)
    for name in ("json", "code"):
        protocol = get_protocol(name)
        for _ in range(5000):
            action = protocol.parse(_garbage(rng))
            assert action.tool_calls or action.final_answer is not None or action.error


def test_fuzz_1000_malformed_completions_through_the_graph_never_crash(scripted):
    rng = random.Random(1234)
    runs = 200
    scripts = {f"q{i}": iter([_garbage(rng) for _ in range(8)]) for i in range(runs)}
    served = []

    def reply(prompt_ids):
        question = re.search(r"(q\d+)<\|im_end\|>", scripted.tokenizer.decode(prompt_ids)).group(1)
        served.append(question)
        return next(scripts[question])

    agents = [build_agent(scripted(reply, close_turn=closes), [add, explode], protocol="json",
                          exemplars=[], max_turns=8) for closes in (False, True)]

    async def main():
        return await asyncio.gather(*[agents[i % 2].ainvoke({"question": f"q{i}"}) for i in range(runs)])

    states = asyncio.run(main())
    assert len(served) >= 1000
    assert all(s["stop_reason"] in {"answered", "verified", "max_turns"} for s in states)
    assert all(len(s["completion_ids"]) == len(s["env_mask"]) == len(s["logprobs"]) for s in states)
    assert sum(s["parse_errors"] for s in states) > 500  # the garbage really was garbage


@tool
def echo(text: str) -> str:
    """Say the text back."""
    return text


def test_lone_surrogates_from_the_model_and_tools_leave_a_valid_run(scripted):
    """Raw surrogates in the model's text (a server's), escaped ones in its JSON, and ones a tool returns."""
    replies = ['<tool_call>{"name": "\ud83d", "arguments": {}}</tool_call>',
               '<tool_call>{"name": "echo", "arguments": {"text": "x\\ud83d"}}</tool_call>',
               '<tool_call>{"name": "echo\\udca5", "arguments": {}}</tool_call>', "Final answer: \ud83d"]
    policy = scripted(replies)
    state = run(build_agent(policy, [echo], protocol="json", exemplars=[], self_correct=False))
    observations = [m["content"] for m in state["messages"] if m["role"] == "tool"]
    assert observations[0].startswith("Unknown tool '\ufffd'") and observations[1] == "x\ufffd"
    assert "Unknown tool 'echo\ufffd'" in observations[2]
    assert state["attempts"][0]["answer"] == "\ufffd"
    json.dumps(state["messages"], ensure_ascii=False).encode("utf-8")  # raises on any surrogate left


class Quitter(Tool):
    """A tool that breaks the contract itself: its acall raises SystemExit."""

    name = "quit"
    description = "Quit."

    async def acall(self, args):
        raise SystemExit(1)


@tool
async def stubborn() -> str:
    """Swallow cancellation and keep going."""
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:
        await asyncio.sleep(1.5)
    return "late"


def test_tools_that_break_the_contract_become_error_observations_at_the_deadline(scripted):
    replies = ['<tool_call>{"name": "quit", "arguments": {}}</tool_call>',
               '<tool_call>{"name": "stubborn", "arguments": {}}</tool_call>', "Final answer: 1"]
    agent = build_agent(scripted(replies), [Quitter(), stubborn], protocol="json", exemplars=[],
                        self_correct=False, tool_timeout_s=0.2)
    started = time.perf_counter()
    state = run(agent)
    assert time.perf_counter() - started < 1.2  # the stubborn call was given up at its deadline, not awaited
    quit_obs, stubborn_obs = (m["content"] for m in state["messages"] if m["role"] == "tool")
    assert quit_obs == "Tool 'quit' failed: SystemExit: 1"
    assert stubborn_obs == "Tool 'stubborn' took longer than 0.2 s and was stopped."
    assert state["tool_errors"] == 2 and state["stop_reason"] == "answered"


def test_restate_question_quotes_the_question_in_the_verify_turn(scripted):
    policy, agent = make(scripted, [CALL, "Final answer: 5", CALL, "Final answer: 5"], restate_question=True)
    state = run(agent, "What is 2 + 3?")
    verify = next(m["content"] for m in state["messages"] if m["role"] == "verify")
    assert verify.startswith("The question was: What is 2 + 3?\n\n") and "Check this answer" in verify
    text = policy.tokenizer.decode(state["prompt_ids"] + state["completion_ids"])
    assert text.count("What is 2 + 3?") == 2  # asked, then quoted by the verify turn


def test_restate_question_also_for_a_given_first_attempt_and_in_exemplars(scripted):
    from tools import get_tool

    python = get_tool("python")
    policy = scripted(["Final answer: 5"])
    agent = build_agent(policy, [python], protocol="code", restate_question=True, exemplars="stepwise")
    given = {"calls": [{"tool": "python", "arguments": {"code": "print(2 + 4)"}}], "answer": "6"}
    state = asyncio.run(agent.ainvoke({"question": "What is 2 + 3?", "first_attempt": given}))
    text = policy.tokenizer.decode(state["prompt_ids"])
    assert "The question was: What is 2 + 3?" in text
    # the stepwise exemplars' checks, with their real outputs, each after its own question quoted
    assert "The question was: What is 48 + 36 * 7?" in text and "a = 36 * 7\nprint(48 + a)" in text
    assert "b = 17 * a\nprint(b - 4)" in text and "472" in text
    plain = build_agent(policy, [python], protocol="code")  # the default set shows one-line rewrites
    assert "print(5 + 23 * 17)" in policy.tokenizer.decode(
        asyncio.run(plain.ainvoke({"question": "q", "first_attempt": given}))["prompt_ids"])


def verify_prompt(scripted, exemplars: str) -> str:
    """The verify turn's prompt under an exemplar set, for a given first attempt."""
    from tools import get_tool

    policy = scripted(["Final answer: 5"])
    agent = build_agent(policy, [get_tool("python")], protocol="code", exemplars=exemplars)
    given = {"calls": [{"tool": "python", "arguments": {"code": "print(2 + 4)"}}], "answer": "6"}
    state = asyncio.run(agent.ainvoke({"question": "What is 2 + 3?", "first_attempt": given}))
    return policy.tokenizer.decode(state["prompt_ids"])


def test_the_assign_exemplars_check_by_assigning_the_question_s_expression(scripted):
    text = verify_prompt(scripted, "assign")
    # first attempts as in the default set, checks as assignments, with their real outputs
    assert "print(48 + 63 * 7)" in text and "x = 48 + 36 * 7\nprint(x)" in text and "300" in text
    assert "x = 17 * 23 + 5\nprint(x)" in text and "396" in text


def test_the_bracket_exemplars_catch_a_first_attempt_that_lost_the_question_s_leading_bracket(scripted):
    text = verify_prompt(scripted, "bracket")
    # the lost bracket gives 300; the check restores it and the real tool prints 588, the corrected answer
    assert "What is (48 + 36) * 7?" in text and "print(48 + 36 * 7)" in text
    assert "x = (48 + 36) * 7\nprint(x)" in text and "588" in text
    assert "x = 17 * 23 + 5\nprint(x)" in text and "396" in text


def test_why_the_assign_check_keeps_a_leading_bracket(tokenizer):
    """SmolLM2's tokenizer merges ``print((`` into one token that a question never holds, while the bracket
    after ``x =`` is the question's own `` (`` token: the check form the assign exemplars show."""

    def tokens(text):
        return [tokenizer.decode([i]) for i in tokenizer(text)["input_ids"]]

    question = tokens("What is (454 + 78) * 3?")
    assert " (" in question and "((" not in question
    assert tokens("print((454 + 78) * 3)")[:2] == ["print", "(("]
    assert tokens("x = (454 + 78) * 3")[2:] == question[2:-1]  # the question ends in "?"


def test_an_unknown_exemplar_set_names_the_known_ones(scripted):
    from training.config import AgentConfig

    with pytest.raises(ValueError, match="stepwise"):
        build_agent(scripted([]), [add], protocol="json", exemplars="stepwize")
    with pytest.raises(ValueError, match="stepwise"):
        AgentConfig(exemplars="stepwize")


def test_a_verify_instruction_of_ones_own_replaces_the_default_in_the_turn_and_the_exemplars(scripted):
    from agent.prompts import VERIFY_WITH_TOOLS
    from tools import get_tool

    own = "Re-derive it from the question. A tool error is not a result."
    policy = scripted(["Final answer: 5"])
    agent = build_agent(policy, [get_tool("python")], protocol="code", verify_instruction=own)
    given = {"calls": [{"tool": "python", "arguments": {"code": "print(2 + 4)"}}], "answer": "6"}
    state = asyncio.run(agent.ainvoke({"question": "What is 2 + 3?", "first_attempt": given}))
    text = policy.tokenizer.decode(state["prompt_ids"])
    assert text.count(own) == 3 and VERIFY_WITH_TOOLS not in text  # two exemplars' checks and this one


def test_turns_after_the_first_answer_are_sampled_with_verify_sampling(scripted):
    from agent.policy import SamplingParams
    from tools import get_tool

    policy = scripted(["```python\nprint(2 + 3)\n```", "Final answer: 5", "```python\nprint(3 + 2)\n```",
                       "Final answer: 5"])
    used: list[float] = []
    generate = policy.generate

    async def recording(prompt_ids, sampling, **kw):
        used.append(sampling.temperature)
        return await generate(prompt_ids, sampling, **kw)

    policy.generate = recording
    agent = build_agent(policy, [get_tool("python")], protocol="code", sampling=SamplingParams(temperature=0.7),
                        verify_sampling=SamplingParams(temperature=1.2))
    state = asyncio.run(agent.ainvoke({"question": "What is 2 + 3?"}))
    assert [a["answer"] for a in state["attempts"]] == ["5", "5"]
    assert used == [0.7, 0.7, 1.2, 1.2]  # the first attempt as usual, the check hotter


def test_refuse_repeats_answers_a_repeated_call_in_the_verify_step_without_running_it(scripted):
    from agent.repeats import REPEAT_REFUSED

    respaced = '<tool_call>{"name": "add", "arguments": {"a": 2, "b": 3}}</tool_call>'.replace(": ", ":")
    other = '<tool_call>{"name": "add", "arguments": {"a": 3, "b": 2}}</tool_call>'
    _, agent = make(scripted, [CALL, "Final answer: 5", respaced, other, "Final answer: 5"], refuse_repeats=True)
    state = run(agent)
    tools = [m for m in state["messages"] if m["role"] == "tool"]
    assert [(m["content"], m["error"]) for m in tools] == [("5", False), (REPEAT_REFUSED, True), ("5", False)]
    assert state["tool_errors"] == 1 and state["stop_reason"] == "verified"
    # off by default: the same script runs the repeat
    _, plain = make(scripted, [CALL, "Final answer: 5", respaced, other, "Final answer: 5"])
    assert [m["content"] for m in run(plain)["messages"] if m["role"] == "tool"] == ["5", "5", "5"]


def test_refuse_repeats_compares_with_a_given_first_attempt_and_ignores_whitespace_in_code(scripted):
    from agent.repeats import REPEAT_REFUSED
    from tools import get_tool

    policy = scripted(["```python\nprint(2+4)\n```", "```python\nprint(2 + 3)\n```", "Final answer: 5"])
    agent = build_agent(policy, [get_tool("python")], protocol="code", exemplars=[], refuse_repeats=True)
    given = {"calls": [{"tool": "python", "arguments": {"code": "print(2 + 4)"}}], "answer": "6"}
    state = asyncio.run(agent.ainvoke({"question": "What is 2 + 3?", "first_attempt": given}))
    outputs = [m["content"].strip() for m in state["messages"] if m["role"] == "tool"]
    assert outputs == ["6", REPEAT_REFUSED, "5"]
    assert [a["answer"] for a in state["attempts"]] == ["6", "5"]


def test_attempt_calls_are_those_of_the_current_question_only():
    from agent.repeats import attempt_calls, call_key

    tool = {"role": "tool", "name": "python", "arguments": {"code": "print(1)"}}
    later = {"role": "tool", "name": "python", "arguments": {"code": "print(2)"}}
    earlier_question = [{"role": "user", "content": "q1"}, tool, {"role": "verify", "content": "v"}]
    assert attempt_calls([{"role": "user", "content": "q"}, tool]) == set()  # no verify step yet
    messages = earlier_question + [{"role": "user", "content": "q2"}, later, {"role": "verify", "content": "v"}]
    assert attempt_calls(messages) == {call_key("python", {"code": "print(2)"})}


def test_the_parts_exemplars_work_attempt_1_in_parts_and_check_the_question_whole(scripted):
    from agent.prompts import EXEMPLAR_SETS
    from training.metrics import repeats_computation

    text = verify_prompt(scripted, "parts")
    assert "a = 63 * 7\nprint(48 + a)" in text and "x = 48 + 36 * 7\nprint(x)" in text and "300" in text
    assert "a = 23 + 5\nb = 17 * a\nprint(b - 4)" in text and "x = 17 * (23 + 5) - 4\nprint(x)" in text
    # the check that keeps the right answer is another computation by the vacuous-check rule
    kept = EXEMPLAR_SETS["parts"][1]
    first = [{"tool": s.tool, "arguments": s.arguments} for s in kept.first if s.tool]
    check = next({"tool": s.tool, "arguments": s.arguments} for s in kept.verify if s.tool)
    assert not repeats_computation(check, first)
    assert repeats_computation(check, [check])
