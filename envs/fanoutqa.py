"""FanOutQA: multi-hop questions over many Wikipedia pages (anchor: live Wikipedia).

The 310 dev questions of the ``fanoutqa`` package (``fanoutqa/data/fanout-final-dev.json``, read
directly: the package is installed without its dependencies). Scoring is the package's own string
accuracy (``fanoutqa.eval.string.answer_in_text``): the fraction of reference answer strings — for
a dict answer, every key and every value — found as whole words in the normalised response.

The package's normaliser needs ``ftfy`` and a spaCy English model, which are not installed, so
``fanoutqa_normalize`` reimplements it: same steps and order (lowercase, fix text, strip number
commas, lemmatise, drop ``,.?!:;``, squeeze whitespace). Two substitutions: NFKC stands in for
ftfy, and a small suffix lemmatiser (plural nouns, ``-ing``/``-ed`` left alone) stands in for
spaCy. Both sides go through the same function, so the score only shifts where spaCy would have
merged forms the suffix rules do not (irregular verbs, mostly). One deliberate fix: the package
wraps the answer in ``\b…\b``, which can never match an answer that starts or ends with a symbol
("$1.027 billion"); here the boundaries are "no word character next to it", the same for answers
that start and end with word characters.

Splits: the dev set is the test split; ``train`` is empty by default. ``FanOutQAEnv(train_size=k)``
moves a deterministic k questions (lowest SHA-256 of their id) from test to train.
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import json
import re
import unicodedata
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from envs.base import Env, Split, Task
from envs.scoring import text_answer_key

if TYPE_CHECKING:
    from tools import Tool

DEV_FILE = ("data", "fanout-final-dev.json")


def dev_path() -> Path:
    spec = importlib.util.find_spec("fanoutqa")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location).joinpath(*DEV_FILE)
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        "The FanOutQA dev set is not installed. Install it with `pip install --no-deps fanoutqa`."
    )


@lru_cache(maxsize=1)
def load_dev() -> tuple[dict[str, Any], ...]:
    with open(dev_path(), encoding="utf-8") as f:
        return tuple(json.load(f))


# ---------------------------------------------------------------------------- the package's metric


def _lemma(word: str) -> str:
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def fanoutqa_normalize(text: Any) -> str:
    """``fanoutqa.norm.normalize`` without ftfy/spaCy (see the module docstring)."""
    text = unicodedata.normalize("NFKC", str(text).lower())
    text = re.sub(r"(\d+,)+\d+(\.\d+)?", lambda m: m[0].replace(",", ""), text)
    # spaCy splits punctuation off words before lemmatising; "$1.5" → "$ 1.5", "u.s." stays.
    tokens = re.findall(r"\d+(?:\.\d+)?|\w+(?:[.'’-]\w+)*\.?|[^\w\s]", text)
    text = " ".join(_lemma(t) for t in tokens)
    text = re.sub(r"[,.?!:;]", "", text)
    return re.sub(r"\s+", " ", text).strip()


def answer_in_text(reference: Any, candidate: str) -> tuple[float, list[str]]:
    """Fraction of reference strings found in ``candidate``, and the normalised missing ones."""
    return _found(reference, f" {fanoutqa_normalize(candidate or '')} ")


def _found(reference: Any, normalized: str) -> tuple[float, list[str]]:
    if isinstance(reference, list):
        parts: list[Any] = reference
    elif isinstance(reference, dict):
        parts = list(itertools.chain(reference.keys(), reference.values()))
    else:
        if isinstance(reference, bool):
            reference = "yes" if reference else "no"
        needle = fanoutqa_normalize(reference)
        found = re.search(rf"(?<!\w){re.escape(needle)}(?!\w)", normalized)
        return (1.0, []) if found else (0.0, [needle])
    if not parts:
        return 1.0, []
    missing: list[str] = []
    for part in parts:
        missing.extend(_found(part, normalized)[1])
    return max(0.0, (len(parts) - len(missing)) / len(parts)), missing


# ---------------------------------------------------------------------------- the env


class FanOutQAEnv(Env):
    """FanOutQA dev questions; score = share of the reference answer strings in the response."""

    name = "fanoutqa"
    needs_network = True
    system_hint = (
        "These questions need facts from several Wikipedia pages. Search Wikipedia, read the pages, "
        "and answer with every requested item and value."
    )

    def __init__(self, train_size: int = 0) -> None:
        total = len(load_dev())
        if not 0 <= train_size < total:
            raise ValueError(f"train_size must be in [0, {total}), got {train_size}.")
        self.train_size = train_size

    def tools(self) -> list[Tool]:
        from tools.wikipedia import wikipedia_tools

        return wikipedia_tools(backend="live")

    def _split_ids(self) -> set[str]:
        ranked = sorted(load_dev(), key=lambda q: hashlib.sha256(q["id"].encode()).hexdigest())
        return {q["id"] for q in ranked[: self.train_size]}

    def tasks(self, split: Split = "test", n: int | None = None, seed: int = 0) -> list[Task]:
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
        if split == "train" and self.train_size == 0:
            raise ValueError(
                "fanoutqa has no train split by default (the 310 dev questions are the test set). "
                "Use get_env('fanoutqa', train_size=100) to hold some out for training."
            )
        train_ids = self._split_ids()
        rows = [q for q in load_dev() if (q["id"] in train_ids) == (split == "train")]
        if seed:
            rows.sort(key=lambda q: hashlib.sha256(f"{seed}|{q['id']}".encode()).digest())
        return [
            Task(
                id=f"fanoutqa-{q['id']}",
                question=q["question"],
                reference=q["answer"],
                metadata={
                    "categories": q.get("categories", []),
                    "hops": len(q.get("decomposition", [])),
                    "evidence": [
                        d["evidence"]["title"] for d in q.get("decomposition", []) if d.get("evidence")
                    ],
                },
            )
            for q in rows[:n]
        ]

    def score(self, task: Task, answer: str) -> float:
        return answer_in_text(task.reference, answer)[0]

    def answer_key(self, answer: str | None) -> str | None:
        return text_answer_key(answer)

    def score_details(self, task: Task, answer: str) -> dict[str, Any]:
        score, missing = answer_in_text(task.reference, answer)
        return {"score": score, "found_all": not missing, "missing": missing}
