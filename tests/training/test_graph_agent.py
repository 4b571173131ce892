"""Your own LangGraph graph through anchorloop: evaluated, scored, trained (one attempt per run), from the CLI.

The graphs are real (``create_react_agent`` from ``tests/training/graph_example.py``), the tools real (the
arithmetic env's sandboxed python), the tokenizer SmolLM2's, the training step TRL's through our trainer.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from envs import get_env
from training.graph_agent import INEXACT, NOT_TRAINED, REWRITTEN, GraphAgent, check_graph
from training.rollout import build_env_agent, rollout, run_one

pytestmark = pytest.mark.filterwarnings("ignore:create_react_agent has been moved")

EXAMPLE = "tests.training.graph_example"
GRAPH = f"{EXAMPLE}:build_graph"
ROOT = Path(__file__).resolve().parents[2]


def call(code: str) -> str:
    return json.dumps({"name": "python", "arguments": {"code": code}}).join(["<tool_call>", "</tool_call>"])


def arithmetic_reply(tokenizer, wrong: tuple[str, ...] = ()):
    """The scripted model: compute the question's expression with the python tool (``(a + b) * c`` for the
    questions in ``wrong``), then give the tool's output as the final answer."""

    def reply(prompt_ids):
        text = tokenizer.decode(prompt_ids)
        expression = re.findall(r"What is ([^?]+)\?", text)[-1]
        if text.count("<|im_start|>assistant") == 1:  # the first turn: compute
            a, _, b, _, c = expression.split()
            return call(f"print(({a} + {b}) * {c})" if expression in wrong else f"print({expression})")
        observation = text.rsplit("<tool_response>", 1)[-1]
        return "Final answer: " + re.findall(r"-?\d+", observation)[0]

    return reply


def assert_sampled_exactly(traj, policy):
    """Every model turn's prompt is the row up to that turn, as the policy was given it."""
    seq = traj.prompt_ids + traj.completion_ids
    for span in traj.turn_spans:
        assert seq[: len(traj.prompt_ids) + span.start] in policy.prompts
        assert traj.env_mask[span.start : span.end] == [1] * (span.end - span.start)
    assert traj.num_model_tokens == sum(s.end - s.start for s in traj.turn_spans) > 0


# -- (a) evaluation: the graph's runs, scored by the env, one attempt each ---------------------------------


def test_evaluate_runs_a_react_graph_with_the_python_tool_one_attempt_per_run(scripted):
    from training.eval import BASELINE, evaluate, format_rate

    env = get_env("arithmetic", level=1)
    tasks = env.tasks("test", n=3)
    policy = scripted(arithmetic_reply(scripted.tokenizer, wrong=(tasks[2].question[8:-1],)))
    out = io.StringIO()
    report = evaluate(policy, [env], n=3, graph=GRAPH, protocol="json", max_turns=4, model="scripted",
                      console=Console(file=out))
    runs = report.trajectories[BASELINE]
    assert [t.task_id for t in runs] == [t.id for t in tasks]
    for traj, task in zip(runs, tasks, strict=True):
        [attempt] = traj.attempts  # no verify step: one attempt
        assert attempt.score == env.score(task, attempt.answer) and attempt.tool_calls_before == 1
        assert traj.stop_reason == "answered" and traj.turns == 2 and traj.tool_calls == 1
        assert [m["role"] for m in traj.messages] == ["user", "assistant", "tool", "assistant"]
        assert traj.messages[2]["name"] == "python" and traj.messages[2]["content"] == attempt.answer
        assert_sampled_exactly(traj, policy)
    assert [t.first_right for t in runs] == [True, True, False]
    m = report.row(env.name).metrics
    assert m.acc_t1.value == pytest.approx(2 / 3) and m.acc_t2 == m.acc_t1 and m.delta.value == 0.0
    for rate in (m.confirmatory_rate, m.verification_precision, m.vacuous_check_rate):
        assert format_rate(rate) == ("–", "")  # nothing to count, not a made-up number
    assert report.agent["graph"] == GRAPH

    # what our own graph reports for one attempt (self_correct=False): the same shape of row
    ours = evaluate(scripted(arithmetic_reply(scripted.tokenizer)), [env], n=3, protocol="json", exemplars=[],
                    self_correct=False, max_turns=4, console=Console(file=out))
    mine = ours.row(env.name).metrics
    assert mine.acc_t2 == mine.acc_t1 and mine.confirmatory_rate.n == mine.verification_precision.n == 0


