"""The injected-error probe and the vacuous-check metric, driven by scripted checkers whose behaviour
is known: one re-derives the computation from the question, one re-runs its own code."""

import asyncio
import random
import re

import pytest

from agent.prompts import VERIFY_WITH_TOOLS
from envs import get_env
from training.eval import evaluate
from training.injection import (
    ErrorInjector,
    answer_from_output,
    breakages,
    failed_attempt,
    first_attempt_code,
    mutations,
    wrong_attempt,
)
from training.metrics import compute_metrics, is_vacuous_check, rereads_question


def checker(tokenizer, *, rerun_own_code: bool):
    def reply(prompt_ids):
        text = tokenizer.decode(prompt_ids)
        question = re.findall(r"What is (.*?)\?", text)[-1]
        last_user = text.rsplit("<|im_start|>user\n", 1)[-1]
        if VERIFY_WITH_TOOLS[:20] in last_user:
            code = re.findall(r"```python\n(.*?)\n```", text, re.DOTALL)[-1] if rerun_own_code else f"print({question})"
            return f"```python\n{code}\n```"
        if "<tool_response>" in last_user:
            return f"Final answer: {re.findall(r'-?[0-9]+', last_user)[-1]}"
        return f"```python\nprint({question})\n```"

    return reply


def test_mutations_change_exactly_one_operator_or_number():
    variants = mutations("print(12 + 3 * 45)")
    assert "print(12 - 3 * 45)" in variants and "print(12 + 3 + 45)" in variants
    assert "print(13 + 3 * 45)" in variants and "print(12 + 3 * 54)" in variants
    assert "print(12 + 3 * 45)" not in variants
    assert all(v.count("print(") == 1 for v in variants)
    assert mutations("print('no numbers')") == [] and mutations("def (:") == []


def test_answer_from_output_takes_the_last_printed_line():
    assert answer_from_output("a\n42\n") == "42"
    assert answer_from_output("(no output — use print() to see values)") is None


def test_a_wrong_attempt_is_wrong_by_the_envs_own_scorer():
    env = get_env("arithmetic", level=1)
    task = env.tasks("test", n=1)[0]
    python = next(t for t in env.tools() if t.name == "python")
    code = f"print({task.question.removeprefix('What is ').rstrip('?')})"
    given = asyncio.run(wrong_attempt(code, task, env, python, random.Random(0)))
    assert given is not None and env.score(task, given["answer"]) == 0.0
    assert given["calls"][0]["arguments"]["code"] in mutations(code)


def test_breakages_drop_exactly_one_bracket():
    variants = breakages("print((1 + 2) * 3)")
    assert set(variants) == {"print(1 + 2) * 3)", "print((1 + 2 * 3)", "print((1 + 2) * 3"}
    assert breakages("x = 1") == []
    assert breakages("def (:") == []


def test_a_failed_attempt_errors_and_answers_a_number_the_tool_never_printed():
    env = get_env("arithmetic", level=6)
    task = env.tasks("test", n=1)[0]
    python = next(t for t in env.tools() if t.name == "python")
    code = f"print({task.question.removeprefix('What is ').rstrip('?')})"
    given = asyncio.run(failed_attempt(code, task, env, python, random.Random(0)))
    assert given is not None and env.score(task, given["answer"]) == 0.0
    broken = given["calls"][0]["arguments"]["code"]
    assert broken in breakages(code)
    result = asyncio.run(python.acall({"code": broken}))
    assert result.error and "SyntaxError" in result.content and given["answer"] not in result.content


def test_the_injector_refuses_a_share_outside_zero_to_one():
    env = get_env("arithmetic", level=1)
    with pytest.raises(ValueError, match="injected_failed_calls"):
        ErrorInjector(None, env, 0.5, failed_calls=1.5)


