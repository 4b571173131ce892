"""The label-free signals' arithmetic on hand-made groups, and their runs on real parts (graph, sandbox, model)."""

import asyncio

import pytest

from agent.graph import build_agent
from envs import get_env
from envs.scoring import supported_by_evidence
from tools import get_tool
from training.belief import BeliefScorer, belief_credits, belief_gain, turn_credit_tokens
from training.judge import PairVerdict, SelfJudge, judge_scores, parse_verdict
from training.labelfree import annotate
from training.rollout import rollout
from training.signals import (
    annotate_cheap,
    answer_diversity,
    answer_key,
    check_signals,
    key_of,
    majority_agreement,
    tool_check,
)
from training.trajectory import Attempt, Trajectory, TurnSpan

# -- majority -------------------------------------------------------------------------------------


def test_majority_compares_numbers_as_numbers():
    assert majority_agreement(["42", "Final answer: 42.0", "$42", "7"]) == [1.0, 1.0, 1.0, 0.0]
    assert majority_agreement(["Paris", "paris.", "Lyon"]) == [1.0, 1.0, 0.0]


def test_majority_tie_means_no_pseudo_label_and_no_answer_never_votes():
    assert majority_agreement(["1", "2"]) == [0.0, 0.0]
    assert majority_agreement(["1", "1", "2", "2"]) == [0.0, 0.0, 0.0, 0.0]
    assert majority_agreement([None, None, "3"]) == [0.0, 0.0, 1.0]  # two silent runs are not a majority
    assert majority_agreement([None, None]) == [0.0, 0.0]
    assert majority_agreement(["5", "5", "6"]) == [1.0, 1.0, 0.0]


def test_answer_keys_and_diversity():
    assert answer_key("12") == answer_key("12.00") != answer_key("13")
    assert answer_key("") is None and answer_key(None) is None
    assert answer_diversity(["1", "1", "1", "1"]) == 0.25
    assert answer_diversity(["1", "2", None, "2.0"]) == 0.75


def test_answers_compare_as_their_env_scores_them(tmp_path):
    from envs.jsonl import JsonlEnv

    arithmetic, wikiqa = key_of(get_env("arithmetic")), key_of(get_env("wikiqa"))
    assert arithmetic("Final answer: 42.0") == arithmetic("$42") and arithmetic("Apollo 11") == arithmetic("11")
    # text: a number inside a name is not the answer, and SQuAD's normalisation decides what is the same
    assert wikiqa("Apollo 11") != wikiqa("11") and wikiqa("3 Doors Down") != wikiqa("3 Musketeers")
    assert wikiqa("The Beatles.") == wikiqa("beatles") and wikiqa("") is None and wikiqa(None) is None
    assert majority_agreement(["Apollo 11", "11", "Apollo 11"], wikiqa) == [1.0, 0.0, 1.0]
    assert majority_agreement(["Apollo 11", "11", "11"], wikiqa) == [0.0, 1.0, 1.0]
    assert answer_diversity(["July 4, 1776", "March 1776"], wikiqa) == 1.0 == 2 * answer_diversity(["1", "1.0"])
    rows = tmp_path / "q.jsonl"
    rows.write_text('{"question": "Who?", "answer": "The Beatles"}\n')
    assert key_of(JsonlEnv(rows, scorer="squad_em"))("Apollo 11") == wikiqa("Apollo 11")
    assert key_of(JsonlEnv(rows, scorer="numeric"))("Apollo 11") == arithmetic("11")
    exact = key_of(JsonlEnv(rows, scorer="exact"))
    assert exact("The Beatles") != exact("Beatles") and exact("3.5") != exact("35")  # as `exact` scores them
    assert wikiqa("A") == "a" and wikiqa("The") == "the"  # emptied by SQuAD's rules, still an answer
    # programs: the same code is the same answer, whatever numbers two different ones hold
    programs = tmp_path / "p.jsonl"
    programs.write_text('{"question": "Write f.", "answer": "", "tests": "assert f([2, 1]) == [1, 2]"}\n')
    code = key_of(JsonlEnv(programs, scorer="python_tests"))
    first = "```python\ndef f(xs):\n    return sorted(xs)[:2]\n```"
    second = "def f(xs):\n    xs.sort()\n    return xs[0:2]"
    assert code(first) != code(second) and code(first) == code(first.replace("    ", "  "))
    assert arithmetic(first) == arithmetic(second)  # what the numeric default would have merged
    assert key_of(object()) is answer_key  # an env without the method: numbers, else text


