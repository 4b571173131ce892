"""Error messages say what to do, shown as written: plug-in instructions keep their TOML, an output_dir
that is a file, a tool parameter without a type hint, and an unknown model that fails at once, offline."""

from __future__ import annotations

import logging
import time

import pytest
from typer.testing import CliRunner


def test_error_text_is_not_read_as_markup():
    from anchorloop.cli import app

    result = CliRunner().invoke(app, ["run", "--tool", "no_such_tool", "--model", "tiny-random"],
                                env={"COLUMNS": "300"})
    assert result.exit_code == 2
    assert '[project.entry-points."anchorloop.tools"]' in result.output


def test_an_output_dir_that_is_a_file_says_what_to_do(tmp_path):
    from training.config import TrainConfig
    from training.train import train

    (tmp_path / "run").write_text("not a folder")
    config = TrainConfig.model_validate({"output_dir": str(tmp_path / "run"), "model": {"name": "tiny-random"}})
    with pytest.raises(FileExistsError, match="is a file, not a folder: set output_dir"):
        train(config)


def test_a_tool_parameter_without_a_type_hint_is_named_when_the_tool_loads(caplog):
    from tools import tool

    def lookup(key, limit: int = 3) -> str:
        """Look a key up."""
        return str(key)

    with caplog.at_level(logging.WARNING, logger="tools.base"):
        tool(lookup)
    (message,) = [r.getMessage() for r in caplog.records]
    assert "'lookup'" in message and "'key'" in message and "key: str" in message


def test_an_unknown_model_fails_at_once_without_looking_it_up():
    from agent.models import ModelNotFoundError, load_model

    started = time.perf_counter()
    with pytest.raises(ModelNotFoundError, match="no hub model of that id is in the local Hugging Face cache"):
        load_model("nobody-here/no-such-model-anywhere")
    with pytest.raises(ModelNotFoundError, match="smollm2-135m"):
        load_model("not a valid id !!")
    assert time.perf_counter() - started < 5


def test_an_unknown_engine_and_a_missing_vllm_are_named_before_anything_runs():
    import importlib.util

    from anchorloop.cli import app

    for command in (["run", "--n", "1"], ["eval", "--n", "1"], ["audit", "--n", "1"]):
        result = CliRunner().invoke(app, [*command, "--model", "tiny-random", "--engine", "sglang"],
                                    env={"COLUMNS": "300"})
        assert result.exit_code == 2 and "choose one of hf, vllm; got 'sglang'" in result.output
    if importlib.util.find_spec("vllm") is None:
        result = CliRunner().invoke(app, ["run", "--n", "1", "--model", "tiny-random", "--engine", "vllm"],
                                    env={"COLUMNS": "300"})
        assert result.exit_code != 0 and "make setup-vllm-cpu" in result.output