@pytest.mark.parametrize("name", ["injected-errors", "failed-calls"])
@pytest.mark.parametrize("rerun, fixes, vacuous", [(False, 1.0, 0.0), (True, 0.0, 1.0)])
def test_the_probe_tells_a_real_check_from_a_vacuous_one(scripted, rerun, fixes, vacuous, name):
    env = get_env("arithmetic", level=1)
    policy = scripted(checker(scripted.tokenizer, rerun_own_code=rerun))
    report = evaluate(policy, [env], n=4, probes=[name], exemplars=[], max_turns=4)
    (probe,) = report.probes
    assert probe.probe == name and probe.injected == 4 and probe.skipped == 0
    assert probe.fix_rate.value == fixes and probe.vacuous_check_rate.value == vacuous
    assert probe.false_alarm_rate.value == 0.0 and probe.false_alarm_rate.n == 4  # every first attempt was right
    baseline = report.row("arithmetic").metrics
    # on its own right attempts, re-deriving from the question writes the same code again: by the
    # metric's definition that check repeats the first attempt and could not have caught anything
    assert baseline.acc_t1.value == 1.0 and baseline.vacuous_check_rate.value == 1.0
    injected = report.trajectories[f"probe:{name}"]
    assert all(t.attempts[0].injected and not t.attempts[0].right for t in injected)
    given_failed = [m.get("error") for t in injected for m in t.messages if m.get("injected") and m["role"] == "tool"]
    assert given_failed == [name == "failed-calls"] * 4
    assert all(first_attempt_code(t) is None for t in injected)  # the given code is not the model's


def test_a_saved_evaluation_is_rescored_from_its_trajectories(scripted, tmp_path):
    """Rescoring reproduces the rows and probe results it was saved with, and follows a changed
    definition: here every saved verify step is made to repeat its first attempt's code."""
    from training.eval import EvalReport

    env = get_env("arithmetic", level=1)
    policy = scripted(checker(scripted.tokenizer, rerun_own_code=False))
    evaluate(policy, [env], n=3, probes=["injected-errors"], exemplars=[], max_turns=4).save(tmp_path)
    saved = EvalReport.load(tmp_path)
    again = saved.rescored()
    assert again.rows == saved.rows and again.probes == saved.probes
    for runs in saved.trajectories.values():
        for t in runs:
            tools = [m for m in t.messages if m["role"] == "tool"]
            for m in tools[1:]:
                m["arguments"] = tools[0]["arguments"]
    changed = saved.rescored()
    assert changed.probes[0].vacuous_check_rate.value == 1.0
    assert changed.row("arithmetic").metrics.vacuous_check_rate.value == 1.0
    assert saved.probes[0].vacuous_check_rate.value == 0.0


def test_a_check_without_a_tool_call_is_vacuous_and_a_run_without_one_is_not_counted(scripted):
    env = get_env("arithmetic", level=1)
    answers = iter(["Final answer: 1", "Final answer: 1"])
    policy = scripted(lambda ids: next(answers))
    report = evaluate(policy, [env], n=1, exemplars=[], max_turns=3)
    (traj,) = report.trajectories["baseline"]
    assert is_vacuous_check(traj) is True
    unverified = traj.model_copy(update={"messages": [m for m in traj.messages if m["role"] != "verify"]})
    assert is_vacuous_check(unverified) is None and compute_metrics([unverified]).vacuous_check_rate.n == 0


def _checked_with(check_code, question="What is 48 + 36 * 7?", first_code="print(48 + 63 * 7)"):
    from training.trajectory import Trajectory

    messages = [{"role": "user", "content": question},
                {"role": "tool", "name": "python", "arguments": {"code": first_code}},
                {"role": "verify", "content": "check"},
                {"role": "tool", "name": "python", "arguments": {"code": check_code}}]
    return Trajectory(task_id="t", question=question, prompt_ids=[], completion_ids=[], env_mask=[], logprobs=[],
                      messages=messages)