def own_answers(*attempts: list[Attempt]) -> list[Trajectory]:
    return [Trajectory(task_id="t", question="What is 6*7?", prompt_ids=[1], completion_ids=[2], env_mask=[1],
                       logprobs=[0.0], attempts=list(a)) for a in attempts]


def test_answers_the_environment_injected_never_vote():
    injected = Attempt(answer="41", turn=-1, injected=True)
    # every run starts from the same injected 41; two never answered after it
    runs = own_answers([injected], [injected], [injected, Attempt(answer="42", turn=1)],
                       [injected, Attempt(answer="43", turn=1)])
    annotate_cheap(runs, get_env("arithmetic"), ["majority"])
    assert [t.signals["majority"] for t in runs] == [0.0] * 4  # 42 and 43 tie: no label, nothing for silence
    assert [t.signals["majority_first"] for t in runs] == [0.0] * 4
    runs = own_answers([injected], [injected, Attempt(answer="42", turn=1)], [injected, Attempt(answer="42", turn=1)])
    annotate_cheap(runs, get_env("arithmetic"), ["majority"])
    assert [t.signals["majority"] for t in runs] == [0.0, 1.0, 1.0]


def test_unknown_signal_names_the_known_ones():
    with pytest.raises(ValueError, match="majority, self_judge, tool_check, belief"):
        check_signals(["majority", "vibes"])
    assert check_signals(["belief", "majority", "belief"]) == ["belief", "majority"]


# -- self_judge -----------------------------------------------------------------------------------


def test_parse_verdict_takes_one_letter_or_none():
    assert parse_verdict("A") == "A" and parse_verdict(" B.") == "B" and parse_verdict("Answer b") == "B"
    assert parse_verdict("(A) is correct") == "A"
    assert parse_verdict("A or B") is None and parse_verdict("I cannot tell") is None and parse_verdict("") is None
    assert parse_verdict("Bob") is None
    # the article "a" is no vote: otherwise every reply using it would lean towards A
    assert parse_verdict("B is a better answer") == "B" and parse_verdict("It is a guess") is None
    assert parse_verdict("answer: a") == "A" and parse_verdict("(b)") == "B" and parse_verdict("a") is None
    assert parse_verdict("The correct answer is b") == "B"  # a lone "b" is no article


def test_a_judge_that_always_says_first_has_its_vote_killed_by_consistency():
    keys = ["x", "y", "z"]
    always_first = [PairVerdict(first=a, second=b, forward="A", backward="A") for a, b in [("x", "y"), ("x", "z"),
                                                                                          ("y", "z")]]
    assert not any(v.consistent for v in always_first)
    assert judge_scores(keys, always_first) == {"x": 0.5, "y": 0.5, "z": 0.5}
    # a consistent judge that prefers x: x wins all its pairs, z loses all its pairs
    prefers = [PairVerdict(first="x", second="y", forward="A", backward="B"),
               PairVerdict(first="x", second="z", forward="A", backward="B"),
               PairVerdict(first="y", second="z", forward="A", backward="B")]
    assert judge_scores(keys, prefers) == {"x": 1.0, "y": 0.5, "z": 0.0}
    # half consistent: x wins its consistent pair, the other pair is a positional vote each way
    mixed = [PairVerdict(first="x", second="y", forward="A", backward="B"),
             PairVerdict(first="x", second="z", forward="B", backward="B")]
    # x: votes x, x, z, x → win 3/4; consistency 1/2 → 0.5 + 0.5 * 0.25
    assert judge_scores(["x"], mixed)["x"] == pytest.approx(0.625)
    # an unparsed reply is no vote, and the pair is not consistent
    garbled = [PairVerdict(first="x", second="y", forward=None, backward="B")]
    assert judge_scores(["x", "y"], garbled) == {"x": 0.5, "y": 0.5}
    assert judge_scores(["alone"], []) == {"alone": 0.5}


def test_judge_asks_both_orders_through_the_policy(scripted):
    def reply(prompt_ids):  # prefers the answer 42 wherever it is shown
        text = scripted.tokenizer.decode(prompt_ids)
        return "A" if "Answer A: 42" in text else "B"

    policy = scripted(reply)
    judge = SelfJudge(policy)
    judgement = asyncio.run(judge.judge_group("t", "What is 6*7?", ["42", "41", "42.0", "40"]))
    assert judge.calls == 6 == len(policy.prompts)  # 3 distinct answers → 3 pairs × 2 orders
    scores = judgement.scores
    assert scores[answer_key("42")] == 1.0
    # 41 loses to 42 (consistently) and splits with 40 by position: win 1/4, consistency 1/2
    assert scores[answer_key("41")] == scores[answer_key("40")] == 0.375


