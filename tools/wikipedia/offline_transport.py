"""An httpx transport that answers MediaWiki API queries from the offline corpus.

Plugged into the ``wikipedia-api`` client in place of the network, it makes the offline backend
run the exact code path of the live one: the client builds the same ``action=query`` requests
(``list=search``, ``prop=extracts``, ``prop=info``, ``prop=categories``, …) and parses the same
JSON shapes back. Only what the corpus can answer is answered; anything else gets a MediaWiki-style
``{"error": …}`` body, as the real API would send for an unsupported parameter.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx

from tools.wikipedia.corpus import Article, CorpusIndex, article_url

SEARCH_MAX_LIMIT = 500
TIMESTAMP = "2025-01-01T00:00:00Z"  # the corpus snapshot carries no revision dates
SUPPORTED_PROPS = frozenset({"extracts", "info", "pageprops", "categories"})


class OfflineWikipediaTransport(httpx.BaseTransport):
    """Serve ``GET https://<lang>.wikipedia.org/w/api.php?action=query&…`` from a ``CorpusIndex``.

    The index is opened (and built, the first time on a machine) on the first request, so that
    constructing tools stays cheap.
    """

    def __init__(
        self,
        index: CorpusIndex | None = None,
        *,
        corpus: str | Path | None = None,
        cache: str | Path | None = None,
    ) -> None:
        self._index = index
        self._corpus = corpus
        self._cache = cache
        self._open_lock = threading.Lock()

    @property
    def index(self) -> CorpusIndex:
        if self._index is None:
            with self._open_lock:
                if self._index is None:
                    self._index = CorpusIndex.open(self._corpus, cache=self._cache)
        return self._index

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        params = dict(request.url.params.multi_items())
        if request.method != "GET" or not request.url.path.endswith("/api.php"):
            return httpx.Response(404, text="The offline corpus only serves /w/api.php.", request=request)
        return httpx.Response(200, json=self.answer(params), request=request)

    def answer(self, params: dict[str, str]) -> dict[str, Any]:
        """The JSON body MediaWiki would send for these query-string parameters."""
        if params.get("action") != "query":
            return _api_error(
                "badvalue", f'Unrecognized value for parameter "action": {params.get("action")}.'
            )
        if params.get("list"):
            if params["list"] != "search":
                return _api_error("badvalue", f"Offline corpus: list={params['list']} is not supported.")
            return self._search(params)
        if params.get("prop") or params.get("titles"):
            return self._pages(params)
        return {"batchcomplete": ""}

    def _search(self, params: dict[str, str]) -> dict[str, Any]:
        query = params.get("srsearch", "").strip()
        if not query:
            return _api_error("nosrsearch", 'The "srsearch" parameter must be set.')
        try:
            limit = min(max(int(params.get("srlimit", 10)), 1), SEARCH_MAX_LIMIT)
            offset = max(int(params.get("sroffset", 0)), 0)
        except ValueError:
            return _api_error("badinteger", "srlimit and sroffset must be integers.")
        hits, total = self.index.search(query, limit=limit, offset=offset)
        body: dict[str, Any] = {
            "batchcomplete": "",
            "query": {
                "searchinfo": {"totalhits": total},
                "search": [
                    {
                        "ns": 0,
                        "title": hit.title,
                        "pageid": hit.pageid,
                        "size": hit.size,
                        "wordcount": hit.wordcount,
                        "snippet": hit.snippet,
                        "timestamp": TIMESTAMP,
                    }
                    for hit in hits
                ],
            },
        }
        if offset + len(hits) < total:
            body["continue"] = {"sroffset": offset + len(hits), "continue": "-||"}
        return body

    def _pages(self, params: dict[str, str]) -> dict[str, Any]:
        props = {p for p in params.get("prop", "").split("|") if p}
        unsupported = props - SUPPORTED_PROPS
        if unsupported:
            return _api_error(
                "badvalue", f"Offline corpus: prop={'|'.join(sorted(unsupported))} is not supported."
            )
        query: dict[str, Any] = {}
        pages: dict[str, Any] = {}
        missing_ids = iter(range(-1, -10_000, -1))
        for requested in [t for t in params.get("titles", "").split("|") if t.strip()]:
            title = _normalize(requested)
            if title != requested:
                query.setdefault("normalized", []).append({"from": requested, "to": title})
            article = self.index.article(title)
            if article is None and params.get("redirects"):
                # The corpus has no redirect pages; a match up to case stands in for one.
                target = self.index.find_title(title)
                if target is not None:
                    query.setdefault("redirects", []).append({"from": title, "to": target})
                    article = self.index.article(target)
            if article is None:
                pages[str(next(missing_ids))] = {"ns": 0, "title": title, "missing": ""}
            else:
                pages[str(article.pageid)] = _page_entry(article, props, params)
        query["pages"] = pages
        return {"batchcomplete": "", "query": query}


def _page_entry(article: Article, props: set[str], params: dict[str, str]) -> dict[str, Any]:
    entry: dict[str, Any] = {"pageid": article.pageid, "ns": 0, "title": article.title}
    if "extracts" in props:
        # The corpus holds lead paragraphs only, so the whole extract is the lead.
        entry["extract"] = article.text
    if "info" in props:
        url = article_url(article.title)
        entry.update(
            contentmodel="wikitext",
            pagelanguage="en",
            pagelanguagehtmlcode="en",
            pagelanguagedir="ltr",
            touched=TIMESTAMP,
            lastrevid=0,
            length=len(article.text.encode()),
            fullurl=url,
            canonicalurl=url,
            editurl=url.replace("/wiki/", "/w/index.php?title=") + "&action=edit",
            displaytitle=article.title,
        )
    if "pageprops" in props and article.description:
        entry["pageprops"] = {"wikibase-shortdesc": article.description}
    # prop=categories: the corpus has no category data, and no disambiguation pages.
    return entry


def _normalize(title: str) -> str:
    """MediaWiki title normalization: underscores to spaces, trimmed, first letter upper-cased."""
    title = " ".join(title.replace("_", " ").split())
    return title[:1].upper() + title[1:]


def _api_error(code: str, info: str) -> dict[str, Any]:
    return {"error": {"code": code, "info": info}, "servedby": "anchorloop-offline-corpus"}
