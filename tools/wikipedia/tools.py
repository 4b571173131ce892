"""The agent-facing Wikipedia tools: search, and read a page's lead or one section.

Both run the synchronous ``wikipedia-api`` client in worker threads of their own, which keeps one
client usable from any event loop and lets a plain ``threading.Lock`` serialize live requests.
Every failure becomes a ``ToolResult(error=True)`` whose text tells the model what to do next.
"""

from __future__ import annotations

import asyncio
import html
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import wikipediaapi
from pydantic import BaseModel, ConfigDict, Field

from tools.base import Tool, ToolResult
from tools.wikipedia.client import Backend, WikipediaApiError, make_client
from tools.wikipedia.corpus import CorpusNotFoundError, article_url

log = logging.getLogger(__name__)

DEFAULT_MAX_CHARS = 3000
WORKERS = 4  # threads per set of tools; live requests are serial anyway
SNIPPET_CHARS = 200
DISAMBIGUATION_CATEGORY = "Category:All disambiguation pages"
# Sections that hold lists of links rather than prose; readable on request, not advertised.
BACK_MATTER = frozenset(
    {
        "see also",
        "references",
        "external links",
        "further reading",
        "notes",
        "bibliography",
        "sources",
        "citations",
        "footnotes",
        "notes and references",
    }
)
INVALID_TITLE_CHARS = frozenset("|<>[]{}")
_TAG = re.compile(r"<[^>]+>")
_REFERS_TO = re.compile(r"\brefers?\s+to\b[^.\n]*:", re.IGNORECASE)


class SearchArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, description="What to look for: a few keywords or a question.")
    limit: int = Field(5, ge=1, le=20, description="How many results to return (1-20).")


class PageArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, description="Exact page title, as given by wikipedia_search.")
    section: str | None = Field(
        None, description="A section heading to read; omit for the lead (introduction)."
    )


class _WikipediaTool(Tool):
    def __init__(
        self,
        client: wikipediaapi.Wikipedia,
        *,
        backend: str,
        max_chars: int,
        executor: ThreadPoolExecutor | None = None,
    ) -> None:
        self.client = client
        self.backend = backend
        self.max_chars = max_chars
        self.executor = executor or ThreadPoolExecutor(WORKERS, thread_name_prefix="wikipedia")

    async def arun(self, args: BaseModel) -> ToolResult:
        # Own threads: calls queued on the live request lock must not fill the event loop's
        # default executor, which other tools (the Python sandbox) run in.
        return await asyncio.get_running_loop().run_in_executor(self.executor, self.run, args)

    def run(self, args: BaseModel) -> ToolResult:
        try:
            return self._run(args)
        except Exception as exc:  # reported to the model, never raised into the agent
            log.debug("%s failed", self.name, exc_info=True)
            return ToolResult(
                content=describe_failure(exc),
                error=True,
                metadata={"backend": self.backend, "error_type": type(exc).__name__},
            )

    def _run(self, args: Any) -> ToolResult:
        raise NotImplementedError


class WikipediaSearchTool(_WikipediaTool):
    name = "wikipedia_search"
    description = (
        "Search Wikipedia. Returns matching article titles, each with a one-line snippet. "
        "Read an article with wikipedia_page."
    )
    args_schema = SearchArgs

    def _run(self, args: SearchArgs) -> ToolResult:
        results = self.client.search(
            args.query,
            limit=args.limit,
            info=[wikipediaapi.SearchInfo.TOTAL_HITS, wikipediaapi.SearchInfo.SUGGESTION],
        )
        titles = list(results.pages)
        meta = {"backend": self.backend, "titles": titles, "totalhits": results.totalhits}
        if not titles:
            hint = f' Did you mean "{results.suggestion}"?' if results.suggestion else ""
            return ToolResult(
                content=f"No Wikipedia articles match {args.query!r}.{hint} Try fewer or different keywords.",
                metadata=meta,
            )
        lines = [f"Wikipedia search for {args.query!r}: top {len(titles)} of {results.totalhits} results"]
        for i, (title, page) in enumerate(results.pages.items(), start=1):
            snippet = clean_snippet(page.search_meta.snippet if page.search_meta else "")
            lines.append(f"{i}. {title}" + (f" — {snippet}" if snippet else ""))
        lines.append('Read one with wikipedia_page(title="…").')
        return ToolResult(content="\n".join(lines), metadata=meta)