def test_run_tasks_and_the_default_protocol_reach_the_graph(scripted):
    from training.runner import run_tasks

    env = get_env("arithmetic", level=1)
    tasks = env.tasks("test", n=2)

    def code_reply(ids):  # protocol "auto" with the python tool: code blocks, as for our own graph
        text = scripted.tokenizer.decode(ids)
        if text.count("<|im_start|>assistant") == 1:
            return f"```python\nprint({re.findall(r'What is ([^?]+)', text)[-1]})\n```\n"
        return "Final answer: " + re.findall(r"-?\d+", text.rsplit("<|im_start|>user", 1)[-1])[0]

    result = run_tasks(scripted(code_reply), env, tasks, graph=GRAPH, protocol="auto", max_turns=3,
                       self_correct=True, exemplars="stepwise", console=Console(file=io.StringIO()))
    assert result.metrics.acc_t1.value == 1.0 and result.metrics.n == 2
    assert all(len(t.attempts) == 1 and t.tool_calls == 1 for t in result.trajectories)
    assert "```python" in scripted.tokenizer.decode(result.trajectories[0].prompt_ids)  # the code protocol's prompt


# -- (c) runs that cannot be trained on, runs that stop, runs that break ---------------------------------------


class Unvouched:
    """A policy whose backend says its ids are not the ones it sampled (a re-tokenizing server)."""

    def __init__(self, policy):
        self.policy, self.tokenizer = policy, policy.tokenizer

    async def generate(self, prompt_ids, sampling, *, on_text=None):
        gen = await self.policy.generate(prompt_ids, sampling, on_text=on_text)
        return gen.model_copy(update={"metadata": {**gen.metadata, "token_ids_exact": False}})


def test_a_graph_that_rewrites_its_history_is_scored_but_kept_out_of_the_loss(scripted):
    from training.grpo import _trainable

    env = get_env("arithmetic", level=1)
    [task] = env.tasks("test", n=1)
    replies = [call("print(1 + 1)"), call(f"print({task.question[8:-1]})"), f"Final answer: {task.reference}"]
    policy = scripted(replies)
    agent = build_env_agent(policy, env, graph=f"{EXAMPLE}:build_trimming_graph", protocol="json")
    traj = asyncio.run(run_one(agent, env, task))
    [attempt] = traj.attempts
    assert attempt.score == 1.0 and traj.first_right  # scored and reported
    assert traj.stop_reason == "answered" + NOT_TRAINED + REWRITTEN
    assert traj.turns == 3 and traj.tool_calls == 2
    # the row of the answer (the third call, rendered afresh from the trimmed history) is carried, with no loss
    assert traj.prompt_ids == policy.prompts[2] and traj.completion_ids
    assert set(traj.env_mask) == {0} and set(traj.logprobs) == {0.0} and traj.num_model_tokens == 0
    assert _trainable(traj, scripted.tokenizer).env_mask == traj.env_mask
    json.loads(traj.jsonl_line())


def test_a_run_whose_ids_are_not_vouched_for_is_scored_but_kept_out_of_the_loss(scripted):
    env = get_env("arithmetic", level=1)
    [task] = env.tasks("test", n=1)
    policy = Unvouched(scripted([call(f"print({task.question[8:-1]})"), f"Final answer: {task.reference}"]))
    traj = asyncio.run(run_one(build_env_agent(policy, env, graph=GRAPH, protocol="json"), env, task))
    assert traj.first_right and traj.stop_reason == "answered" + NOT_TRAINED + INEXACT
    assert traj.turns == 2 and traj.completion_ids and traj.num_model_tokens == 0


