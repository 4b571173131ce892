"""Questions answerable from the offline Wikipedia corpus (anchor: offline Wikipedia search).

Every question is made by a fixed rule from one article of the ~10k-article corpus
(``tools.wikipedia.corpus.load_corpus``); rules that read the lead paragraph only fire when the
answer is written in it, so the search and page tools can confirm it:

- ``description``: "Which Wikipedia article has the short description '<d>'?" → the title, for
  descriptions of four or more words that are unique in the corpus.
- ``creator``: a description "<year> <kind> by <X>" with X in the lead → "Who wrote the 1897
  novel 'Dracula'?" (verb by kind: wrote, directed, painted, composed, recorded, created).
- ``year``: a description "<year> … <kind>" with the year in the lead → "In what year was the
  novel 'Robinson Crusoe' published?"
- ``capital``: "capital (and largest city) is X" in the lead → "What is the capital of <title>?"
- ``founded``: "founded/established in <year>" in the first sentence → "In what year was '<title>'
  founded?"
- ``nationality``: a person whose lead opens "<name> was a/an <Demonym> …" → "According to
  Wikipedia, what is the nationality of <title>?"
- ``birth_year``: a person with "(YYYY–YYYY)" in the description and the first year in the lead →
  "In what year was <title> born?"

Questions whose answer (SQuAD-normalised) appears in the question are dropped. Splits are by a
hash of the article title (one in five articles is test), so train and test share no article.
Scoring is SQuAD exact match against the title (and the title without its "(…)" qualifier);
``score_details`` adds token F1.

Twenty random test questions, read by hand: all twenty were well-formed and had the stated answer
in the corpus. The description questions are clear and unambiguous *as stated* (the description
belongs to one article) but several would be ambiguous as general trivia ("Mountain range in
Western Asia"), which is why they ask for the article. Fact questions read naturally; a few
nationality answers are compound ("Romanian-French") and strict exact match is harsh on them
(F1 in ``score_details`` gives partial credit).
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from envs.base import Env, Split, Task
from envs.scoring import squad_exact_match, squad_f1, squad_normalize, text_answer_key

if TYPE_CHECKING:
    from tools import Tool

KINDS = ("description", "creator", "year", "capital", "founded", "nationality", "birth_year")
TEST_BUCKETS = 5

_WORK = (
    r"film|novel|novella|album|studio album|song|single|painting|book|poem|epic poem|play|opera|ballet|"
    r"video game|sculpture|symphony|musical|treatise|essay|television series|TV series|fresco"
)
_VERB = {
    "film": "directed", "painting": "painted", "fresco": "painted", "sculpture": "sculpted",
    "opera": "composed", "ballet": "composed", "symphony": "composed", "musical": "wrote",
    "album": "recorded", "studio album": "recorded", "song": "recorded", "single": "recorded",
    "video game": "developed", "television series": "created", "TV series": "created",
}  # fmt: skip
_YEAR_VERB = {"film": "released", "album": "released", "studio album": "released", "song": "released",
              "single": "released", "video game": "released", "painting": "painted", "fresco": "painted",
              "sculpture": "made", "opera": "first performed", "ballet": "first performed",
              "symphony": "composed", "musical": "first staged", "play": "written"}  # fmt: skip
_DEMONYM = re.compile(r"[A-Z][a-z]+(?:an|ese|ish|ic|ch|i|ss|ek|ai|ot)(?:-[A-Z][a-z]+)*$")
_NOT_NATIONALITY = {"Christian", "Catholic", "Islamic", "Classic", "Romantic", "Baroque", "Gothic", "Hasidic"}


def _strip_qualifier(title: str) -> str:
    return re.sub(r"\s*\([^()]*\)$", "", title).strip()


def _first_sentence(text: str) -> str:
    match = re.match(r"(.+?[a-z)\]\"'][.!?])(?:\s|$)", text, re.DOTALL)
    return match.group(1) if match else text


def _questions_for(article: Any, unique_description: bool) -> Iterator[tuple[str, str, list[str]]]:
    """(kind, question, acceptable answers) made from one article."""
    title, desc, text = article.title, article.description, article.text
    name = _strip_qualifier(title)
    titles = [title, name]
    if title.count(", ") == 1:  # "Frederick II, Holy Roman Emperor" → also "Frederick II"
        titles.append(title.split(", ")[0])
    titles = list(dict.fromkeys(titles))

    if unique_description and len(desc.split()) >= 4:
        yield "description", f"Which Wikipedia article has the short description '{desc}'?", titles

    work = re.match(rf"^(\d{{3,4}}) (?:[\w'-]+ )*?({_WORK})\b(.*)$", desc)
    if work:
        year, kind, rest = work.groups()
        by = re.search(r"\bby ([A-Z][^(),;]+?)$", rest)
        if by and by.group(1) in text:
            verb = _VERB.get(kind, "wrote")
            yield "creator", f"Who {verb} the {year} {kind} '{name}'?", [by.group(1)]
        if year in text:
            verb = _YEAR_VERB.get(kind, "published")
            yield "year", f"In what year was the {kind} '{name}' {verb}?", [year]

    capital = re.search(r"\bcapital(?: and (?:the )?largest city)? is ([A-Z][\w'-]+(?: [A-Z][\w'-]+)*)", text)
    if capital and article.topic == "Geography":
        yield "capital", f"What is the capital of {name}?", [capital.group(1)]

    first = _first_sentence(text)
    founded = re.search(r"\b(?:founded|established) in (\d{3,4})\b", first)
    if founded:
        yield "founded", f"In what year was '{name}' founded?", [founded.group(1)]

    if article.topic == "People":
        opening = r"^[^,.;()]{2,80}? (?:was|is) an? ([A-Z][\w-]+)(?: and ([A-Z][\w-]+))? "
        nationality = re.match(opening, first)
        demonyms = [d for d in (nationality.groups() if nationality else ()) if d]
        if demonyms and all(_DEMONYM.match(d) and d not in _NOT_NATIONALITY for d in demonyms):
            answers = [" and ".join(demonyms), *demonyms] if len(demonyms) > 1 else demonyms
            yield "nationality", f"According to Wikipedia, what is the nationality of {name}?", answers
        lifespan = re.search(r"\((\d{3,4})\s*[–-]\s*\d{3,4}\)", desc)
        if lifespan and lifespan.group(1) in text and not re.search(r"\b(band|group|duo)\b", desc):
            yield "birth_year", f"In what year was {name} born?", [lifespan.group(1)]


def _leaks(question: str, answers: Sequence[str]) -> bool:
    q = f" {squad_normalize(question)} "
    return any(not squad_normalize(a) or f" {squad_normalize(a)} " in q for a in answers)


def split_of(title: str) -> Split:
    bucket = int.from_bytes(hashlib.sha256(title.encode()).digest()[:4], "big") % TEST_BUCKETS
    return "test" if bucket == 0 else "train"


@lru_cache(maxsize=1)
def build_questions() -> tuple[Task, ...]:
    """All questions, in corpus order; deterministic."""
    from tools.wikipedia.corpus import load_corpus

    articles = load_corpus()
    description_count = Counter(a.description.casefold() for a in articles)
    tasks = []
    for article in articles:
        unique = bool(article.description) and description_count[article.description.casefold()] == 1
        for kind, question, answers in _questions_for(article, unique):
            if _leaks(question, answers):
                continue
            digest = hashlib.sha256(f"{kind}|{article.title}".encode()).hexdigest()[:10]
            tasks.append(
                Task(
                    id=f"wikiqa-{kind}-{digest}",
                    question=question,
                    reference=answers,
                    metadata={"kind": kind, "title": article.title, "split": split_of(article.title)},
                )
            )
    return tuple(tasks)


class WikiQAEnv(Env):
    """Single-lookup questions over the offline corpus, scored by SQuAD exact match."""

    name = "wikiqa"
    system_hint = (
        "These are factual questions about Wikipedia articles. Search the offline Wikipedia and read "
        "the article before answering; answer with just the name, title or number asked for."
    )

    def __init__(self, kinds: Sequence[str] | None = None) -> None:
        unknown = set(kinds or ()) - set(KINDS)
        if unknown:
            raise ValueError(f"Unknown wikiqa question kinds {sorted(unknown)}; choose from {list(KINDS)}.")
        self.kinds = tuple(kinds) if kinds else KINDS

    def tools(self) -> list[Tool]:
        from tools.wikipedia import wikipedia_tools

        return wikipedia_tools(backend="offline")

    def tasks(self, split: Split = "test", n: int | None = None, seed: int = 0) -> list[Task]:
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
        pool = [
            t for t in build_questions() if t.metadata["split"] == split and t.metadata["kind"] in self.kinds
        ]
        pool.sort(key=lambda t: hashlib.sha256(f"{seed}|{t.id}".encode()).digest())
        return [t.model_copy(deep=True) for t in pool[:n]]

    def score(self, task: Task, answer: str) -> float:
        return squad_exact_match(answer, task.reference)

    def answer_key(self, answer: str | None) -> str | None:
        return text_answer_key(answer)

    def score_details(self, task: Task, answer: str) -> dict[str, float]:
        return {"score": self.score(task, answer), "f1": squad_f1(answer, task.reference)}