class WikipediaPageTool(_WikipediaTool):
    name = "wikipedia_page"
    description = (
        "Read a Wikipedia article: its lead (introduction) by default, or one section by heading. "
        "Lists the article's sections so you can read further."
    )
    args_schema = PageArgs

    def _run(self, args: PageArgs) -> ToolResult:
        if "#" in args.title:  # "Article#Section", as in a Wikipedia link
            title, _, anchor = args.title.partition("#")
            args = PageArgs(title=title or args.title, section=args.section or anchor or None)
        if bad := sorted(set(args.title) & INVALID_TITLE_CHARS):
            return ToolResult(
                content=f"Wikipedia titles cannot contain {' '.join(bad)}; got {args.title!r}. "
                "Pass one article title, as wikipedia_search shows it.",
                error=True,
                metadata={"backend": self.backend},
            )
        page = self.client.page(args.title)
        lead = page.summary  # one request: the whole article as plain text, split into sections
        if not page.exists():
            return self._missing(args.title)
        title = page.title
        meta: dict[str, Any] = {"backend": self.backend, "title": title, "url": self._url(title)}
        if _REFERS_TO.search(lead) and self._is_disambiguation(page):
            return ToolResult(content=_describe_disambiguation(title, page), error=True, metadata=meta)
        sections = list(_walk(page.sections))
        listed = [s.title for s in page.sections if s.title.casefold() not in BACK_MATTER]
        if args.section is None:
            body = lead or "(This article has no introduction.)"
            return ToolResult(content=self._render(title, None, body, listed), metadata=meta)
        wanted = args.section.strip().casefold()
        match = next((s for s in sections if s.title.strip().casefold() == wanted), None)
        if match is None:
            available = ", ".join(repr(s) for s in listed) if listed else "none, only the lead"
            return ToolResult(
                content=f"'{title}' has no section {args.section!r}. Sections: {available}.",
                error=True,
                metadata=meta,
            )
        body = _section_body(match) or "(This section is empty.)"
        # Subsections are part of the body; point at them only when the body had to be cut.
        subsections = [s.title for s in match.sections] if len(body) > self.max_chars else []
        return ToolResult(content=self._render(title, match.title, body, subsections), metadata=meta)

    def _render(self, title: str, section: str | None, body: str, more: list[str]) -> str:
        heading = f"# {title}" + (f" › {section}" if section else "")
        if len(body) > self.max_chars:
            cut = body[: self.max_chars].rsplit(" ", 1)[0]
            body = f"{cut} …[cut at {len(cut)} of {len(body)} characters]"
        parts = [heading, body, f"Source: {self._url(title)}"]
        if more:
            kind = "Subsections" if section else "Sections"
            parts.append(
                f"{kind}: {'; '.join(more)}\n"
                f'Read one with wikipedia_page(title="{title}", section="{more[0]}").'
            )
        return "\n\n".join(parts)

    def _url(self, title: str) -> str:
        return article_url(title, self.client.language)

    def _missing(self, title: str) -> ToolResult:
        meta: dict[str, Any] = {"backend": self.backend, "title": title, "missing": True}
        try:
            suggestions = list(self.client.search(title, limit=3).pages)
        except Exception:  # the page is still missing; suggestions are a courtesy
            suggestions = []
        hint = (
            f" Closest titles: {'; '.join(suggestions)}."
            if suggestions
            else " Use wikipedia_search to find it."
        )
        return ToolResult(
            content=f"There is no Wikipedia article titled {title!r}.{hint}", error=True, metadata=meta
        )

    def _is_disambiguation(self, page: wikipediaapi.WikipediaPage) -> bool:
        """Confirm what the lead's wording suggests, by the page's hidden category."""
        categories = self.client.categories(page, clcategories=DISAMBIGUATION_CATEGORY)
        return DISAMBIGUATION_CATEGORY in categories


