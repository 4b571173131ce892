import io
import json
import re

import pytest
from rich.console import Console

from agent.prompts import VERIFY_WITH_TOOLS, VERIFY_WITHOUT_TOOLS
from envs.jsonl import JsonlEnv
from tools import tool
from training.eval import (
    ABLATIONS,
    BASELINE,
    Configuration,
    EvalReport,
    Transitions,
    configurations,
    evaluate,
    format_rate,
    load_trajectories,
)
from training.metrics import paired_difference, wilson
from training.trajectory import load_jsonl


@tool
def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: first number
        b: second number
    """
    return a + b


def call(a: int, b: int) -> str:
    return f'<tool_call>{{"name": "add", "arguments": {{"a": {a}, "b": {b}}}}}</tool_call>'


# Per question: (replies before the verify request, replies after it). When asked to verify
# without tools, the scripted model just repeats itself: reflection with no anchor confirms.
SCRIPT = {
    "What is 2 + 3?": (["Final answer: 6"], [call(2, 3), "Final answer: 5"]),  # wrong → right
    "What is 1 + 1?": (["Final answer: 2"], ["Final answer: 2"]),  # right, confirmed
    "What is 4 + 4?": ([call(4, 4), "Final answer: 8"], ["Final answer: 9"]),  # right → wrong
    "What is 0 + 0?": (["Final answer: 7"], ["Final answer: 7"]),  # wrong, confirmed
}
ANSWERS = {"What is 2 + 3?": "5", "What is 1 + 1?": "2", "What is 4 + 4?": "8", "What is 0 + 0?": "0"}


def script_reply(tokenizer):
    def reply(prompt_ids):
        text = tokenizer.decode(prompt_ids)
        question = next(q for q in SCRIPT if q in text)
        first, second = SCRIPT[question]
        for instruction in (VERIFY_WITH_TOOLS, VERIFY_WITHOUT_TOOLS):
            if instruction in text:
                phase = text[text.index(instruction):]
                turn = phase.count("<|im_start|>assistant") - 1
                if instruction == VERIFY_WITHOUT_TOOLS:
                    return first[-1]
                return second[min(turn, len(second) - 1)]
        turn = text.count("<|im_start|>assistant") - 1
        return first[min(turn, len(first) - 1)]

    return reply


@pytest.fixture
def env(tmp_path):
    path = tmp_path / "sums.jsonl"
    path.write_text("".join(json.dumps({"id": f"q{i}", "question": q, "answer": a}) + "\n"
                            for i, (q, a) in enumerate(ANSWERS.items())))
    return JsonlEnv(path, scorer="exact", tools=[add], name="sums")


@pytest.fixture
def report(scripted, env):
    policy = scripted(script_reply(scripted.tokenizer))
    return evaluate(policy, [env], n=None, ablations=["verify-tools", "self-correct"], protocol="json",
                    exemplars=[], model="scripted", console=Console(file=io.StringIO()))


def test_baseline_metrics_match_the_script(report):
    m = report.row("sums").metrics
    assert m.n == 4
    assert m.acc_t1.value == 0.5 and m.acc_t2.value == 0.5
    assert m.delta.value == 0.0
    assert m.delta_i_to_c.value == 0.25 and m.delta_c_to_i.value == 0.25
    assert m.tool_use_rate.value == 0.5
    assert m.tool_error_rate.value == 0.0 and m.tool_error_rate.n == 2
    assert m.confirmatory_rate.value == 0.5 and m.confirmatory_rate.n == 4
    assert m.verification_precision.value == 0.5 and m.verification_precision.n == 2
    assert report.row("sums").transitions == Transitions(right_right=1, right_wrong=1, wrong_right=1,
                                                         wrong_wrong=1)
    assert m.acc_t1 == wilson(2, 4)


def test_ablation_rows_differ_as_the_switches_say(report):
    assert [c.name for c in report.configs] == [BASELINE, "no-verify-tools", "no-self-correct"]
    no_tools = report.row("sums", "no-verify-tools").metrics
    assert no_tools.confirmatory_rate.value == 1.0  # nothing anchors the check: every answer is confirmed
    assert no_tools.delta.value == 0.0 and no_tools.delta_i_to_c.value == 0.0
    single = report.row("sums", "no-self-correct").metrics
    assert single.confirmatory_rate.n == 0 and single.verification_precision.n == 0
    assert single.acc_t1 == single.acc_t2
    assert all(len(t.attempts) == 1 for t in report.trajectories["no-self-correct"])
    assert all(len(t.attempts) == 2 for t in report.trajectories[BASELINE])
    # the same tasks, in the same order, in every configuration
    ids = {name: [t.task_id for t in ts] for name, ts in report.trajectories.items()}
    assert ids[BASELINE] == ids["no-verify-tools"] == ids["no-self-correct"] == ["q0", "q1", "q2", "q3"]
    shown = {m["content"] for t in report.trajectories["no-verify-tools"] for m in t.messages
             if m["role"] == "verify"}
    assert shown == {f"The question was: {t.question}\n\n{VERIFY_WITHOUT_TOOLS}"
                     for t in report.trajectories["no-verify-tools"]}


def test_json_round_trip_with_trajectories(report, tmp_path):
    path = report.save(tmp_path / "eval1")
    assert path.name == "eval.json"
    data = json.loads(path.read_text())
    assert "trajectories" not in data and data["model"] == "scripted"
    assert data["agent"]["protocol"] == "json" and data["agent"]["sampling"]["temperature"] == 0.0
    loaded = EvalReport.load(path.parent)
    assert loaded.rows == report.rows and loaded.configs == report.configs
    assert {k: len(v) for k, v in loaded.trajectories.items()} == {BASELINE: 4, "no-verify-tools": 4,
                                                                   "no-self-correct": 4}
    assert loaded.trajectories[BASELINE] == report.trajectories[BASELINE]
    # the plain trajectory reader still reads the file (the config key is extra)
    assert len(load_jsonl(path.parent / "trajectories.jsonl")) == 12


def test_several_envs_get_an_all_row(scripted, env, tmp_path):
    other = tmp_path / "more.jsonl"
    other.write_text(json.dumps({"question": "What is 1 + 1?", "answer": "2"}) + "\n")
    policy = scripted(script_reply(scripted.tokenizer))
    rep = evaluate(policy, [env, JsonlEnv(other, tools=[add], name="more")], n=2, protocol="json",
                   exemplars=[], self_correct=False, console=Console(file=io.StringIO()))
    assert [(r.env, r.config) for r in rep.rows] == [("sums", BASELINE), ("more", BASELINE), ("all", BASELINE)]
    assert rep.row("all").metrics.n == 3 and rep.row("more").metrics.acc_t1.value == 1.0


def test_table_has_a_row_per_env_and_configuration(report):
    console = Console(record=True, width=200)
    console.print(report.table())
    text = console.export_text()
    for name in (BASELINE, "no-verify-tools", "no-self-correct"):
        assert name in text
    assert "Acc@t1" in text and "verif." in text and "sums (4)" in text
    assert re.search(r"50\.0\s", text) and "15–85" in text  # 2/4 with its Wilson interval


def test_table_fits_an_80_column_terminal(report):
    console = Console(record=True, width=80)
    console.print(report.table())
    text = console.export_text()
    assert "…" not in text and "no-verify-" in text and "-49,+49" in text  # long names fold, none cut


def test_format_rate_is_compact_and_handles_nothing_counted():
    assert format_rate(wilson(0, 0)) == ("–", "")
    assert format_rate(wilson(1, 2)) == ("50.0", "9–91")
    assert format_rate(paired_difference([False, False], [True, False]))[0] == "+50.0"


def test_configuration_errors_name_the_fix():
    with pytest.raises(ValueError, match="verify-tools"):
        configurations(["tools-off"], {})
    with pytest.raises(ValueError, match="already has"):
        configurations(["self-correct"], {"self_correct": False})
    with pytest.raises(ValueError, match="self_correct=False"):
        configurations(["verify-tools"], {"self_correct": False})
    custom = Configuration(name="short", agent={"max_turns": 2})
    assert [c.name for c in configurations([custom, "verify-tools"], {})] == [BASELINE, "short", "no-verify-tools"]
    with pytest.raises(ValueError, match="self_correct=False"):
        configurations(["restate-question"], {"self_correct": False})
    assert set(ABLATIONS) == {"verify-tools", "self-correct", "restate-question"}


def test_trajectory_file_with_a_broken_line_names_the_line(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"task_id": "a", "prompt_ids": [], "completion_ids": [], "env_mask": [], "logprobs": []}\n'
                    "{not json\n")
    with pytest.raises(ValueError, match=r"t\.jsonl:2"):
        load_trajectories(path)
