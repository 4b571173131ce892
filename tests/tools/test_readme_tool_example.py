"""The README's "Plug in your own tool" example runs verbatim and prints what it says it prints.

Python blocks under that heading run in order in a scratch folder. A block whose first line is a
file name comment (``# my_tools.py``) is written to that file instead, so later blocks can import
it. Every ``print(...)  # expected`` line must print exactly ``expected``.
"""

from __future__ import annotations

import sys

import pytest

from tests.readme_example import readme_section, run_python_blocks

HEADING = "Plug in your own tool"


def test_readme_tool_example_runs_verbatim(tmp_path, monkeypatch):
    section = readme_section(HEADING)
    if section is None:
        pytest.skip(f"README.md has no '## {HEADING}' section yet; nothing to check")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    modules_before = set(sys.modules)
    try:
        printed, expected = run_python_blocks(section, tmp_path, HEADING)
    finally:
        for name in set(sys.modules) - modules_before:
            if getattr(sys.modules[name], "__file__", "") and str(tmp_path) in sys.modules[name].__file__:
                del sys.modules[name]
    assert printed == expected