@pytest.mark.parametrize("code", ["print(48+63*7)", "print(\n  48 + 63*7 )"])
def test_a_respaced_copy_of_the_first_code_is_still_a_repeat(code):
    assert is_vacuous_check(_checked_with(code)) is True


@pytest.mark.parametrize("first, check", [
    ("print(48 + 36 + 7)", "x = 48 + 36 + 7\nprint(x)"),  # a miscopied operator, under a name
    ("x = 48 + 36 + 7\nprint(x)", "print(48 + 36 + 7)"),  # … and back
    ("print(48 * 36 * 7)", "result = ((48 * 36) * 7)\nprint(result)"),  # redundant brackets
    ("print(48 + 36 * 7)", "y = 36 * 7\nprint(y)"),  # a part of the same computation
    ("print(421 - 84 * (300 + 51))", "a = 36 * 7\nb = 421 - 84 * (300 + 51)\nprint(b)"),  # plus an unrelated line
    ("x = 599 * (28 + 633)\nprint(x)", "x = 599 * (28 + 633)\nx2 = x * (28 + 633)\nprint(x2)"),  # plus a made-up step
])
def test_the_first_attempts_arithmetic_written_in_another_form_is_still_a_repeat(first, check):
    """A name, a ``print`` or brackets are not a new computation: the form must not pass for a check."""
    assert is_vacuous_check(_checked_with(check, first_code=first)) is True


def test_the_check_reward_counts_repeats_by_call_unless_told_to_count_by_computation():
    from training.grpo import reward_fields

    renamed = _checked_with("x = 48 + 36 + 7\nprint(x)", first_code="print(48 + 36 + 7)")
    same = _checked_with("print(48 + 36 + 7)", first_code="print(48 + 36 + 7)")
    other_route = _checked_with("a = 36 + 7\nprint(48 + a)", first_code="print(48 + 36 + 7)")
    assert compute_metrics([renamed]).vacuous_check_rate.value == 1.0
    assert reward_fields([renamed, same, other_route])["vacuous_check"] == [0, 1, 0]
    assert reward_fields([renamed, same, other_route], check_rule="computation")["vacuous_check"] == [1, 1, 0]


@pytest.mark.parametrize("code", ["print(489)", "print(-489.0)", "x = 489\nprint(x)", "print(489 * 1)"])
def test_a_check_that_prints_its_answer_computes_nothing(code):
    """The first way a reward for checking was gamed: the verify turn printed the answer it had."""
    assert is_vacuous_check(_checked_with(code)) is True


@pytest.mark.parametrize("code", ["a = 63 * 7\nprint(48 + a)", "print(63 * 7 + 48)"])
def test_a_check_that_carries_over_the_first_attempts_made_up_number_is_a_copy(code):
    """Written another way, but from the code: 63 is in the first attempt and not in the question."""
    assert is_vacuous_check(_checked_with(code)) is True


@pytest.mark.parametrize("code", ["print(48 + 36 * 7)", "a = 36 * 7\nprint(a + 48)", "print(sum([48, 36 * 7]))"])
def test_a_computation_from_the_question_is_a_real_check(code):
    assert is_vacuous_check(_checked_with(code)) is False


def test_code_without_numbers_or_that_does_not_parse_is_not_judged():
    assert is_vacuous_check(_checked_with("print(f(x))")) is False
    assert is_vacuous_check(_checked_with("print(48 +")) is False


@pytest.mark.parametrize("first, check", [("print(48 + 36 * 7)", "print(48 + 36 * 7)"),
                                          ("print(48+(36*7))", "print(48+(36*7))"),
                                          ("x = 48 + 36 * 7\nprint(x)", "x = 48 + 36 * 7\nprint(x)"),
                                          ("print(48 + 36 * 7)", "x = 48 + 36 * 7\nprint(x)")])