def test_max_turns_stops_a_graph_that_keeps_calling_tools(scripted):
    env = get_env("arithmetic", level=1)
    [task] = env.tasks("test", n=1)
    policy = scripted(lambda ids: call("print(1)"))
    traj = asyncio.run(run_one(build_env_agent(policy, env, graph=GRAPH, protocol="json", max_turns=2), env, task))
    assert traj.stop_reason == "max_turns" and not traj.attempts and traj.turns == 2 == len(policy.prompts)
    assert traj.tool_calls == 2 and len(traj.turn_spans) == 2
    assert_sampled_exactly(traj, policy)  # a run without an answer is still an exact row to train on


def test_a_reply_that_is_neither_a_call_nor_an_answer_is_no_answer(scripted):
    env = get_env("arithmetic", level=1)
    [task] = env.tasks("test", n=1)
    traj = asyncio.run(run_one(build_env_agent(scripted(["I think it is big."]), env, graph=GRAPH), env, task))
    assert traj.stop_reason == "no_answer" and not traj.attempts and traj.parse_errors == 1
    assert traj.num_model_tokens > 0


def test_a_graph_that_raises_and_a_given_first_attempt_are_failed_runs_not_crashes(scripted):
    env = get_env("arithmetic", level=1)
    tasks = env.tasks("test", n=2)
    broken = build_env_agent(scripted([]), env, graph=f"{EXAMPLE}:build_raising_graph")
    runs = asyncio.run(rollout(broken, env, tasks))
    assert all(t.stop_reason.startswith("error: ") and "this node is broken" in t.stop_reason for t in runs)
    agent = build_env_agent(scripted([]), env, graph=GRAPH)
    given = {tasks[0].id: {"calls": [], "answer": "1"}}
    [traj, _] = asyncio.run(rollout(agent, env, tasks, first_attempts=given))
    assert traj.stop_reason.startswith("error: ") and "own verify step" in traj.stop_reason


def test_bad_graph_names_say_what_to_do(scripted):
    with pytest.raises(ValueError, match=r"no_such_module:build_graph.*no module named 'no_such_module'"):
        check_graph("no_such_module:build_graph")
    with pytest.raises(ValueError, match=r"has no attribute 'nope'.*module:function"):
        check_graph(f"{EXAMPLE}:nope")
    with pytest.raises(ValueError, match="is a int, not a function"):
        check_graph(f"{EXAMPLE}:NOT_A_FUNCTION")
    with pytest.raises(ValueError, match="must look like"):
        check_graph("build_graph")
    with pytest.raises(TypeError, match="not a compiled LangGraph graph"):
        GraphAgent(scripted([]), [], lambda model, tools: model)
    with pytest.raises(TypeError, match="does not know: first"):
        build_env_agent(scripted([]), get_env("arithmetic"), graph=GRAPH, first="x")


def test_the_config_names_the_graph_and_checks_it_when_it_loads(tmp_path):
    from training.config import ConfigError, TrainConfig, load_config

    config = TrainConfig.model_validate({"agent": {"graph": GRAPH}})
    assert config.agent.build_options()["graph"] == GRAPH
    assert "graph" not in TrainConfig().agent.build_options()  # our own graph's options are as they were
    path = tmp_path / "c.toml"
    path.write_text('[agent]\ngraph = "tests.training.graph_example:nope"\n')
    with pytest.raises(ConfigError, match=r"agent\.graph.*graph_example:nope.*has no attribute"):
        load_config(path)


# -- (b) one real GRPO step on the tiny model, through the graph -----------------------------------------------


