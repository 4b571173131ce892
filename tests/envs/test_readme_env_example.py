"""The README's "Bring your own environment" example runs verbatim and prints what it says.

The python blocks under that heading run in order, in one namespace, in a scratch folder (a block
headed by a file name comment is written to that file, so later blocks import it). Every
``print(...)  # expected`` line must print exactly ``expected``. Envs the example registers are
dropped afterwards.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from envs import registry
from tests.readme_example import readme_section, run_python_blocks

HEADING = "Bring your own environment"


def test_readme_env_example_runs_verbatim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    section = readme_section(HEADING)
    if section is None:
        pytest.skip(f"README.md has no '## {HEADING}' section yet; nothing to check")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_registered", dict(registry._registered))
    modules_before = set(sys.modules)
    try:
        printed, expected = run_python_blocks(section, tmp_path, HEADING)
    finally:
        for name in set(sys.modules) - modules_before:
            if str(tmp_path) in (getattr(sys.modules[name], "__file__", "") or ""):
                del sys.modules[name]
    assert expected, "the example should show its output as `print(...)  # expected` lines"
    assert printed == expected
