"""Environments: tasks, the tools that anchor them, and deterministic scorers.

``get_env("arithmetic", level=3)``, ``list_envs()``, ``@register`` your own ``Env`` subclass, or
``get_env("jsonl:my_questions.jsonl")``, ``get_env("my_module:MyEnv")``; ``with_tools(env, ["my_tools:fn"])``
offers more tools next to an env's own.
"""

from envs.base import Env, Split, Task
from envs.extra_tools import with_tools
from envs.registry import get_env, list_envs, register

__all__ = ["Env", "Split", "Task", "get_env", "list_envs", "register", "with_tools"]
