"""get_env / register / list_envs, including the entry-point group and the jsonl: form."""

from __future__ import annotations

import json
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

import envs
from envs import Env, Task, get_env, list_envs, register, registry


class _Echo(Env):
    name = "echo-test"

    def tools(self):
        return []

    def tasks(self, split="test", n=None, seed=0):
        return [Task(id="1", question="Say hi", reference="hi")][:n]

    def score(self, task, answer):
        return float(answer.strip() == task.reference)


@pytest.fixture(autouse=True)
def _clean_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_registered", {})


def test_public_api() -> None:
    assert set(envs.__all__) >= {"Task", "Env", "get_env", "register", "list_envs"}


def test_builtins_are_listed() -> None:
    assert {"arithmetic", "humaneval", "wikiqa", "fanoutqa"} <= set(list_envs())


def test_register_as_decorator_uses_the_class_name() -> None:
    assert register(_Echo) is _Echo
    assert "echo-test" in list_envs()
    env = get_env("echo-test")
    assert isinstance(env, _Echo) and env.score(env.tasks()[0], " hi ") == 1.0


def test_register_with_a_name_and_a_factory_function() -> None:
    @register("echo-named")
    def make(greeting: str = "hi") -> Env:
        env = _Echo()
        env.name = "echo-named"
        return env

    register("echo-call", _Echo)
    assert isinstance(get_env("echo-named"), _Echo)
    assert isinstance(get_env("echo-call"), _Echo)


def test_register_rejects_nameless_and_bad_input() -> None:
    class Nameless(Env):
        pass

    with pytest.raises(ValueError, match="without a name"):
        register(Nameless)
    with pytest.raises(ValueError, match="without ':'"):
        register("bad:name", _Echo)
    with pytest.raises(TypeError, match="Env subclass or a function"):
        register("not-callable", 42)  # type: ignore[call-overload]


def test_factory_must_return_an_env() -> None:
    register("not-an-env", lambda: "nope")
    with pytest.raises(TypeError, match="not an envs.Env"):
        get_env("not-an-env")


def test_unknown_name_lists_envs_and_says_how_to_add_one() -> None:
    with pytest.raises(ValueError) as info:
        get_env("no-such-env")
    message = str(info.value)
    assert "no-such-env" in message and "arithmetic" in message and "wikiqa" in message
    assert "@envs.register" in message and "anchorloop.envs" in message and "jsonl:" in message


def test_entry_point_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    plugin = EntryPoint(name="plugin-echo", value=f"{__name__}:_Echo", group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "entry_points", lambda group: [plugin] if group == plugin.group else [])
    assert "plugin-echo" in list_envs()
    assert isinstance(get_env("plugin-echo"), _Echo)


def test_kwargs_reach_the_constructor() -> None:
    assert get_env("arithmetic", level=4).level == 4


def test_jsonl_form(tmp_path: Path) -> None:
    path = tmp_path / "qa.jsonl"
    path.write_text(json.dumps({"question": "2+2?", "answer": "4"}) + "\n")
    env = get_env(f"jsonl:{path}", scorer="numeric")
    assert env.name == "qa" and env.score(env.tasks()[0], "It is 4.") == 1.0
