"""The README's "Bring your own environment" example runs verbatim and prints what it says.

The python blocks under that heading run in order, in one namespace, in a scratch folder. Every
``print(...)  # expected`` line must print exactly ``expected``. Envs the example registers are
dropped afterwards.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from envs import registry

README = Path(__file__).resolve().parents[2] / "README.md"
HEADING = "Bring your own environment"
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
_EXPECTED = re.compile(r"^\s*print\(.*\)\s+#\s?(.*)$")


def readme_section(text: str, heading: str = HEADING) -> str | None:
    """The text under ``heading`` up to the next heading of the same or a higher level."""
    level, in_fence, kept = None, False, []
    for line in text.splitlines(keepends=True):
        if line.startswith("```"):
            in_fence = not in_fence
        found = None if in_fence else re.match(r"(#+)\s+(.*?)\s*$", line)
        if level is None:
            if found and found.group(2) == heading:
                level = len(found.group(1))
            continue
        if found and len(found.group(1)) <= level:
            break
        kept.append(line)
    return "".join(kept) if level is not None else None


def run_section(section: str) -> tuple[list[str], list[str]]:
    """Run the section's python blocks; return (printed lines, expected lines)."""
    blocks = [code for lang, code in _FENCE.findall(section) if lang in ("python", "py")]
    assert blocks, f"the README section '{HEADING}' has no python code block"
    namespace: dict = {"__name__": "__readme_example__"}
    printed, expected = io.StringIO(), []
    for code in blocks:
        expected += [m.group(1).rstrip() for line in code.splitlines() if (m := _EXPECTED.match(line))]
        with contextlib.redirect_stdout(printed):
            exec(compile(code, f"README.md ({HEADING})", "exec"), namespace)
    return printed.getvalue().splitlines(), expected


def test_readme_env_example_runs_verbatim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    section = readme_section(README.read_text(encoding="utf-8")) if README.exists() else None
    if section is None:
        pytest.skip(f"README.md has no '## {HEADING}' section yet; nothing to check")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(registry, "_registered", dict(registry._registered))
    printed, expected = run_section(section)
    assert expected, "the example should show its output as `print(...)  # expected` lines"
    assert printed == expected
