"""The audit, end to end on the tiny random model, and its statistics recomputed from the saved rows."""

import itertools
import json
import os
import re
import subprocess
import sys

import pytest

from envs.base import Env, Task
from envs.scoring import numeric_match
from tools import get_tool
from training.audit import SAYS_RIGHT, AuditReport, AuditRow, audit, auroc, judge_bias, rescore, signal_audit
from training.judge import GroupJudgement, PairVerdict
from training.metrics import wilson
from training.report import write_report
from training.signals import SIGNALS, answer_key
from training.trajectory import Attempt, Trajectory


def test_audit_command_end_to_end_on_the_tiny_model(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "anchorloop", "audit", "--env", "arithmetic", "--env-arg", "level=1", "--n", "2",
         "--num-generations", "2", "--model", "tiny-random", "--max-turns", "2", "--max-new-tokens", "24",
         "--seed", "3", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "precision" in result.stdout and "self-judge habits" in result.stdout
    data = json.loads((tmp_path / "audit.json").read_text())
    assert data["runs"] == 4 and data["n"] == 2 and data["generations"] == 2 and data["signals"] == list(SIGNALS)
    assert (tmp_path / "audit.png").read_bytes()[:4] == b"\x89PNG"
    assert len((tmp_path / "trajectories.jsonl").read_text().splitlines()) == 4
    report = AuditReport.load(tmp_path)
    assert [a.signal for a in report.audits] == list(SIGNALS)
    for audited in report.audits:  # every number comes from the saved (signal, truth) pairs
        name = audited.signal
        paid = [SAYS_RIGHT[name][1](r.signals[name]) for r in report.rows]
        right = [r.right for r in report.rows]
        hits = sum(p and r for p, r in zip(paid, right))
        assert audited.precision == wilson(hits, sum(paid)) and audited.recall == wilson(hits, sum(right))
        assert audited.says_right == sum(paid) and audited.right == sum(right)
    judge = next(a for a in report.audits if a.signal == "self_judge")
    assert judge.cost.calls == 2 * report.judge.pairs
    assert report.judge.unparsed.n == 2 * report.judge.pairs
    assert next(a for a in report.audits if a.signal == "majority").cost.calls == 0

    # the same runs, one signal computed again (no model needed): nothing sampled, the rest kept as saved
    def audit_cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "anchorloop", "audit", *args], capture_output=True, text=True,
                              timeout=600, env={**os.environ, "COLUMNS": "300"})

    again = audit_cli("--env", "arithmetic", "--rescore", str(tmp_path), "--signal", "majority")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "Loading model" not in again.stdout
    rescored = AuditReport.load(tmp_path)
    assert rescored.signals == ["majority", "self_judge", "tool_check", "belief"]
    assert [(r.task_id, r.right, r.signals) for r in rescored.rows] == [(r.task_id, r.right, r.signals)
                                                                        for r in report.rows]
    assert [a.signal for a in rescored.audits] == rescored.signals and rescored.judge == report.judge
    assert (rescored.sampled, rescored.rollout_seconds, rescored.model) == (report.created, report.rollout_seconds,
                                                                           "tiny-random")
    # refused before any model loads: another env, or another model for the judge and the belief
    wrong_env = audit_cli("--env", "wikiqa", "--rescore", str(tmp_path))
    assert wrong_env.returncode == 2 and "pass --env arithmetic" in wrong_env.stderr
    wrong_model = audit_cli("--env", "arithmetic", "--rescore", str(tmp_path), "--signal", "belief")
    assert wrong_model.returncode == 2 and "pass --model tiny-random" in wrong_model.stderr
    nothing = audit_cli("--rescore", str(tmp_path / "nope"))
    assert nothing.returncode == 2 and "holds no saved audit runs" in nothing.stderr