def test_judge_on_the_real_tiny_model_scores_its_own_verdicts(tiny_policy):
    judge = SelfJudge(tiny_policy)
    [judgement] = asyncio.run(judge.judge_groups([("t", "What is 2+2?", ["4", "5"])]))
    assert judge.calls == 2 and len(judgement.verdicts) == 1 and judge.seconds > 0
    assert set(judgement.scores) == {answer_key("4"), answer_key("5")}
    assert judgement.scores == judge_scores(list(judgement.scores), judgement.verdicts)


def test_the_judge_tells_answers_apart_as_the_env_does(scripted):
    policy = scripted(lambda prompt_ids: "A")
    judge = SelfJudge(policy, key=key_of(get_env("wikiqa")))
    judgement = asyncio.run(judge.judge_group("t", "Which mission?", ["Apollo 11", "11", "apollo 11."]))
    assert len(judgement.verdicts) == 1 and judge.calls == 2  # two answers, not one number


# -- tool_check -----------------------------------------------------------------------------------


def run_code_agent(scripted, replies):
    env = get_env("arithmetic", level=1)
    task = env.tasks("test", n=1)[0]
    agent = build_agent(scripted(replies), [get_tool("python")], protocol="code", exemplars=[], self_correct=False)
    [traj] = asyncio.run(rollout(agent, env, [task]))
    return env, traj


def test_tool_check_reads_what_the_sandboxed_code_printed(scripted):
    env, printed = run_code_agent(scripted, ["```python\nprint(6 * 7)\n```", "Final answer: 42"])
    assert printed.tool_calls == 1 and tool_check(printed, env) == 1.0
    env, other = run_code_agent(scripted, ["```python\nprint(6 * 7)\n```", "Final answer: 41"])
    assert tool_check(other, env) == 0.0
    env, no_tool = run_code_agent(scripted, ["Final answer: 42"])
    assert no_tool.tool_calls == 0 and tool_check(no_tool, env) == 0.0


def test_evidence_check_for_numbers_and_passages():
    assert supported_by_evidence("42", ["42\n"]) and supported_by_evidence("42.0", ["result: 42"])
    assert not supported_by_evidence("4", ["42\n"])
    assert supported_by_evidence("Gustave Eiffel", ["The tower was built by gustave eiffel's company."])
    assert not supported_by_evidence("Eiffel", ["Eiffelturm"]) and not supported_by_evidence("", ["x"])


# -- belief ---------------------------------------------------------------------------------------


def test_a_belief_that_never_moves_is_worth_nothing():
    assert belief_gain([-3.0, -3.0, -3.0]) == 0.0 and belief_credits([-3.0, -3.0, -3.0]) == [0.0, 0.0]
    assert belief_gain([-2.5]) == 0.0 and belief_gain([]) == 0.0
    assert belief_gain([-5.0, -4.0, -1.5]) == 3.5 and belief_credits([-5.0, -4.0, -1.5]) == [1.0, 2.5]


def test_a_turns_credit_lands_on_its_own_sampled_tokens_clipped():
    traj = Trajectory(task_id="t", prompt_ids=[1], completion_ids=list(range(9)), logprobs=[0.0] * 9,
                      env_mask=[1, 1, 1, 1, 0, 1, 0, 1, 1], belief_curve=[-5.0, -4.5, -1.0],
                      turn_spans=[TurnSpan(start=0, end=3, attempt=0), TurnSpan(start=3, end=6, attempt=0),
                                  TurnSpan(start=7, end=9, attempt=0)])
    # turn 0 raised the belief by 0.5, turn 1 by 3.5 (clipped to 1); the inserted tokens (4, 6) and
    # the turn that wrote the answer (7-8) get nothing
    assert turn_credit_tokens(traj) == [0.5, 0.5, 0.5, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0]
    assert turn_credit_tokens(traj.model_copy(update={"belief_curve": []})) == [0.0] * 9