def test_one_grpo_step_trains_on_the_graphs_rows(tmp_path):
    from training.config import TrainConfig
    from training.train import build_trainer
    from training.trajectory import load_jsonl

    config = TrainConfig.model_validate({
        "output_dir": str(tmp_path / "run"), "model": {"name": "tiny-random"},
        "env": {"name": "arithmetic", "kwargs": {"level": 1}, "train_tasks": 2},
        "agent": {"max_turns": 2, "max_new_tokens": 8, "graph": GRAPH},
        "training": {"steps": 1, "tasks_per_step": 1, "num_generations": 2, "report_to": [], "eval_every": 1,
                     "curve_tasks": 1},
    })
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    trainer, rollout_func = build_trainer(config, run_dir)
    trained = []
    original = trainer._compute_loss
    trainer._compute_loss = lambda m, inputs: trained.append(
        int((inputs["completion_mask"] * inputs["tool_mask"]).sum())) or original(m, inputs)
    try:
        trainer.train()
    finally:
        rollout_func.close()
    assert trainer.state.global_step == 1 and trained and sum(trained) > 0  # the graph's model tokens, in the loss
    [log] = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    assert log["step"] == 0 and "heldout_acc_t2" in log  # the held-out curve ran the graph too
    runs = load_jsonl(run_dir / "trajectories" / "step_00000.jsonl")
    assert len(runs) == 2 and all(len(t.attempts) <= 1 and t.num_model_tokens > 0 for t in runs)
    prompt = trainer.processing_class.decode(runs[0].prompt_ids)
    assert "Final answer: ANSWER" in prompt and runs[0].question in prompt  # PolicyChatModel's prompt, not ours


# -- (d) the command line ---------------------------------------------------------------------------------------


def test_eval_with_a_graph_on_the_tiny_model(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "anchorloop", "eval", "--graph", GRAPH, "--env", "arithmetic", "--n", "2",
         "--model", "tiny-random", "--max-turns", "2", "--max-new-tokens", "16", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env={**os.environ, "COLUMNS": "300"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "one attempt per run" in result.stdout and "Acc@t1" in result.stdout
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["agent"]["graph"] == GRAPH
    from training.trajectory import load_jsonl

    runs = load_jsonl(tmp_path / "trajectories.jsonl")
    assert len(runs) == 2 and all(len(t.attempts) <= 1 and t.prompt_ids for t in runs)


def cli(*args: str):
    from anchorloop.cli import app

    return CliRunner().invoke(app, list(args), env={"COLUMNS": "300"})


@pytest.mark.parametrize("command", ["eval", "run"])
def test_a_bad_graph_fails_before_the_model_loads_naming_it(command):
    result = cli(command, "--graph", "no_such_module:build_graph", "--model", "/no/such/model")
    assert result.exit_code == 2
    assert "no_such_module:build_graph" in result.output and "/no/such/model" not in result.output


def test_train_graph_overrides_the_config_and_a_bad_one_fails_at_once(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(f'output_dir = "{tmp_path / "run"}"\n[model]\nname = "/no/such/model"\n')
    result = cli("train", "--config", str(config), "--graph", f"{EXAMPLE}:nope")
    assert result.exit_code == 2 and f"{EXAMPLE}:nope" in result.output and "has no attribute" in result.output
    config.write_text(config.read_text() + "[training]\ninjected_errors = 0.5\n")
    result = cli("train", "--config", str(config), "--graph", GRAPH)
    assert result.exit_code == 2 and "training.injected_errors needs anchorloop's own verify step" in result.output
    assert not (tmp_path / "run").exists()


def test_eval_refuses_ablations_and_probes_with_a_graph():
    result = cli("eval", "--graph", GRAPH, "--ablate", "verify-tools", "--probe", "injected-errors",
                 "--model", "/no/such/model")
    assert result.exit_code == 2
    assert "--ablate, --probe need anchorloop's own verify step" in result.output and GRAPH in result.output
