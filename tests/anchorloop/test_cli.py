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