def test_the_questions_own_expression_checked_again_cannot_be_told_apart(first, check):
    """Re-reading the question and copying a faithful first attempt compute the same thing, in whatever
    form: vacuous by the plain rate, left out of the separable one."""
    traj = _checked_with(check, first_code=first)
    assert is_vacuous_check(traj) is True and rereads_question(traj) is True
    m = compute_metrics([traj, _checked_with("print(48 + 63 * 7)")])
    assert m.vacuous_check_rate.value == 1.0
    assert m.vacuous_separable_rate.n == 1 and m.vacuous_separable_rate.value == 1.0


@pytest.mark.parametrize("first, check", [
    ("print(48 + 63 * 7)", "print(48 + 63 * 7)"),  # a miscopy repeated: the copy shows
    ("print(48 + 36 * 7)", "print(36 * 7 + 48)"),  # another way: a real check
    ("print(48 + 36 * 7)", "print(489)"),  # the answer printed
])
def test_other_checks_are_separable(first, check):
    assert rereads_question(_checked_with(check, first_code=first)) is False


def test_question_expression_is_the_longest_formula_in_the_question():
    from training.metrics import question_expression

    assert question_expression("What is (558 + 63) * (248 - 75) + 227 * 50?") == question_expression(
        "(558+63)*(248-75)+227*50")
    assert question_expression("Round 2.5 to 2 decimal places.") is None
    assert question_expression("Who wrote Hamlet?") is None


def test_unknown_probe_is_refused_before_anything_runs(scripted):
    with pytest.raises(ValueError, match="injected-errors"):
        evaluate(scripted(lambda ids: "x"), ["arithmetic"], n=1, probes=["typo"])


@pytest.mark.parametrize("failed_calls", [0.0, 1.0])
def test_the_injector_gives_failed_calls_for_its_share_of_the_attempts(scripted, failed_calls):
    from training.rollout import build_env_agent

    env = get_env("arithmetic", level=2)
    tasks = env.tasks("train", n=4)
    policy = scripted(checker(scripted.tokenizer, rerun_own_code=False))
    first_agent = build_env_agent(policy, env, max_turns=4, exemplars=[], self_correct=False)
    injector = ErrorInjector(first_agent, env, share=1.0, failed_calls=failed_calls)
    given = asyncio.run(injector.first_attempts(tasks))
    assert len(given) == 4
    python = next(t for t in env.tools() if t.name == "python")
    for task in tasks:
        attempt = given[task.id]
        result = asyncio.run(python.acall(attempt["calls"][0]["arguments"]))
        assert result.error == (failed_calls == 1.0) and env.score(task, attempt["answer"]) == 0.0


def test_a_probe_is_added_to_a_saved_evaluation_without_running_its_baseline_again(scripted, tmp_path):
    from training.eval import EvalReport, add_probes

    env = get_env("arithmetic", level=1)
    policy = scripted(checker(scripted.tokenizer, rerun_own_code=False))
    evaluate(policy, [env], n=3, probes=["injected-errors"], exemplars=[], max_turns=4).save(tmp_path)
    saved, before = EvalReport.load(tmp_path), len(policy.prompts)
    report = add_probes(saved, policy, [env], ["failed-calls"], exemplars=[], max_turns=4)
    assert [p.probe for p in report.probes] == ["injected-errors", "failed-calls"]
    assert report.trajectories["baseline"] == saved.trajectories["baseline"]
    assert len(report.trajectories["probe:failed-calls"]) == 3 and report.probes[1].fix_rate.value == 1.0
    assert len(policy.prompts) - before == 3 * 2  # the verify turns alone (a call, an answer), no baseline runs
    with pytest.raises(ValueError, match="already has the failed-calls probe"):
        add_probes(report, policy, [env], ["failed-calls"], exemplars=[], max_turns=4)