def test_belief_from_the_cache_equals_a_plain_forward_pass(tiny_model, tokenizer):
    import torch

    ids = tokenizer("What is 2 + 3? Let me compute. It is 5.", add_special_tokens=False)["input_ids"]
    prompt, completion = ids[:6], ids[6:]
    traj = Trajectory(task_id="t", prompt_ids=prompt, completion_ids=completion, env_mask=[1] * len(completion),
                      logprobs=[0.0] * len(completion), attempts=[Attempt(answer="5", turn=2)],
                      turn_spans=[TurnSpan(start=0, end=3, attempt=0), TurnSpan(start=3, end=5, attempt=0),
                                  TurnSpan(start=5, end=len(completion), attempt=0)])
    scorer = BeliefScorer(tiny_model, tokenizer)
    curve = scorer.curve(traj, "5", upto_turn=2)
    cue = tokenizer("Final answer:", add_special_tokens=False)["input_ids"]
    target = tokenizer(" 5", add_special_tokens=False)["input_ids"]
    expected = []
    for point in (0, 3, 5):
        row = torch.tensor([prompt + completion[:point] + cue + target])
        with torch.no_grad():
            logp = torch.log_softmax(tiny_model(input_ids=row).logits[0].float(), dim=-1)
        start = len(prompt) + point + len(cue)
        expected.append(sum(float(logp[start - 1 + j, t]) for j, t in enumerate(target)))
    assert curve == pytest.approx(expected, abs=1e-4)
    assert scorer.forward_passes == 4
    assert scorer.curve(traj, "5", upto_turn=0) == pytest.approx(expected[:1], abs=1e-4)


def test_annotate_writes_every_signal_for_last_and_first_answers(scripted, tiny_policy):
    env, right = run_code_agent(scripted, ["```python\nprint(6 * 7)\n```", "Final answer: 42"])
    _, wrong = run_code_agent(scripted, ["Final answer: 41"])
    _, same = run_code_agent(scripted, ["Final answer: 42"])
    runs = [right, wrong, same]
    result = asyncio.run(annotate(runs, env, ["majority", "tool_check", "self_judge", "belief"], policy=tiny_policy))
    assert [t.signals["majority"] for t in runs] == [1.0, 0.0, 1.0]
    assert [t.signals["tool_check"] for t in runs] == [1.0, 0.0, 0.0]
    assert right.signals["belief"] != 0.0 and wrong.signals["belief"] == 0.0  # one turn: nothing moved
    assert right.signals["self_judge"] == same.signals["self_judge"]  # the same answer, the same score
    assert result.costs["self_judge"].calls == 2 and result.costs["belief"].calls == 3
    assert all(f"{name}_first" in t.signals for t in runs for name in ("majority", "tool_check", "self_judge",
                                                                        "belief"))


def test_groups_are_blocks_of_the_group_size_even_for_a_task_drawn_twice():
    from training.signals import annotate_cheap, groups_of

    def run(answer):
        return Trajectory(task_id="same", prompt_ids=[1], completion_ids=[2], env_mask=[1], logprobs=[0.0],
                          attempts=[Attempt(answer=answer, turn=0)])

    runs = [run("1"), run("1"), run("2"), run("3")]
    assert groups_of(runs) == [[0, 1, 2, 3]] and groups_of(runs, 2) == [[0, 1], [2, 3]]
    annotate_cheap(runs, None, ["majority"], group_size=2)
    assert [t.signals["majority"] for t in runs] == [1.0, 1.0, 0.0, 0.0]  # the second group ties: no label
    with pytest.raises(ValueError, match="groups of 3"):
        groups_of(runs, 3)


def test_belief_in_a_first_answer_that_differs_is_its_own_curve(tiny_policy, tokenizer):
    ids = tokenizer("What is 2 + 3? It is 4. Check: 2 + 3 = 5. It is 5.", add_special_tokens=False)["input_ids"]
    prompt, completion = ids[:6], ids[6:]
    spans = [TurnSpan(start=0, end=3, attempt=0), TurnSpan(start=3, end=7, attempt=0),
             TurnSpan(start=7, end=len(completion), attempt=1)]

    def run(first: str) -> Trajectory:
        return Trajectory(task_id="t", prompt_ids=prompt, completion_ids=completion, env_mask=[1] * len(completion),
                          logprobs=[0.0] * len(completion), turn_spans=spans,
                          attempts=[Attempt(answer=first, turn=1), Attempt(answer="5", turn=2)])

    changed, kept = run("4"), run("5")
    asyncio.run(annotate([changed, kept], get_env("arithmetic"), ["belief"], policy=tiny_policy))
    scorer = BeliefScorer(tiny_policy.model, tiny_policy.tokenizer)
    last = scorer.curve(changed, "5", upto_turn=2)
    assert changed.signals["belief"] == pytest.approx(belief_gain(last), abs=1e-4) == kept.signals["belief"]
    # a first answer that differs gets a curve of its own, up to the turn that wrote it
    assert changed.signals["belief_first"] == pytest.approx(belief_gain(scorer.curve(changed, "4", upto_turn=1)),
                                                            abs=1e-4)
    # the same text: the last answer's curve, cut at the first answer's turn
    assert kept.signals["belief_first"] == pytest.approx(belief_gain(last[:2]), abs=1e-4)
    assert changed.signals["belief_first"] != pytest.approx(kept.signals["belief_first"], abs=1e-6)
