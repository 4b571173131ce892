"""Reading tool calls back: hostile JSON becomes an error the model is shown, quickly, never an exception."""

from __future__ import annotations

import time

import pytest

from agent.protocols import MAX_CALL_DEPTH, get_protocol


def call(arguments: str) -> str:
    return '<tool_call>{"name": "add", "arguments": ' + arguments + "}</tool_call>"


@pytest.fixture(params=["json", "code"])
def protocol(request):
    return get_protocol(request.param)


@pytest.mark.parametrize("text", [
    "<tool_call>" + "[" * 1000,  # deep enough to exhaust Python's recursion limit
    call("[" * 1000 + "]" * 1000),
    call('"' + "[" * 1000 + '"'),  # the same inside arguments given as a string
    call("[" * (MAX_CALL_DEPTH + 1) + "]" * (MAX_CALL_DEPTH + 1)),  # shallow enough to read, still refused
])
def test_deeply_nested_json_is_refused(protocol, text):
    action = protocol.parse(text)
    assert not action.tool_calls and f"nests deeper than {MAX_CALL_DEPTH} levels" in action.error


def test_nesting_within_the_limit_is_read(protocol):
    nested = "[" * (MAX_CALL_DEPTH - 2) + "1" + "]" * (MAX_CALL_DEPTH - 2)
    (parsed,) = protocol.parse(call('{"a": ' + nested + "}")).tool_calls
    assert parsed.arguments["a"] == eval(nested)


def test_an_integer_too_long_to_read_is_an_error(protocol):
    action = protocol.parse(call('{"a": ' + "9" * 5000 + "}"))
    assert not action.tool_calls and "number too long" in action.error


def test_long_whitespace_inside_a_call_is_read_in_linear_time(protocol):
    started = time.perf_counter()
    action = protocol.parse("<tool_call>x" + " " * 200_000 + "y</tool_call>")
    assert time.perf_counter() - started < 1.0
    assert "not valid JSON" in action.error


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("quoted", [False, True])  # in the arguments object, or in arguments given as a string
def test_nan_and_infinity_are_refused_as_not_json(protocol, constant, quoted):
    arguments = '{"a": ' + constant + ', "b": 1}'
    action = protocol.parse(call('"' + arguments.replace('"', '\\"') + '"' if quoted else arguments))
    assert not action.tool_calls
    assert f"uses {constant}, which is not JSON" in action.error