def test_replaying_own_errors_gives_a_wrong_own_attempt_as_it_is_and_changes_only_right_ones(scripted):
    """With replay_own, a first attempt the model got wrong is given unchanged (its code, its answer,
    marked replayed) and re-run for real in the verify run; a right one is still changed."""
    from training.rollout import build_env_agent, run_one

    env = get_env("arithmetic", level=1)
    tasks = env.tasks("train", n=4)
    wrong_ids = {t.id for t in tasks[:2]}
    right = checker(scripted.tokenizer, rerun_own_code=False)

    def reply(prompt_ids):  # first attempts of the first two tasks miscopied (+ 1); checks re-read the question
        text = scripted.tokenizer.decode(prompt_ids)
        question = re.findall(r"What is (.*?)\?", text)[-1]
        miscopy = any(t.question.removeprefix("What is ").rstrip("?") == question for t in tasks[:2])
        last_user = text.rsplit("<|im_start|>user\n", 1)[-1]
        if miscopy and "<tool_response>" not in last_user and VERIFY_WITH_TOOLS[:20] not in last_user:
            return f"```python\nprint({question} + 1)\n```"
        return right(prompt_ids)

    policy = scripted(reply)
    first_agent = build_env_agent(policy, env, max_turns=4, exemplars=[], self_correct=False)
    given = asyncio.run(ErrorInjector(first_agent, env, share=1.0, replay_own=True).first_attempts(tasks))
    assert set(given) == {t.id for t in tasks}
    for task in tasks:
        attempt, question = given[task.id], task.question.removeprefix("What is ").rstrip("?")
        assert env.score(task, attempt["answer"]) == 0.0
        if task.id in wrong_ids:
            assert attempt["replayed"] and [c["tool"] for c in attempt["calls"]] == ["python"]
            assert attempt["calls"][0]["arguments"]["code"].strip() == f"print({question} + 1)"
        else:
            assert "replayed" not in attempt and attempt["calls"][0]["arguments"]["code"].strip() in mutations(
                f"print({question})")
    agent = build_env_agent(policy, env, max_turns=4, exemplars=[])
    run = asyncio.run(run_one(agent, env, tasks[0], first_attempt=given[tasks[0].id]))
    assert run.attempts[0].injected and run.attempts[0].replayed and run.last_right


def test_a_check_that_takes_a_first_attempt_s_part_into_the_whole_question_is_new():
    question = "What is ((23 - 34) * 688 + 70) * 791 - 46?"
    part, whole = "x = (23 - 34) * 688 + 70\nprint(x)", "x = ((23 - 34) * 688 + 70) * 791 - 46\nprint(x)"
    assert is_vacuous_check(_checked_with(whole, question, part)) is False
    assert is_vacuous_check(_checked_with(part, question, whole)) is True  # the part of a whole: nothing new


def test_the_same_steps_under_other_names_are_a_repeat():
    first = "num = 240 + 24\nresult = num * (335 - 16)\nprint(result)"
    renamed = "x = 84216\ny = 240 + 24\nresult = (y * (335 - 16))\nprint(result)"
    assert is_vacuous_check(_checked_with(renamed, "What is (240 + 24) * (335 - 16)?", first)) is True


def test_a_check_of_a_first_attempt_worked_in_parts_by_the_whole_expression_is_another_route():
    """The ``parts`` exemplars' shape: the named steps and the one expression compute the answer two ways."""
    assert is_vacuous_check(_checked_with("x = 48 + 36 * 7\nprint(x)", first_code="a = 36 * 7\nprint(48 + a)")) is False
    # a name rebound in a loop is not read as its first value
    looped = "s = 48\nfor _ in range(1):\n    s = s + 36 * 7\nprint(s)"
    assert is_vacuous_check(_checked_with("x = 48 + 36 * 7\nprint(x)", first_code=looped)) is False


def test_names_read_by_value_stay_short_however_long_the_chain():
    """Hostile code that rebinds one name thousands of times must not grow the names it is read by."""
    import ast

    from training.metrics import _nodes

    names = [n.id for n in _nodes("a = 1\n" + "a = a * 2 + 1\n" * 3000 + "print(a)") if isinstance(n, ast.Name)]
    assert max(map(len, names)) <= 18
