"""The README's "Plug in your own tool" example runs verbatim and prints what it says it prints.

Python blocks under that heading run in order in a scratch folder. A block whose first line is a
file name comment (``# my_tools.py``) is written to that file instead, so later blocks can import
it. Every ``print(...)  # expected`` line must print exactly ``expected``.
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
HEADING = "Plug in your own tool"
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
_FILE_HEADER = re.compile(r"#\s*([\w/]+\.py)\s*$")
_EXPECTED = re.compile(r"^\s*print\(.*\)\s+#\s?(.*)$")


def readme_section(text: str, heading: str = HEADING) -> str | None:
    """The text under ``heading`` up to the next heading of the same or a higher level."""
    lines = text.splitlines(keepends=True)
    level, in_fence, kept = None, False, []
    for line in lines:
        if line.startswith("```"):
            in_fence = not in_fence
        heading_match = None if in_fence else re.match(r"(#+)\s+(.*?)\s*$", line)
        if level is None:
            if heading_match and heading_match.group(2) == heading:
                level = len(heading_match.group(1))
            continue
        if heading_match and len(heading_match.group(1)) <= level:
            break
        kept.append(line)
    return "".join(kept) if level is not None else None


def run_example(section: str, folder: Path) -> tuple[list[str], list[str]]:
    """Run the section's Python blocks in ``folder``; return (printed lines, expected lines)."""
    blocks = [code for lang, code in _FENCE.findall(section) if lang in ("python", "py")]
    assert blocks, f"the README section '{HEADING}' has no python code block"
    expected: list[str] = []
    out = io.StringIO()
    namespace: dict = {"__name__": "__readme_example__"}
    for code in blocks:
        header = _FILE_HEADER.match(code.splitlines()[0])
        if header:
            (folder / header.group(1)).write_text(code)
            continue
        expected += [m.group(1).rstrip() for line in code.splitlines() if (m := _EXPECTED.match(line))]
        with contextlib.redirect_stdout(out):
            exec(compile(code, f"README.md ({HEADING})", "exec"), namespace)
    return out.getvalue().splitlines(), expected


def test_readme_tool_example_runs_verbatim(tmp_path, monkeypatch):
    section = readme_section(README.read_text(encoding="utf-8")) if README.exists() else None
    if section is None:
        pytest.skip(f"README.md has no '## {HEADING}' section yet; nothing to check")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    modules_before = set(sys.modules)
    try:
        printed, expected = run_example(section, tmp_path)
    finally:
        for name in set(sys.modules) - modules_before:
            if getattr(sys.modules[name], "__file__", "") and str(tmp_path) in sys.modules[name].__file__:
                del sys.modules[name]
    assert printed == expected
