"""Running the README's examples as written: the text under a heading, its Python blocks (a block whose
first line is a file name comment, ``# my_tools.py``, is written to that file instead of run), the
``print(...)  # expected`` lines they promise, and the ``anchorloop …`` commands of its bash blocks."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
_FILE_HEADER = re.compile(r"#\s*([\w/]+\.py)\s*$")
_EXPECTED = re.compile(r"^\s*print\(.*\)\s+#\s?(.*)$")


def readme_section(heading: str, text: str | None = None) -> str | None:
    """The text under ``heading`` up to the next heading of the same or a higher level."""
    if text is None:
        text = README.read_text(encoding="utf-8") if README.exists() else ""
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


def run_python_blocks(section: str, folder: Path, label: str) -> tuple[list[str], list[str]]:
    """Run the section's Python blocks in one namespace, writing file blocks into ``folder``;
    return (printed lines, expected lines)."""
    blocks = [code for lang, code in _FENCE.findall(section) if lang in ("python", "py")]
    assert blocks, f"the README section '{label}' has no python code block"
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
            exec(compile(code, f"README.md ({label})", "exec"), namespace)
    return out.getvalue().splitlines(), expected


def cli_commands(section: str) -> list[list[str]]:
    """The ``anchorloop …`` lines of the section's bash blocks, split as a shell would (comments dropped)."""
    commands = []
    for lang, code in _FENCE.findall(section):
        if lang in ("bash", "sh", "shell"):
            commands += [shlex.split(line, comments=True) for line in code.splitlines()
                         if line.strip().startswith("anchorloop ")]
    return commands
