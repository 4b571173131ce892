"""A real module of user tools, loaded by ``load_tools`` through ``module:attr`` paths in the tests."""

from __future__ import annotations

from langchain_core.tools import tool as langchain_tool
from pydantic import BaseModel

from tools import Tool, tool


@tool
def word_count(text: str) -> int:
    """Count the words in a text.

    Args:
        text: The text to count words in.
    """
    return len(text.split())


def reverse(text: str) -> str:
    """Reverse a text (a plain function: load_tools wraps it with @tool).

    Args:
        text: The text to reverse.
    """
    return text[::-1]


def today() -> str:
    """A tool without arguments, not a factory: its return annotation is not a Tool."""
    return "Tuesday"


class Shout(Tool):
    name = "shout"
    description = "Upper-case a text."

    class Args(BaseModel):
        text: str

    args_schema = Args

    def run(self, args: Args) -> str:
        return args.text.upper()


text_tools = [word_count, Shout()]


def make_text_tools(suffix: str = "") -> list[Tool]:
    """A factory: called with no arguments because it says it returns tools."""

    @tool(name=f"count_letters{suffix}")
    def count_letters(text: str) -> int:
        """Count the letters in a text."""
        return sum(c.isalpha() for c in text)

    return [count_letters, Shout()]


def make_configured_tool(prefix: str) -> Tool:
    """A factory that cannot be called without arguments."""
    raise AssertionError("never called")


@langchain_tool
def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


NOT_A_TOOL = 42