def _section_body(section: Any, depth: int = 3) -> str:
    """A section's text with its subsections under Markdown headings."""
    parts = [section.text.strip()]
    for sub in section.sections:
        parts.append(f"{'#' * depth} {sub.title}\n{_section_body(sub, depth + 1)}".strip())
    return "\n\n".join(p for p in parts if p)


def _walk(sections: list[Any]):
    for section in sections:
        yield section
        yield from _walk(section.sections)


def _describe_disambiguation(title: str, page: wikipediaapi.WikipediaPage, limit: int = 15) -> str:
    text = "\n".join([page.summary, *(s.text for s in _walk(page.sections))])
    options = [line.strip() for line in text.splitlines() if line.strip() and not line.rstrip().endswith(":")]
    listed = "\n".join(f"- {option[:150]}" for option in options[:limit])
    more = f"\n(and {len(options) - limit} more)" if len(options) > limit else ""
    return (
        f"'{title}' is a disambiguation page: the name has several meanings. "
        f"Call wikipedia_page again with one of these titles:\n{listed}{more}"
    )


def clean_snippet(snippet: str, limit: int = SNIPPET_CHARS) -> str:
    """A search snippet as one line of plain text (Wikipedia marks matches up in HTML)."""
    text = " ".join(html.unescape(_TAG.sub("", snippet)).split())
    return text if len(text) <= limit else text[: limit - 1].rsplit(" ", 1)[0] + "…"


def describe_failure(exc: BaseException) -> str:
    """What went wrong, in words the model can act on."""
    if isinstance(exc, wikipediaapi.WikiRateLimitError):
        wait = f" Retry after {exc.retry_after} s." if exc.retry_after else ""
        return f"Wikipedia is rate-limiting requests (HTTP 429).{wait} Wait before the next call."
    if isinstance(exc, wikipediaapi.WikiHttpTimeoutError):
        return "Wikipedia did not answer in time (timeout). Try again, or try a different query."
    if isinstance(exc, wikipediaapi.WikiConnectionError):
        return "Could not connect to Wikipedia (network unreachable). Use the offline backend or try later."
    if isinstance(exc, wikipediaapi.WikiHttpError):
        kind = "a server error" if exc.status_code >= 500 else "an error"
        return f"Wikipedia answered with {kind} (HTTP {exc.status_code}). Try again later."
    if isinstance(exc, wikipediaapi.WikiInvalidJsonError):
        return "Wikipedia sent a malformed response (not valid JSON). Try again."
    if isinstance(exc, WikipediaApiError):
        return f"The Wikipedia API rejected the request ({exc.code}): {exc.info}"
    if isinstance(exc, CorpusNotFoundError):
        return str(exc)
    return f"Wikipedia sent an unexpected response ({type(exc).__name__}: {exc}). Try again."


def wikipedia_tools(
    backend: Backend = "offline",
    *,
    client: wikipediaapi.Wikipedia | None = None,
    max_chars: int = DEFAULT_MAX_CHARS,
    **client_options: Any,
) -> list[Tool]:
    """Both Wikipedia tools, sharing one client (one cache, one request lock).

    Args:
        backend: ``"offline"`` (the local corpus, default) or ``"live"`` (wikipedia.org).
        client: a ready ``wikipediaapi.Wikipedia`` to use instead of building one.
        max_chars: longest lead or section text shown before it is cut.
        **client_options: passed to ``offline_client`` or ``live_client``.
    """
    client = client if client is not None else make_client(backend, **client_options)
    executor = ThreadPoolExecutor(WORKERS, thread_name_prefix=f"wikipedia-{backend}")
    return [
        WikipediaSearchTool(client, backend=backend, max_chars=max_chars, executor=executor),
        WikipediaPageTool(client, backend=backend, max_chars=max_chars, executor=executor),
    ]


def wikipedia_search_tool(backend: Backend = "offline", **options: Any) -> Tool:
    """Only the search tool; same arguments as ``wikipedia_tools``."""
    return wikipedia_tools(backend, **options)[0]


def wikipedia_page_tool(backend: Backend = "offline", **options: Any) -> Tool:
    """Only the page tool; same arguments as ``wikipedia_tools``."""
    return wikipedia_tools(backend, **options)[1]
