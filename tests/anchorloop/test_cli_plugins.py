"""User code from the command line: envs named ``module:Class``, tools named ``module:function`` or
``module:Tool`` with ``--tool``, a plain string where one tool is meant, names checked before the model
loads; and the README's plug-in commands, run as written on the tiny model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.readme_example import cli_commands, readme_section, run_python_blocks

REPO = Path(__file__).resolve().parents[2]
ANCHORLOOP = Path(sys.executable).parent / "anchorloop"  # the console script: cwd is not on its sys.path

DATE_TOOLS = '''
from datetime import date


def days_between(date_a: str, date_b: str) -> int:
    """Days from one ISO date to another.

    Args:
        date_a: the first date, YYYY-MM-DD.
        date_b: the second date, YYYY-MM-DD.
    """
    return (date.fromisoformat(date_b) - date.fromisoformat(date_a)).days
'''
DAYS_ENV = '''
from date_tools import days_between
from envs import Env, Task, register
from envs.scoring import numeric_match
from tools import tool


@register
class DaysEnv(Env):
    name = "days"

    def tools(self):
        return [tool(days_between)]

    def tasks(self, split="test", n=None, seed=0):
        return [Task(id="d0", question="How many days from 2024-01-01 to 2024-03-01?", reference=60)][:n]

    def score(self, task, answer):
        return numeric_match(answer, task.reference)
'''
DAYS_JSONL = '{"question": "How many days from 2024-01-01 to 2024-01-31?", "answer": "30"}\n'


@pytest.fixture
def user_folder(tmp_path, monkeypatch):
    """A folder of user code; what a test imports or registers from it is forgotten afterwards."""
    from envs import registry

    (tmp_path / "date_tools.py").write_text(DATE_TOOLS)
    (tmp_path / "days_env.py").write_text(DAYS_ENV)
    (tmp_path / "days.jsonl").write_text(DAYS_JSONL)
    monkeypatch.setattr(registry, "_registered", dict(registry._registered))
    modules = set(sys.modules)
    yield tmp_path
    for module in set(sys.modules) - modules:
        if str(tmp_path) in (getattr(sys.modules[module], "__file__", "") or ""):
            del sys.modules[module]


def anchorloop(folder: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(ANCHORLOOP), *args], cwd=folder, capture_output=True, text=True, timeout=timeout,
                          env={"COLUMNS": "200", "PATH": str(ANCHORLOOP.parent), "HOME": str(Path.home())})


@pytest.mark.skipif(not ANCHORLOOP.exists(), reason="the anchorloop console script is not installed")
def test_the_console_script_runs_an_env_and_a_tool_from_the_current_folder(user_folder):
    out = user_folder / "runs.jsonl"
    result = anchorloop(user_folder, "run", "--env", "days_env:DaysEnv", "--tool", "python", "--n", "1",
                        "--model", "tiny-random", "--max-turns", "1", "--out", str(out))
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "days: 1 runs" in result.stdout
    from training.trajectory import load_jsonl

    (traj,) = load_jsonl(out)
    assert traj.env == "days"
    # a jsonl env with its scorer from --env-arg and its tool as one plain string, not a list of characters
    result = anchorloop(user_folder, "run", "--env", "jsonl:days.jsonl", "--env-arg", "scorer=numeric",
                        "--env-arg", "tools=date_tools:days_between", "--n", "1", "--model", "tiny-random",
                        "--max-turns", "1", "--quiet")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "days: 1 runs" in result.stdout


@pytest.mark.parametrize("args, named", [
    (["run", "--env", "days_env:Nope"], "has no attribute 'Nope'"),
    (["run", "--env", "no_such_module:Env"], "no module named 'no_such_module'"),
    (["run", "--tool", "date_tools:nope"], "has no attribute 'nope'"),
    (["eval", "--tool", "nonexistent_tool"], "Unknown tool 'nonexistent_tool'"),
    (["run", "--env", "jsonl:days.jsonl", "--env-arg", "tools=d"], "Unknown tool 'd'"),
    (["train", "--config", str(REPO / "configs" / "quickstart.toml"), "--output-dir", "run", "--env",
      "days_env:DaysEnv", "--tool", "date_tools:nope"], "has no attribute 'nope'"),
    (["run", "--env", "days"], "module:Class"),  # registered in code the CLI never imported: say how to name it
])
def test_bad_env_and_tool_names_fail_before_the_model_loads(user_folder, monkeypatch, args, named):
    from anchorloop.cli import app

    monkeypatch.chdir(user_folder)
    monkeypatch.syspath_prepend(str(user_folder))
    # a model that does not exist: reaching it would fail with another message
    result = CliRunner().invoke(app, [*args, "--model", str(user_folder / "no-model")], env={"COLUMNS": "300"})
    assert result.exit_code == 2, result.output
    assert named in result.output and "Could not load model" not in result.output


def test_one_tool_may_be_a_plain_string_and_extra_tools_join_the_envs_own(user_folder, monkeypatch):
    from envs import get_env, with_tools

    monkeypatch.syspath_prepend(str(user_folder))
    env = get_env(f"jsonl:{user_folder / 'days.jsonl'}", scorer="numeric", tools="date_tools:days_between")
    assert [t.name for t in env.tools()] == ["days_between"]
    both = with_tools(get_env("arithmetic"), ["date_tools:days_between", "python"])
    assert [t.name for t in both.tools()] == ["python", "days_between"]  # python is not offered twice
    assert both.tasks("test", n=2) == get_env("arithmetic").tasks("test", n=2)
    # a name that stands for several tools brings all of them, in the envs and from the CLI alike
    wiki = with_tools(get_env("arithmetic"), ["wikipedia", "date_tools:days_between"])
    assert [t.name for t in wiki.tools()] == ["python", "wikipedia_search", "wikipedia_page", "days_between"]
    jsonl = get_env(f"jsonl:{user_folder / 'days.jsonl'}", scorer="numeric", tools=["wikipedia"])
    assert [t.name for t in jsonl.tools()] == ["wikipedia_search", "wikipedia_page"]


def test_train_and_demo_take_env_and_tools_over_the_config(tmp_path):
    from anchorloop.cli import env_overrides
    from training.config import load_config

    config = tmp_path / "c.toml"
    config.write_text('[env]\nname = "arithmetic"\nkwargs = { level = 2 }\ntools = "python"\n')
    assert load_config(config).env.tools == ["python"]
    cfg = load_config(config, env_overrides(["scorer=numeric"], "jsonl:x.jsonl", ["my_tools:fn"]))
    assert (cfg.env.name, cfg.env.kwargs, cfg.env.tools) == ("jsonl:x.jsonl", {"scorer": "numeric"}, ["my_tools:fn"])


SHORT = ["--max-turns", "2", "--max-new-tokens", "16"]
ADDED = {"run": SHORT, "eval": SHORT, "chat": SHORT, "train": ["--steps", "1"]}
SMALL_CONFIG = """# configs/quickstart.toml, cut down to seconds for the tiny model
[env]
train_tasks = 2
[agent]
protocol = "code"
max_turns = 2
max_new_tokens = 16
[training]
steps = 1
tasks_per_step = 1
num_generations = 2
report_to = []
"""


@pytest.mark.parametrize("heading", ["Plug in your own tool", "Bring your own environment"])
def test_the_readme_plug_in_commands_run_on_the_tiny_model(heading, user_folder, monkeypatch):
    from anchorloop.cli import app

    section = readme_section(heading)
    assert section is not None, f"README.md has no '{heading}' section"
    commands = cli_commands(section)
    assert {c[1] for c in commands} >= {"run"}, "the section should show its CLI route"
    monkeypatch.chdir(user_folder)
    monkeypatch.syspath_prepend(str(user_folder))
    (user_folder / "configs").mkdir()
    (user_folder / "configs" / "quickstart.toml").write_text(SMALL_CONFIG)
    run_python_blocks(section, user_folder, heading)  # writes my_tools.py / lengths.py, capitals.jsonl
    for command in commands:
        name = command[1]
        result = CliRunner().invoke(app, [*command[1:], "--model", "tiny-random", *ADDED.get(name, [])],
                                    input="/exit\n", env={"COLUMNS": "200"})
        assert result.exit_code == 0, f"{' '.join(command)}:\n{result.output[-3000:]}"


def test_the_readme_langgraph_section_runs_as_written_on_the_tiny_model(user_folder, monkeypatch):
    """Its graph module, its Python example (PolicyChatModel under create_react_agent) and its
    run / eval / train commands, with the config it shows written where it says."""
    import re

    from anchorloop.cli import app

    section = readme_section("Train your own LangGraph agent")
    assert section is not None, "README.md has no 'Train your own LangGraph agent' section"
    monkeypatch.chdir(user_folder)
    monkeypatch.syspath_prepend(str(user_folder))
    (config,) = re.findall(r"^```toml\n(.*?)^```", section, re.MULTILINE | re.DOTALL)
    (user_folder / "my_graph.toml").write_text(config + 'report_to = []\n')
    printed, _ = run_python_blocks(section, user_folder, "Train your own LangGraph agent")
    assert any(line.startswith("task-1") for line in printed)  # the recorded row of the Python example
    commands = cli_commands(section)
    assert [c[1] for c in commands] == ["run", "eval", "train"]
    for command in commands:
        result = CliRunner().invoke(app, command[1:], env={"COLUMNS": "200"})
        assert result.exit_code == 0, f"{' '.join(command)}:\n{result.output[-3000:]}"
    assert (user_folder / "runs" / "my-graph" / "final").is_dir()
