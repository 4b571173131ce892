import subprocess
import sys
import time

import pytest


def test_help_is_fast_and_does_not_import_torch():
    code = ("import sys, time; t = time.perf_counter()\n"
            "from typer.testing import CliRunner\n"
            "from anchorloop.cli import app\n"
            "r = CliRunner().invoke(app, ['--help'])\n"
            "assert r.exit_code == 0, r.output\n"
            "print(time.perf_counter() - t, 'torch' in sys.modules, 'transformers' in sys.modules)\n"
            "print(r.output)")
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    wall = time.perf_counter() - started
    seconds, torch_loaded, transformers_loaded, *_ = out.split()
    assert torch_loaded == "False" and transformers_loaded == "False"
    assert float(seconds) < 1.0, f"--help took {seconds} s"
    assert wall < 5.0
    for command in ("run", "envs", "tools"):
        assert command in out


def test_run_on_the_tiny_model_prints_trajectories_and_a_summary(tmp_path):
    out = tmp_path / "t.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "anchorloop", "run", "--env", "arithmetic", "--n", "2", "--model", "tiny-random",
         "--max-turns", "2", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Acc@t1" in result.stdout and "arithmetic" in result.stdout
    from training.trajectory import load_jsonl

    trajectories = load_jsonl(out)
    assert len(trajectories) == 2
    assert all(t.stop_reason for t in trajectories)


def test_unknown_env_is_a_clear_error():
    result = subprocess.run([sys.executable, "-m", "anchorloop", "run", "--env", "nope", "--model", "tiny-random"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "nope" in (result.stdout + result.stderr)


@pytest.mark.parametrize("env", ["humaneval", "wikiqa", "fanoutqa", "arithmetic"])
def test_run_works_for_every_built_in_env(env):
    result = subprocess.run(
        [sys.executable, "-m", "anchorloop", "run", "--env", env, "--n", "1", "--model", "tiny-random", "--max-turns",
         "1", "--quiet"], capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"{env}: 1 runs" in result.stdout


def test_eval_takes_env_options_like_run(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "anchorloop", "eval", "--env", "arithmetic", "--env-arg", "level=3", "--n", "1",
         "--model", "tiny-random", "--max-turns", "1", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    from training.trajectory import load_jsonl

    (traj,) = load_jsonl(tmp_path / "trajectories.jsonl")
    assert traj.task_id.startswith("arithmetic-L3-")


def test_train_env_arg_overrides_the_configs_env_options(tmp_path):
    from anchorloop.cli import env_overrides
    from training.config import load_config

    config = tmp_path / "c.toml"
    config.write_text('[env]\nname = "arithmetic"\nkwargs = { level = 2 }\n')
    cfg = load_config(config, env_overrides(["level=4"]))
    assert cfg.env.kwargs == {"level": 4}


def test_python_dash_m_anchorloop_is_the_cli():
    result = subprocess.run([sys.executable, "-m", "anchorloop", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "Usage: anchorloop" in result.stdout