def test_audit_refuses_an_unknown_signal_before_loading_a_model():
    result = subprocess.run([sys.executable, "-m", "anchorloop", "audit", "--signal", "vibes", "--model", "nope"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    said = " ".join(result.stdout.split())  # rich wraps lines
    assert "vibes" in said and "majority, self_judge, tool_check, belief" in said


def row(value, right, name="self_judge"):
    return AuditRow(task_id="t", group=0, answer="1", right=right, signals={name: value})


def test_precision_recall_and_auroc_on_hand_made_rows():
    rows = [row(0.9, True), row(0.8, False), row(0.4, True), row(0.2, False), row(0.5, False)]
    audited = signal_audit("self_judge", rows)
    # says right (> 0.5): 0.9 (right), 0.8 (wrong) → precision 1/2; right runs 0.9, 0.4 → recall 1/2
    assert (audited.precision.value, audited.recall.value) == (0.5, 0.5)
    # right {0.9, 0.4} vs wrong {0.8, 0.2, 0.5}: 0.9 beats 3, 0.4 beats 1 → 4/6
    assert audited.auroc == pytest.approx(4 / 6)
    assert auroc([1.0, 1.0], [True, False]) == 0.5 and auroc([1.0], [True]) is None
    assert signal_audit("majority", [row(1.0, True, "majority")]).auroc is None  # not graded


def test_judge_bias_counts_wrong_over_right_and_position():
    def run(answer, right):
        return Trajectory(task_id="t", prompt_ids=[1], completion_ids=[2], env_mask=[1], logprobs=[0.0],
                          attempts=[Attempt(answer=answer, turn=0, score=float(right))])

    runs = [run("42", True), run("41", False), run("41", False)]
    right_key, wrong_key = answer_key("42"), answer_key("41")
    # the judge always picks the first shown: one vote each way, inconsistent; position bias 100%
    always_first = GroupJudgement(task_id="t", verdicts=[PairVerdict(first=right_key, second=wrong_key,
                                                                     forward="A", backward="A")])
    bias = judge_bias([always_first], runs)
    assert bias.first_position.value == 1.0 and bias.consistency.value == 0.0
    assert bias.wrong_over_right.value == 0.5 and bias.wrong_over_right_pairs.n == 0
    # a consistent judge for the wrong, commoner answer
    fooled = GroupJudgement(task_id="t", verdicts=[PairVerdict(first=right_key, second=wrong_key,
                                                               forward="B", backward="A")])
    bias = judge_bias([fooled], runs)
    assert bias.wrong_over_right_pairs.value == 1.0 and bias.prefers_common.value == 1.0
    assert bias.first_position.value == 0.5 and bias.unparsed.value == 0.0


class TimesTable(Env):
    """Products to compute with Python; the answer key is only read by ``score``."""

    name = "times"

    def tools(self):
        return [get_tool("python")]

    def tasks(self, split="test", n=None, seed=0):
        return [Task(id=f"t{a}", question=f"What is {a} * 7?", reference=a * 7) for a in range(3, 7)][:n]

    def score(self, task, answer):
        return numeric_match(answer, task.reference)


def test_audit_on_varied_runs_through_the_real_graph_and_sandbox(scripted, tiny_model, tmp_path):
    calls = itertools.count()

    def reply(prompt_ids):
        text = scripted.tokenizer.decode(prompt_ids)
        if "Which answer is correct?" in text:  # the judge: for the product of 7 it can read, else "A"
            shown = re.search(r"Answer A: (\d+)\nAnswer B: (\d+)", text).groups()
            question = re.findall(r"What is (\d+) \* 7\?", text)[-1]
            return "A" if shown[0] == str(int(question) * 7) or shown[1] != str(int(question) * 7) else "B"
        k = next(calls)
        if "<tool_response>" not in text.rsplit("<|im_start|>user", 1)[-1]:
            a = re.findall(r"What is (\d+) \* 7\?", text)[-1]
            return f"```python\nprint({a} * {7 if k % 3 else 8})\n```"  # every third run computes the wrong product
        printed = re.findall(r"<tool_response>\s*(\d+)", text)[-1]
        return f"Final answer: {printed if k % 4 else int(printed) + 1}"  # some answers differ from the print

    policy = scripted(reply)
    policy.model = tiny_model  # belief reads the weights (the scripted ids are that tokenizer's)
    report = audit(policy, TimesTable(), n=4, generations=3, protocol="code", exemplars=[], self_correct=False,
                   max_turns=3)
    assert report.runs == 12 and 0 < sum(r.right for r in report.rows) < 12
    by_name = {a.signal: a for a in report.audits}
    for name, audited in by_name.items():
        paid = [SAYS_RIGHT[name][1](r.signals[name]) for r in report.rows]
        right = [r.right for r in report.rows]
        hits = sum(p and r for p, r in zip(paid, right))
        assert audited.precision == wilson(hits, sum(paid)) and audited.recall == wilson(hits, sum(right))
    assert by_name["tool_check"].says_right > 0 and by_name["majority"].says_right > 0
    assert report.judge.pairs > 0 and by_name["self_judge"].cost.calls == 2 * report.judge.pairs
    assert by_name["belief"].cost.calls > 0 and by_name["self_judge"].auroc is not None
    # the model's signals spend no calls on first answers the audit does not read, and write no value for them
    assert not {"self_judge_first", "belief_first"} & {name for t in report.trajectories for name in t.signals}
    report.save(tmp_path / "audit")
    # the saved runs computed again by the signals as they are now: nothing sampled, the same numbers
    prompts = len(policy.prompts)
    again = rescore(policy, TimesTable(), tmp_path / "audit", model=report.model)
    assert len(policy.prompts) - prompts == by_name["self_judge"].cost.calls  # the judge only, no new runs
    assert (again.n, again.runs, again.rollout_seconds) == (report.n, report.runs, report.rollout_seconds)
    assert [(r.task_id, r.answer, r.right) for r in again.rows] == [(r.task_id, r.answer, r.right) for r in report.rows]
    for a, b in zip(again.rows, report.rows):
        assert a.signals == pytest.approx(b.signals, abs=1e-4)
    assert [(a.says_right, a.true_positives) for a in again.audits] == [(a.says_right, a.true_positives)
                                                                        for a in report.audits]
    page = write_report(tmp_path).read_text()
    assert "Label-free signals vs the answer key (audit)" in page and "tool_check" in page
    assert (tmp_path / "plots" / "audit-audit.png").is_file()


def test_readme_section_command_and_rewards_are_real(tmp_path):
    from anchorloop.cli import app
    from tests.readme_example import _FENCE, cli_commands, readme_section
    from training.config import load_config

    section = readme_section("Training without an answer key")
    [command] = cli_commands(section)
    assert command[:2] == ["anchorloop", "audit"]
    from typer.main import get_command

    options = {o for p in get_command(app).commands["audit"].params for o in p.opts}
    assert {arg for arg in command if arg.startswith("--")} <= options
    [toml] = [code for lang, code in _FENCE.findall(section) if lang == "toml"]
    (tmp_path / "c.toml").write_text(toml)
    assert load_config(tmp_path / "c.toml").rewards.signals() == ["majority", "tool_check"]
