"""``load_tools``: built-ins, ``module:attr`` paths, and plug-ins found through entry points."""

from __future__ import annotations

import asyncio
import importlib
import subprocess
import sys
import textwrap

import pytest

from tools import Tool, available_tools, get_tool, load_tools
from tools.registry import ENTRY_POINT_GROUP

SAMPLE = "tests.tools.sample_tools"


def call(t: Tool, **args):
    return asyncio.run(t.acall(args))


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """An installed distribution (a real dist-info on sys.path) that registers tools."""
    package = tmp_path / "anchorloop_demo_plugin"
    package.mkdir()
    (package / "__init__.py").write_text(
        textwrap.dedent(
            '''
            from tools import Tool, tool

            @tool
            def dice(sides: int = 6) -> int:
                """Roll a loaded die: always the highest face."""
                return sides

            def demo_pack() -> list[Tool]:
                @tool
                def coin() -> str:
                    """Flip a coin that always lands heads."""
                    return "heads"
                return [dice, coin]
            '''
        )
    )
    dist = tmp_path / "anchorloop_demo_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: anchorloop-demo-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\n"
        "dice = anchorloop_demo_plugin:dice\n"
        "demo_pack = anchorloop_demo_plugin:demo_pack\n"
        "demo_broken = anchorloop_demo_plugin:no_such_thing\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield
    sys.modules.pop("anchorloop_demo_plugin", None)


# --- built-ins ------------------------------------------------------------------------------


def test_wikipedia_builtins_resolve_to_their_tools():
    assert [t.name for t in load_tools(["wikipedia"])] == ["wikipedia_search", "wikipedia_page"]
    assert [t.name for t in load_tools(["wikipedia_page", "wikipedia_search"])] == [
        "wikipedia_page",
        "wikipedia_search",
    ]
    assert get_tool("wikipedia_search").name == "wikipedia_search"


def test_python_builtin_resolves_when_the_sandbox_module_exists():
    pytest.importorskip("tools.python_exec", reason="tools.python_exec is not available in this checkout")
    (python,) = load_tools(["python"])
    assert isinstance(python, Tool)
    assert python.json_schema()["function"]["name"] == python.name


def test_a_single_name_may_be_given_as_a_string():
    assert [t.name for t in load_tools("wikipedia_search")] == ["wikipedia_search"]


# --- module:attr ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "names"),
    [
        (f"{SAMPLE}:word_count", ["word_count"]),  # a Tool
        (f"{SAMPLE}:text_tools", ["word_count", "shout"]),  # a list of Tools
        (f"{SAMPLE}:Shout", ["shout"]),  # a Tool subclass
        (f"{SAMPLE}:reverse", ["reverse"]),  # a plain function, wrapped with @tool
        (f"{SAMPLE}:today", ["today"]),  # a function without arguments is still a tool
        (f"{SAMPLE}:make_text_tools", ["count_letters", "shout"]),  # a factory, by annotation
        (f"{SAMPLE}:multiply", ["multiply"]),  # a LangChain tool
        (f"{SAMPLE}:Shout.Args", None),  # dotted attribute paths are followed (not a tool here)
    ],
)
def test_module_attr_paths_accept_every_kind_of_tool(path, names):
    if names is None:
        with pytest.raises(ValueError, match="not a tool"):
            load_tools([path])
        return
    assert [t.name for t in load_tools([path])] == names


def test_tools_loaded_from_paths_work():
    word_count, reverse, today, multiply = load_tools(
        [f"{SAMPLE}:word_count", f"{SAMPLE}:reverse", f"{SAMPLE}:today", f"{SAMPLE}:multiply"]
    )
    assert call(word_count, text="tools are anchors").content == "3"
    assert call(reverse, text="abc").content == "cba"
    assert reverse.description.startswith("Reverse a text")
    assert call(today).content == "Tuesday"
    assert call(multiply, a=6, b=7).content == "42"


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("no_such_module_xyz:thing", "no module named 'no_such_module_xyz'"),
        (f"{SAMPLE}:missing", "has no attribute 'missing'"),
        (f"{SAMPLE}:NOT_A_TOOL", "is a int, not a tool"),
        (f"{SAMPLE}:make_configured_tool", "needs arguments (prefix)"),
        (":word_count", "must look like 'package.module:attribute'"),
        (f"{SAMPLE}:", "must look like 'package.module:attribute'"),
    ],
)
def test_bad_paths_say_what_is_wrong(path, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_tools([path])


def test_an_import_error_inside_a_tool_module_is_not_disguised(tmp_path, monkeypatch):
    (tmp_path / "anchorloop_needs_dep.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="no_such_dependency_xyz"):
        load_tools(["anchorloop_needs_dep:anything"])


# --- entry points ---------------------------------------------------------------------------


def test_entry_point_plugins_load_by_name(plugin):
    (dice,) = load_tools(["dice"])
    assert call(dice).content == "6"
    assert [t.name for t in load_tools(["demo_pack"])] == ["dice", "coin"]


def test_available_tools_lists_builtins_and_plugins(plugin):
    names = available_tools()
    assert {"python", "wikipedia", "wikipedia_search", "wikipedia_page", "dice", "demo_pack"} <= set(names)
    assert "anchorloop-demo-plugin" in names["dice"]


def test_a_broken_plugin_fails_loudly(plugin):
    with pytest.raises(AttributeError, match="no_such_thing"):
        load_tools(["demo_broken"])


# --- errors ---------------------------------------------------------------------------------


def test_unknown_name_lists_what_exists_and_how_to_plug_in(plugin):
    with pytest.raises(ValueError) as info:
        load_tools(["calculator"])
    message = str(info.value)
    assert "Unknown tool 'calculator'" in message
    available = message.split("Available: ", 1)[1].split(".\n", 1)[0].split(", ")
    assert {"python", "wikipedia", "wikipedia_page", "wikipedia_search", "dice", "demo_pack"} <= set(
        available
    )
    assert "package.module:attr" in message
    assert f'[project.entry-points."{ENTRY_POINT_GROUP}"]' in message


def test_duplicate_tool_names_are_refused():
    with pytest.raises(ValueError, match="Two tools are named 'wikipedia_search'"):
        load_tools(["wikipedia", "wikipedia_search"])


def test_get_tool_wants_exactly_one():
    with pytest.raises(ValueError, match="resolves to 2 tools"):
        get_tool("wikipedia")


def test_importing_tools_stays_light():
    code = (
        "import sys, tools; heavy = [m for m in ('torch', 'langchain_core', 'wikipediaapi', "
        "'transformers', 'tools.wikipedia', 'tools.python_exec') if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
