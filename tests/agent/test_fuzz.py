"""Fuzz: hostile model output and hostile tools through the real graph, rollout and trajectory files.

Every run must finish by its deadline with nothing raised out of ``rollout()``; ids, env_mask and
log-probs stay aligned and exactly as sampled; inserted segments carry only the chat markup's special
tokens; every trajectory saves and reloads as itself. ``bench/bench_fuzz.py`` runs the long campaign.
"""

from __future__ import annotations

import asyncio

from tests.agent.fuzz_harness import campaign


def test_300_hostile_runs_keep_every_invariant(tokenizer, tmp_path):
    outcome = asyncio.run(campaign(tokenizer, runs=300, seed=14, save_dir=tmp_path, deadline_s=120.0))
    assert (outcome.raised, outcome.hangs) == (0, 0)
    assert outcome.finished == outcome.runs == 300
    assert outcome.unexpected_failures == 0, outcome.failed
    assert not outcome.violations, outcome.violations
    # the campaign was hostile: the scorer fired (its runs are recorded failures), tools ran and failed,
    # and most turns were garbage the model was told to correct
    assert 0 < outcome.failed["scorer"] < 300
    seen = outcome.exercised
    assert seen["checked_runs"] + outcome.failed["scorer"] == 300
    assert seen["tool_calls"] > 200 and seen["tool_errors"] > 100 and seen["format_errors"] > 500
