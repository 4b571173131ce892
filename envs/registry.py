"""Find environments by name: built-ins, ``register``-ed factories, and plug-in packages.

A plug-in package exposes an env through the entry-point group ``anchorloop.envs``::

    [project.entry-points."anchorloop.envs"]
    my_env = "my_package.envs:MyEnv"

``get_env("jsonl:path/to/file.jsonl", scorer="numeric")`` builds a ``JsonlEnv`` from a file, and
``get_env("my_module:MyEnv")`` imports ``my_module`` and builds its ``MyEnv`` (an ``Env`` subclass or a
function returning one): that is how a command line names an env defined in your own code.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, TypeVar, overload

from envs.base import Env

ENTRY_POINT_GROUP = "anchorloop.envs"

EnvFactory = Callable[..., Env]
F = TypeVar("F", bound=EnvFactory)

# Built-ins are named by import path so that listing them imports nothing heavy.
BUILTINS: dict[str, str] = {
    "arithmetic": "envs.arithmetic:ArithmeticEnv",
    "humaneval": "envs.humaneval:HumanEvalEnv",
    "wikiqa": "envs.wikiqa:WikiQAEnv",
    "fanoutqa": "envs.fanoutqa:FanOutQAEnv",
}
_registered: dict[str, EnvFactory] = {}

HOW_TO_ADD = (
    "An env in your own module is named 'module:Class' (e.g. 'my_env:MyEnv', importable from the current "
    "folder); names given with `@envs.register` are known only once that module is imported. Use "
    "'jsonl:path/to/file.jsonl' for a file of question/answer rows, or expose an env in your package's "
    "pyproject.toml under the `anchorloop.envs` entry-point group."
)


@overload
def register(target: F, /) -> F: ...
@overload
def register(target: str, factory: F, /) -> F: ...
@overload
def register(target: str, /) -> Callable[[F], F]: ...
def register(target: Any, factory: Any = None, /) -> Any:
    """Register an env factory (an ``Env`` subclass or a function returning an ``Env``).

    ``@register`` (name from the class's ``name`` attribute), ``@register("name")``, or
    ``register("name", factory)``. Registering a name again replaces the earlier factory.
    """
    if isinstance(target, str):
        if factory is not None:
            return _add(target, factory)
        return lambda f: _add(target, f)
    if factory is not None:
        raise TypeError("register(name, factory): the name comes first.")
    name = getattr(target, "name", "")
    if not isinstance(name, str) or not name:
        raise ValueError(
            f"Cannot register {target!r} without a name: give the class a `name = '...'` attribute "
            "or call register('my_env', factory)."
        )
    return _add(name, target)


def _add(name: str, factory: F) -> F:
    if not name or not isinstance(name, str) or ":" in name:
        raise ValueError(f"Env names must be non-empty strings without ':', got {name!r}.")
    if not callable(factory):
        raise TypeError(f"register({name!r}, ...) needs an Env subclass or a function returning an Env.")
    _registered[name] = factory
    return factory


def _entry_points() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def list_envs() -> list[str]:
    """Every env name ``get_env`` can resolve (``jsonl:<path>`` aside)."""
    return sorted({*BUILTINS, *_registered, *_entry_points()})


def _load(path: str) -> EnvFactory:
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def get_env(name: str, /, **kwargs: Any) -> Env:
    """Build the env called ``name``; keyword arguments go to its constructor."""
    if not isinstance(name, str):
        raise TypeError(f"get_env takes an env name (str), got {type(name).__name__}.")
    if name.startswith("jsonl:"):
        from envs.jsonl import JsonlEnv

        return JsonlEnv(name.removeprefix("jsonl:"), **kwargs)
    if ":" in name:
        from tools.registry import import_target

        factory = import_target(name, kind="env")
        if not callable(factory):
            raise ValueError(f"Env {name!r} is a {type(factory).__name__}, not an Env subclass or a function "
                             "returning an Env.")
    elif name in _registered:
        factory = _registered[name]
    elif name in BUILTINS:
        factory = _load(BUILTINS[name])
    elif name in (plugins := _entry_points()):
        factory = plugins[name].load()
    else:
        raise ValueError(f"Unknown env {name!r}. Available: {', '.join(list_envs())}. {HOW_TO_ADD}")
    try:
        env = factory(**kwargs)
    except TypeError as exc:  # options the env does not take (e.g. `--env-arg` meant for another env)
        raise ValueError(f"Env {name!r} cannot be built with options {kwargs}: {exc}") from exc
    if not isinstance(env, Env):
        raise TypeError(f"The factory for env {name!r} returned {type(env).__name__}, not an envs.Env.")
    return env
