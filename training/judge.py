"""The ``self_judge`` signal (SERL style): the policy judges pairs of its own group's answers.

Each pair of distinct answers (``Env.answer_key``) is shown twice, once in each order,
with a short prompt asking which is correct; the reply is parsed for one letter. Asking both ways
cancels the judge's position bias: a pair is *consistent* when both orders pick the same answer.

An answer's score is its win rate shrunk towards 0.5 by how consistent the judge was on its pairs:

    score(x) = 0.5 + consistency(x) · (win_rate(x) − 0.5)

where ``win_rate(x)`` = votes for x / votes cast in the pairs holding x, and ``consistency(x)`` = the
share of those pairs judged consistently. A judge that always says "A" gives every answer one win
and one loss per pair, and is never consistent: every score is 0.5, no signal. A reply naming both
letters or neither is no vote, and counted (``unparsed``). An answer with no alternative in its
group is not judged and scores 0.5; a run with no answer scores 0.

Judging runs through ``Policy.generate`` (token ids in and out), every call of every group at once,
so ``HFPolicy`` batches them.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field

from agent.policy import SamplingParams
from training.signals import AnswerKey, answer_key

Vote = Literal["A", "B"]

JUDGE_PROMPT = ("Question: {question}\n\nAnswer A: {first}\nAnswer B: {second}\n\n"
                "Which answer is correct? Reply with one letter, A or B.")
JUDGE_SAMPLING = SamplingParams(temperature=0.0, max_new_tokens=8)
SHOWN_CHARS = 300  # of each answer: a judge prompt stays small

# a letter standing alone (but not the article "a"), or either case after "answer" or in brackets
_LETTER = re.compile(r"(?<![A-Za-z])(?:(?i:answer)\s*:?\s*\(?([ABab])\)?|\(([ABab])\)|([ABb]))(?![A-Za-z])")


def parse_verdict(reply: str) -> Vote | None:
    """The one letter the reply names (``"A"``, ``"B."``, ``"Answer B"``, ``"answer: b"``, ``"(a)"``); ``None``
    when it names neither or both (``"A or B"``, ``"I cannot tell"``). A lower-case ``a`` alone is the
    article, not a vote (``"B is a better answer"`` is B)."""
    letters = {"".join(groups).upper() for groups in _LETTER.findall(reply or "")}
    return letters.pop() if len(letters) == 1 else None  # type: ignore[return-value]


class PairVerdict(BaseModel):
    """Both orders of one pair: ``forward`` shows ``first`` as A, ``backward`` shows ``second`` as A."""

    first: str
    second: str
    forward: Vote | None = None
    backward: Vote | None = None
    replies: tuple[str, str] = ("", "")

    def votes(self) -> list[str]:
        """The answers voted for (0, 1 or 2 of them)."""
        out = []
        if self.forward is not None:
            out.append(self.first if self.forward == "A" else self.second)
        if self.backward is not None:
            out.append(self.second if self.backward == "A" else self.first)
        return out

    @property
    def consistent(self) -> bool:
        votes = self.votes()
        return len(votes) == 2 and votes[0] == votes[1]

    @property
    def winner(self) -> str | None:
        """The answer both orders chose, when they agree."""
        return self.votes()[0] if self.consistent else None


class GroupJudgement(BaseModel):
    """The judge's verdicts on one task's group, and each answer's score."""

    task_id: str
    verdicts: list[PairVerdict] = Field(default_factory=list)
    scores: dict[str, float] = Field(default_factory=dict)  # answer key → score

    @property
    def calls(self) -> int:
        return 2 * len(self.verdicts)


def judge_scores(keys: Sequence[str], verdicts: Sequence[PairVerdict]) -> dict[str, float]:
    """Each answer key's score from the verdicts on its pairs (module docstring)."""
    scores = {}
    for key in keys:
        pairs = [v for v in verdicts if key in (v.first, v.second)]
        votes = [vote for v in pairs for vote in v.votes()]
        if not pairs or not votes:
            scores[key] = 0.5
            continue
        win_rate = votes.count(key) / len(votes)
        consistency = sum(v.consistent for v in pairs) / len(pairs)
        scores[key] = 0.5 + consistency * (win_rate - 0.5)
    return scores


class SelfJudge:
    """Judges groups of answers with ``policy``; counts its calls and the seconds they took."""

    def __init__(self, policy: Any, *, key: AnswerKey = answer_key, sampling: SamplingParams = JUDGE_SAMPLING) -> None:
        from agent.chat_format import ChatFormat

        self.policy = policy
        self.key = key  # which answers are the same (``Env.answer_key``)
        self.sampling = sampling
        self.format = ChatFormat(policy.tokenizer)
        self.calls = 0
        self.seconds = 0.0

    async def judge_groups(self, groups: Sequence[tuple[str, str, Sequence[str]]]) -> list[GroupJudgement]:
        """``groups``: (task id, question, answers shown for each distinct key) → one judgement each."""
        started = time.perf_counter()
        try:
            return list(await asyncio.gather(*(self.judge_group(*g) for g in groups)))
        finally:
            self.seconds += time.perf_counter() - started

    async def judge_group(self, task_id: str, question: str, answers: Sequence[str]) -> GroupJudgement:
        shown = {key: a for a in answers if (key := self.key(a)) is not None}
        pairs = list(itertools.combinations(shown, 2))
        replies = await asyncio.gather(*(self._ask(question, shown[a], shown[b])
                                         for x, y in pairs for a, b in ((x, y), (y, x))))
        verdicts = [PairVerdict(first=x, second=y, forward=parse_verdict(replies[2 * i]),
                                backward=parse_verdict(replies[2 * i + 1]),
                                replies=(replies[2 * i][:80], replies[2 * i + 1][:80]))
                    for i, (x, y) in enumerate(pairs)]
        return GroupJudgement(task_id=task_id, verdicts=verdicts, scores=judge_scores(list(shown), verdicts))

    async def _ask(self, question: str, first: str, second: str) -> str:
        text = JUDGE_PROMPT.format(question=question.strip(), first=first.strip()[:SHOWN_CHARS],
                                   second=second.strip()[:SHOWN_CHARS])
        ids = self.format.prompt_ids([{"role": "user", "content": text}])
        self.calls += 1
        generation = await self.policy.generate(ids, self.sampling)
        return generation.text
