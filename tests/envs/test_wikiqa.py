"""wikiqa: questions built from the offline corpus, answerable with the offline Wikipedia tools."""

from __future__ import annotations

from collections import Counter

import pytest

from envs import get_env
from envs.scoring import squad_normalize
from envs.wikiqa import KINDS, WikiQAEnv, build_questions


@pytest.fixture(scope="module")
def env() -> WikiQAEnv:
    return WikiQAEnv()


def test_enough_questions_of_every_kind(env: WikiQAEnv) -> None:
    kinds = Counter(t.metadata["kind"] for t in build_questions())
    assert sum(kinds.values()) >= 500
    assert set(kinds) == set(KINDS)
    assert len(env.tasks("test")) >= 500


def test_splits_share_no_article_and_ids_are_unique(env: WikiQAEnv) -> None:
    train, test = env.tasks("train"), env.tasks("test")
    assert not {t.metadata["title"] for t in train} & {t.metadata["title"] for t in test}
    assert not {t.question for t in train} & {t.question for t in test}
    ids = [t.id for t in train + test]
    assert len(ids) == len(set(ids))


def test_no_answer_appears_in_its_question() -> None:
    for task in build_questions():
        question = f" {squad_normalize(task.question)} "
        assert all(f" {squad_normalize(a)} " not in question for a in task.reference), task


def test_deterministic_and_seeded(env: WikiQAEnv) -> None:
    assert env.tasks("test", n=10, seed=1) == env.tasks("test", n=10, seed=1)
    assert env.tasks("test", n=10, seed=1) != env.tasks("test", n=10, seed=2)
    assert {t.metadata["kind"] for t in WikiQAEnv(kinds=["capital"]).tasks("train")} == {"capital"}
    with pytest.raises(ValueError, match="Unknown wikiqa question kinds"):
        WikiQAEnv(kinds=["riddles"])


def test_scoring_is_squad_exact_match_with_f1_details(env: WikiQAEnv) -> None:
    task = next(t for t in build_questions() if t.metadata["kind"] == "creator" and " " in t.reference[0])
    answer = task.reference[0]
    assert env.score(task, answer) == 1.0
    assert env.score(task, f"Final answer: {answer.upper()}.") == 1.0
    assert env.score(task, answer.split()[-1]) == 0.0
    details = env.score_details(task, answer.split()[-1])
    assert details["score"] == 0.0 and 0.0 < details["f1"] < 1.0
    for garbage in ("", "🙂" * 1000, "x" * 1_000_000):
        assert env.score(task, garbage) == 0.0


def test_title_questions_accept_the_title_without_its_qualifier() -> None:
    task = next(t for t in build_questions() if t.metadata["title"].endswith(")"))
    assert WikiQAEnv().score(task, task.metadata["title"].rsplit(" (", 1)[0]) == 1.0


async def test_answers_can_be_found_with_the_offline_tools(env: WikiQAEnv) -> None:
    search, page = env.tools()
    assert {search.name, page.name} == {"wikipedia_search", "wikipedia_page"}
    sample = [t for kind in KINDS for t in WikiQAEnv(kinds=[kind]).tasks("test", n=2, seed=5)]
    for task in sample:
        found = await search.acall({"query": task.question, "limit": 5})
        assert task.metadata["title"] in found.metadata["titles"], task.question
        if task.metadata["kind"] != "description":
            lead = await page.acall({"title": task.metadata["title"]})
            assert any(squad_normalize(a) in squad_normalize(lead.content) for a in task.reference), task


def test_registry_and_dataset(env: WikiQAEnv) -> None:
    assert isinstance(get_env("wikiqa"), WikiQAEnv)
    ds = env.as_dataset("test", n=5)
    assert ds.num_rows == 5 and "prompt" in ds.column_names
    assert not env.needs_network
