"""The two ways to build a ``wikipedia-api`` client: on the offline corpus, or on the real site.

Both return the same ``wikipediaapi.Wikipedia`` class; they differ only in the httpx transport
underneath, so everything above the transport (query building, parsing, the tools) is one path.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import httpx
import wikipediaapi

from tools.wikipedia.corpus import cache_dir, corpus_path
from tools.wikipedia.live import CACHE_TTL_S, PoliteTransport, ResponseCache, user_agent
from tools.wikipedia.offline_transport import OfflineWikipediaTransport

Backend = Literal["offline", "live"]
DEFAULT_TIMEOUT_S = 10.0


class WikipediaApiError(wikipediaapi.WikipediaException):
    """The MediaWiki API answered with an ``{"error": {"code": …, "info": …}}`` body."""

    def __init__(self, code: str, info: str) -> None:
        self.code = code
        self.info = info
        super().__init__(f"{code}: {info}")


def _raise_api_error(response: httpx.Response) -> None:
    """Response hook: surface MediaWiki errors, which ``wikipedia-api`` would otherwise drop."""
    body = response.read()
    if response.status_code != 200 or not body.lstrip().startswith(b'{"error"'):
        return
    try:
        error = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        return  # malformed: the client raises WikiInvalidJsonError for it
    raise WikipediaApiError(str(error.get("code", "unknown")), str(error.get("info", "")))


def _client(
    transport: httpx.BaseTransport, *, agent: str, timeout_s: float, language: str
) -> wikipediaapi.Wikipedia:
    return wikipediaapi.Wikipedia(
        user_agent=agent,
        language=language,
        extract_format=wikipediaapi.ExtractFormat.WIKI,
        max_retries=0,  # retries live in PoliteTransport, where they can hold the request lock
        timeout=timeout_s,
        transport=transport,
        event_hooks={"response": [_raise_api_error]},
    )


def offline_client(
    *,
    corpus: str | Path | None = None,
    cache: str | Path | None = None,
    language: str = "en",
) -> wikipediaapi.Wikipedia:
    """A client whose requests are answered from the local corpus (English only).

    Raises ``CorpusNotFoundError`` (with the install command) when the corpus is not installed.
    """
    if language != "en":
        raise ValueError(f"The offline corpus is English only; got language={language!r}.")
    corpus = Path(corpus) if corpus is not None else corpus_path()
    transport = OfflineWikipediaTransport(corpus=corpus, cache=cache)
    return _client(transport, agent=user_agent("offline corpus"), timeout_s=DEFAULT_TIMEOUT_S, language="en")


def live_client(
    *,
    contact: str | None = None,
    cache: str | Path | Literal[False] | None = None,
    cache_ttl_s: float = CACHE_TTL_S,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_retries: int = 3,
    backoff_s: float = 1.0,
    max_wait_s: float = 30.0,
    language: str = "en",
    transport: httpx.BaseTransport | None = None,
    sleep: Callable[[float], None] | None = None,
) -> wikipediaapi.Wikipedia:
    """A client for the real Wikipedia, with a contact-bearing User-Agent, serial requests,
    an on-disk response cache (``cache=False`` disables it) and backoff on 429/5xx/timeouts.

    ``transport`` replaces the network (tests pass an ``httpx.MockTransport``).
    """
    folder = Path(cache) if cache else cache_dir() / "wikipedia" / "http"
    polite = PoliteTransport(
        transport,
        cache=ResponseCache(folder, ttl_s=cache_ttl_s) if cache is not False else None,
        max_retries=max_retries,
        backoff_s=backoff_s,
        max_wait_s=max_wait_s,
        **({"sleep": sleep} if sleep is not None else {}),
    )
    return _client(polite, agent=user_agent(contact), timeout_s=timeout_s, language=language)


def make_client(backend: Backend = "offline", **options: Any) -> wikipediaapi.Wikipedia:
    """``offline_client(**options)`` or ``live_client(**options)``."""
    if backend == "offline":
        return offline_client(**options)
    if backend == "live":
        return live_client(**options)
    raise ValueError(f"Unknown Wikipedia backend {backend!r}; use 'offline' or 'live'.")
