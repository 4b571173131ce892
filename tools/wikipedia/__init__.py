"""Wikipedia search and page tools on the ``wikipedia-api`` client.

``backend="offline"`` (default) answers the client's MediaWiki queries from a local corpus of
~10k lead paragraphs through an httpx transport; ``backend="live"`` talks to wikipedia.org with a
contact-bearing User-Agent, serial requests, an on-disk cache and backoff. Both share every line
of code above the transport.

    from tools.wikipedia import wikipedia_tools
    search, page = wikipedia_tools()                  # offline
    search, page = wikipedia_tools("live", contact="you@example.org")
"""

from tools.wikipedia.client import WikipediaApiError, live_client, make_client, offline_client
from tools.wikipedia.corpus import Article, CorpusIndex, CorpusNotFoundError, load_corpus
from tools.wikipedia.tools import (
    WikipediaPageTool,
    WikipediaSearchTool,
    wikipedia_page_tool,
    wikipedia_search_tool,
    wikipedia_tools,
)

__all__ = [
    "Article",
    "CorpusIndex",
    "CorpusNotFoundError",
    "WikipediaApiError",
    "WikipediaPageTool",
    "WikipediaSearchTool",
    "live_client",
    "load_corpus",
    "make_client",
    "offline_client",
    "wikipedia_page_tool",
    "wikipedia_search_tool",
    "wikipedia_tools",
]
