"""The live backend, with the network replaced at the transport level by a scripted fake.

Everything above the innermost transport is real: the ``wikipedia-api`` client, the polite
transport (cache, request lock, backoff) and the tools.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from tools.wikipedia import live_client, wikipedia_tools
from tools.wikipedia.live import CONTACT_ENV, parse_retry_after

SECTIONED = (
    "Ada Lovelace was an English mathematician and writer.\n\n"
    "== Early life ==\nShe was born in London in 1815.\n\n"
    "=== Education ===\nShe was tutored in mathematics.\n\n"
    "== Work ==\nShe wrote the first published algorithm.\n\n"
    "== See also ==\n\n\n== References ==\n"
)
DISAMBIGUATION = (
    "Mercury commonly refers to:\n\n"
    "Mercury (planet), the nearest planet to the Sun\n"
    "Mercury (element), a chemical element\n"
    "Mercury (mythology), a Roman god\n\n"
    "== Other uses ==\nMercury Records, a record label\n"
)
NOT_DISAMBIGUATION = "Jargon may refer to several things; in this article it refers to: technical slang."


class FakeWikipedia:
    """Answers MediaWiki queries like en.wikipedia.org would, after any scripted faults."""

    def __init__(self) -> None:
        self.pages = {
            "Ada Lovelace": SECTIONED,
            "Mercury": DISAMBIGUATION,
            "Jargon": NOT_DISAMBIGUATION,
            "Long": "Intro.\n\n== Body ==\n" + "word " * 2000,
        }
        self.disambiguation = {"Mercury"}
        self.faults: list = []
        self.requests: list[httpx.Request] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.delay_s = 0.0
        self._lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.requests.append(request)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            time.sleep(self.delay_s)
            if self.faults:
                fault = self.faults.pop(0)
                if isinstance(fault, Exception):
                    raise fault
                return fault
            return httpx.Response(200, json=self.answer(dict(request.url.params)))
        finally:
            with self._lock:
                self.in_flight -= 1

    def answer(self, params: dict[str, str]) -> dict:
        if params.get("list") == "search":
            query = params["srsearch"].lower()
            hits = [t for t in self.pages if query.split()[0] in (t + self.pages[t]).lower()]
            return {
                "batchcomplete": "",
                "query": {
                    "searchinfo": {"totalhits": len(hits), "suggestion": "ada lovelace"},
                    "search": [
                        {
                            "ns": 0,
                            "title": t,
                            "pageid": i + 1,
                            "size": 100,
                            "wordcount": 10,
                            "snippet": f'<span class="searchmatch">{t}</span> &amp; more',
                            "timestamp": "2024-01-01T00:00:00Z",
                        }
                        for i, t in enumerate(hits[: int(params.get("srlimit", 10))])
                    ],
                },
            }
        title = params["titles"]
        if title not in self.pages:
            return {"batchcomplete": "", "query": {"pages": {"-1": {"ns": 0, "title": title, "missing": ""}}}}
        page: dict = {"pageid": 7, "ns": 0, "title": title}
        if params.get("prop") == "extracts":
            page["extract"] = self.pages[title]
        if params.get("prop") == "categories" and title in self.disambiguation:
            page["categories"] = [{"ns": 14, "title": params["clcategories"]}]
        return {"batchcomplete": "", "query": {"pages": {"7": page}}}


@pytest.fixture
def fake():
    return FakeWikipedia()


@pytest.fixture
def sleeps():
    return []


@pytest.fixture
def make_tools(fake, sleeps, tmp_path):
    def make(**options):
        options.setdefault("cache", tmp_path / "http")
        options.setdefault("contact", "tests@example.org")
        client = live_client(transport=httpx.MockTransport(fake), sleep=sleeps.append, **options)
        search, page = wikipedia_tools("live", client=client)
        return search, page

    return make


def call(tool, **args):
    return asyncio.run(tool.acall(args))


# --- identity -------------------------------------------------------------------------------


def test_user_agent_names_the_project_and_the_contact(fake, make_tools):
    search, _ = make_tools(contact="ops@example.org")
    call(search, query="ada")
    agent = fake.requests[0].headers["User-Agent"]
    assert agent.startswith("anchorloop/") and "(ops@example.org)" in agent


def test_contact_comes_from_the_environment_by_default(fake, make_tools, monkeypatch):
    monkeypatch.setenv(CONTACT_ENV, "https://example.org/bot-contact")
    search, _ = make_tools(contact=None)
    call(search, query="ada")
    assert "(https://example.org/bot-contact)" in fake.requests[0].headers["User-Agent"]


def test_without_contact_the_agent_says_how_to_set_one(fake, make_tools, monkeypatch):
    monkeypatch.delenv(CONTACT_ENV, raising=False)
    search, _ = make_tools(contact=None)
    call(search, query="ada")
    assert CONTACT_ENV in fake.requests[0].headers["User-Agent"]


# --- the same tools on live-shaped answers ----------------------------------------------------


def test_search_sends_list_search_and_renders_plain_snippets(fake, make_tools):
    search, _ = make_tools()
    result = call(search, query="ada lovelace", limit=3)
    assert not result.error
    params = fake.requests[0].url.params
    assert params["list"] == "search" and params["srsearch"] == "ada lovelace" and params["srlimit"] == "3"
    assert "1. Ada Lovelace — Ada Lovelace & more" in result.content


def test_empty_search_passes_on_the_spelling_suggestion(fake, make_tools):
    search, _ = make_tools()
    result = call(search, query="zzz")
    assert not result.error
    assert 'Did you mean "ada lovelace"?' in result.content


def test_page_shows_the_lead_and_lists_sections_without_back_matter(make_tools):
    _, page = make_tools()
    result = call(page, title="Ada Lovelace")
    assert not result.error
    assert "English mathematician" in result.content
    assert "born in London" not in result.content  # sections are not in the lead
    assert "Sections: Early life; Work\n" in result.content
    assert "See also" not in result.content and "References" not in result.content
    assert 'wikipedia_page(title="Ada Lovelace", section="Early life")' in result.content


def test_page_reads_a_section_by_heading_case_insensitively_with_its_subsections(make_tools):
    _, page = make_tools()
    result = call(page, title="Ada Lovelace", section="early LIFE")
    assert not result.error
    assert result.content.startswith("# Ada Lovelace › Early life")
    assert "born in London" in result.content
    assert "### Education\nShe was tutored in mathematics." in result.content
    assert "Subsections:" not in result.content  # shown in full, nothing to point at


def test_a_title_with_a_section_anchor_reads_that_section(make_tools):
    _, page = make_tools()
    result = call(page, title="Ada Lovelace#Work")
    assert not result.error
    assert result.content.startswith("# Ada Lovelace › Work")


def test_titles_with_characters_wikipedia_forbids_are_refused_before_any_request(fake, make_tools):
    _, page = make_tools()
    result = call(page, title="Ada Lovelace|Mercury")
    assert result.error and "cannot contain |" in result.content
    assert fake.requests == []


def test_unknown_section_is_an_error_listing_the_sections(make_tools):
    _, page = make_tools()
    result = call(page, title="Ada Lovelace", section="Death")
    assert result.error
    assert "no section 'Death'" in result.content and "'Early life', 'Work'" in result.content


def test_long_text_is_cut_with_a_note_and_stays_under_the_result_cap(make_tools):
    _, page = make_tools()
    result = call(page, title="Long", section="Body")
    assert "…[cut at" in result.content and "of 9999 characters]" in result.content
    assert len(result.content) < 4000


def test_a_cut_section_points_at_its_subsections(fake, make_tools):
    fake.pages["Long"] = "Intro.\n\n== Body ==\n" + "word " * 2000 + "\n\n=== Detail ===\nFine print.\n"
    _, page = make_tools()
    result = call(page, title="Long", section="Body")
    assert "…[cut at" in result.content
    assert (
        'Subsections: Detail\nRead one with wikipedia_page(title="Long", section="Detail").' in result.content
    )


def test_disambiguation_page_is_an_error_listing_the_meanings(fake, make_tools):
    _, page = make_tools()
    result = call(page, title="Mercury")
    assert result.error
    assert "disambiguation page" in result.content
    assert "- Mercury (planet), the nearest planet to the Sun" in result.content
    assert "- Mercury Records, a record label" in result.content
    assert "Other uses" not in result.content  # headings are not meanings
    assert "refers to:" not in result.content.split("\n", 1)[1]
    assert fake.requests[-1].url.params["prop"] == "categories"


def test_refers_to_wording_alone_does_not_make_a_disambiguation(make_tools):
    _, page = make_tools()
    result = call(page, title="Jargon")
    assert not result.error
    assert "technical slang" in result.content


def test_missing_page_is_an_error_with_search_suggestions(fake, make_tools):
    _, page = make_tools()
    result = call(page, title="Ada")
    assert result.error
    assert "no Wikipedia article titled 'Ada'" in result.content
    assert "Closest titles: Ada Lovelace." in result.content


# --- faults -----------------------------------------------------------------------------------


def test_429_is_retried_after_the_servers_retry_after(fake, make_tools, sleeps):
    fake.faults = [httpx.Response(429, headers={"Retry-After": "2"})]
    search, _ = make_tools()
    result = call(search, query="ada")
    assert not result.error
    assert sleeps == [2.0]
    assert len(fake.requests) == 2


def test_persistent_429_becomes_an_error_result(fake, make_tools, sleeps):
    fake.faults = [httpx.Response(429, headers={"Retry-After": "1"})] * 4
    search, _ = make_tools(max_retries=3)
    result = call(search, query="ada")
    assert result.error
    assert "rate-limiting" in result.content and "HTTP 429" in result.content
    assert sleeps == [1.0, 1.0, 1.0]
    assert result.metadata["error_type"] == "WikiRateLimitError"


def test_a_retry_after_beyond_the_wait_budget_is_not_waited_out(fake, make_tools, sleeps):
    fake.faults = [httpx.Response(429, headers={"Retry-After": "3600"})]
    search, _ = make_tools(max_wait_s=30)
    result = call(search, query="ada")
    assert result.error and "Retry after 3600 s" in result.content
    assert sleeps == []


def test_5xx_is_retried_with_exponential_backoff(fake, make_tools, sleeps):
    fake.faults = [httpx.Response(503), httpx.Response(500)]
    search, _ = make_tools(backoff_s=1.0)
    result = call(search, query="ada")
    assert not result.error
    assert len(sleeps) == 2
    assert 0.8 <= sleeps[0] <= 1.2 and 1.6 <= sleeps[1] <= 2.4


def test_persistent_500_becomes_an_error_result(fake, make_tools):
    fake.faults = [httpx.Response(500)] * 3
    _, page = make_tools(max_retries=2)
    result = call(page, title="Ada Lovelace")
    assert result.error
    assert "server error (HTTP 500)" in result.content


def test_timeouts_are_retried_then_reported(fake, make_tools, sleeps):
    fake.faults = [httpx.ReadTimeout("slow")] * 2
    search, _ = make_tools(max_retries=1)
    result = call(search, query="ada")
    assert result.error
    assert "did not answer in time" in result.content
    assert len(sleeps) == 1


def test_a_timeout_then_success_is_invisible_to_the_model(fake, make_tools):
    fake.faults = [httpx.ConnectTimeout("slow")]
    search, _ = make_tools()
    assert not call(search, query="ada").error


def test_connection_errors_are_reported(fake, make_tools):
    fake.faults = [httpx.ConnectError("no route to host")]
    search, _ = make_tools()
    result = call(search, query="ada")
    assert result.error and "Could not connect to Wikipedia" in result.content


def test_malformed_json_is_reported_and_not_cached(fake, make_tools):
    fake.faults = [httpx.Response(200, content=b"<html>oops</html>")]
    search, _ = make_tools()
    first = call(search, query="ada")
    assert first.error and "malformed response" in first.content
    second = call(search, query="ada")
    assert not second.error
    assert len(fake.requests) == 2


def test_mediawiki_api_errors_are_reported_with_their_info(fake, make_tools):
    body = {"error": {"code": "maxlag", "info": "Waiting for a database server."}}
    fake.faults = [httpx.Response(200, json=body)]
    search, _ = make_tools()
    result = call(search, query="ada")
    assert result.error
    assert "maxlag" in result.content and "Waiting for a database server." in result.content


def test_4xx_is_not_retried(fake, make_tools, sleeps):
    fake.faults = [httpx.Response(403, text="Forbidden: add a contact to your User-Agent")]
    search, _ = make_tools()
    result = call(search, query="ada")
    assert result.error and "HTTP 403" in result.content
    assert sleeps == [] and len(fake.requests) == 1


# --- cache and serial requests ----------------------------------------------------------------


def test_repeated_queries_are_answered_from_the_disk_cache(fake, make_tools, tmp_path):
    search, page = make_tools()
    call(search, query="ada")
    call(page, title="Ada Lovelace")
    assert len(fake.requests) == 2
    call(search, query="ada")
    call(page, title="Ada Lovelace")
    assert len(fake.requests) == 2
    fresh_search, _ = make_tools()  # a new client, same cache folder
    assert "Ada Lovelace" in call(fresh_search, query="ada").content
    assert len(fake.requests) == 2
    assert list((tmp_path / "http").rglob("*.json"))


def test_cache_entries_expire(fake, make_tools):
    search, _ = make_tools(cache_ttl_s=0)
    call(search, query="ada")
    call(search, query="ada")
    assert len(fake.requests) == 2


def test_cache_can_be_disabled(fake, make_tools, tmp_path):
    search, _ = make_tools(cache=False)
    call(search, query="ada")
    call(search, query="ada")
    assert len(fake.requests) == 2


def test_requests_are_sent_one_at_a_time(fake, make_tools):
    fake.delay_s = 0.02
    search, _ = make_tools(cache=False)

    async def many():
        return await asyncio.gather(*(search.acall({"query": f"ada {i}"}) for i in range(6)))

    results = asyncio.run(many())
    assert all(not r.error for r in results)
    assert len(fake.requests) == 6
    assert fake.max_in_flight == 1


def test_separate_clients_still_take_turns(fake, make_tools):
    fake.delay_s = 0.02
    tool_sets = [make_tools(cache=False) for _ in range(3)]

    async def many():
        calls = [search.acall({"query": f"ada {i}"}) for i, (search, _) in enumerate(tool_sets * 2)]
        return await asyncio.gather(*calls)

    assert all(not r.error for r in asyncio.run(many()))
    assert fake.max_in_flight == 1 and len(fake.requests) == 6


def test_queued_wikipedia_calls_do_not_block_other_threaded_tools(fake, make_tools):
    fake.delay_s = 0.05
    search, _ = make_tools(cache=False)

    async def scenario():
        wiki = [asyncio.create_task(search.acall({"query": f"ada {i}"})) for i in range(12)]
        await asyncio.sleep(0.01)
        started = time.perf_counter()
        await asyncio.to_thread(lambda: None)  # what a sandboxed Python tool call does
        other_tool_wait = time.perf_counter() - started
        await asyncio.gather(*wiki)
        return other_tool_wait

    assert asyncio.run(scenario()) < 0.2  # the 12 serial Wikipedia calls take 0.6 s


def test_a_rate_limit_pauses_other_callers_too(fake, make_tools):
    """While one request waits out a 429, no other request reaches the server."""
    waits: list[float] = []

    def slow_sleep(seconds: float) -> None:
        waits.append(seconds)
        time.sleep(0.05)

    fake.faults = [httpx.Response(429, headers={"Retry-After": "1"})]
    client = live_client(
        transport=httpx.MockTransport(fake), sleep=slow_sleep, cache=False, contact="t@e.org"
    )
    search, _ = wikipedia_tools("live", client=client)

    async def two():
        return await asyncio.gather(search.acall({"query": "ada"}), search.acall({"query": "mercury"}))

    asyncio.run(two())
    assert waits == [1.0]
    assert fake.max_in_flight == 1
    first, retried, other = (r.url.params["srsearch"] for r in fake.requests)
    assert first == retried != other  # the retry went out before the other caller's request


# --- helpers ----------------------------------------------------------------------------------


def test_retry_after_accepts_seconds_and_http_dates():
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    in_a_minute = format_datetime(datetime.now(UTC) + timedelta(seconds=60), usegmt=True)
    assert 55 <= parse_retry_after(in_a_minute) <= 60
    assert parse_retry_after(format_datetime(datetime(2000, 1, 1, tzinfo=UTC), usegmt=True)) == 0.0


def test_cached_responses_are_valid_json_bodies(fake, make_tools, tmp_path):
    search, _ = make_tools()
    call(search, query="ada")
    (entry,) = (tmp_path / "http").rglob("*.json")
    assert json.loads(entry.read_bytes())["query"]["search"][0]["title"] == "Ada Lovelace"
