import asyncio

import pytest
import torch

from agent.hf_policy import HFPolicy, PolicyError
from agent.policy import SamplingParams


def _prompt(tokenizer, text):
    return tokenizer(f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n",
                     add_special_tokens=False)["input_ids"]


def test_greedy_matches_model_generate_one_at_a_time_and_batched(tiny_model, tokenizer):
    prompts = [_prompt(tokenizer, q) for q in ["hi", "what is two plus two, exactly?", "a" * 40]]
    expected = []
    for p in prompts:
        out = tiny_model.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                                  max_new_tokens=12, do_sample=False, eos_token_id=[], pad_token_id=0)
        expected.append(out[0, len(p):].tolist())
    policy = HFPolicy(tiny_model, tokenizer)
    greedy = SamplingParams(max_new_tokens=12, temperature=0)

    async def all_at_once():
        return await asyncio.gather(*[policy.generate(p, greedy) for p in prompts])

    batched = asyncio.run(all_at_once())
    single = [policy.generate_sync(p, greedy) for p in prompts]  # second pass reuses cached prefixes
    policy.close()
    for exp, a, b in zip(expected, batched, single, strict=True):
        ids = exp[: next((i + 1 for i, t in enumerate(exp) if t in policy.eos_ids), len(exp))]
        assert a.token_ids == ids
        assert b.token_ids == ids
        assert len(a.logprobs) == len(a.token_ids)
    assert policy.stats.reused_prefix_tokens > 0


def test_logprobs_are_those_of_the_sampled_tokens(tiny_model, tokenizer):
    policy = HFPolicy(tiny_model, tokenizer)
    prompt = _prompt(tokenizer, "tell me a story")
    gen = policy.generate_sync(prompt, SamplingParams(max_new_tokens=10, temperature=0.8, seed=1))
    policy.close()
    ids = torch.tensor([prompt + gen.token_ids])
    with torch.no_grad():
        logits = tiny_model(ids).logits[0, len(prompt) - 1 : -1] / 0.8
    expected = torch.log_softmax(logits, -1).gather(1, torch.tensor(gen.token_ids)[:, None]).squeeze(1)
    assert torch.allclose(torch.tensor(gen.logprobs), expected, atol=1e-4)


def test_seeded_sampling_is_reproducible_and_seeds_differ(tiny_model, tokenizer):
    policy = HFPolicy(tiny_model, tokenizer)
    prompt = _prompt(tokenizer, "x")
    a = policy.generate_sync(prompt, SamplingParams(max_new_tokens=16, temperature=1.0, seed=7))
    b = policy.generate_sync(prompt, SamplingParams(max_new_tokens=16, temperature=1.0, seed=7))
    c = policy.generate_sync(prompt, SamplingParams(max_new_tokens=16, temperature=1.0, seed=8))
    policy.close()
    assert a.token_ids == b.token_ids
    assert a.token_ids != c.token_ids


def test_stop_strings_and_length_limit(tiny_model, tokenizer):
    policy = HFPolicy(tiny_model, tokenizer)
    prompt = _prompt(tokenizer, "go")
    free = policy.generate_sync(prompt, SamplingParams(max_new_tokens=20, temperature=0))
    assert free.finish_reason == "length" and len(free.token_ids) == 20
    # stop on a piece of text the greedy continuation is known to produce
    piece = tokenizer.decode(free.token_ids[4:6])
    stopped = policy.generate_sync(prompt, SamplingParams(max_new_tokens=20, temperature=0, stop=[piece]))
    policy.close()
    assert stopped.finish_reason == "stop"
    assert piece in tokenizer.decode(stopped.token_ids)
    assert stopped.token_ids == free.token_ids[: len(stopped.token_ids)]
    assert len(stopped.token_ids) <= 6


def test_late_joiners_do_not_wait_for_the_running_batch(tiny_model, tokenizer):
    """A short request submitted while a long one is decoding finishes first."""
    policy = HFPolicy(tiny_model, tokenizer)
    prompt = _prompt(tokenizer, "long")

    async def scenario():
        order = []

        async def run(name, n, delay):
            await asyncio.sleep(delay)
            await policy.generate(prompt, SamplingParams(max_new_tokens=n, temperature=0))
            order.append(name)

        await asyncio.gather(run("long", 300, 0), run("short", 3, 0.05))
        return order

    order = asyncio.run(scenario())
    policy.close()
    assert order == ["short", "long"]
    assert policy.stats.mean_batch > 1.0


def test_bad_inputs_give_clear_errors(tiny_policy):
    with pytest.raises(ValueError, match="at least one prompt token"):
        tiny_policy.generate_sync([], SamplingParams())
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tiny_policy.generate_sync([10**9], SamplingParams())
    with pytest.raises(PolicyError, match="context"):
        tiny_policy.generate_sync([1] * 5000, SamplingParams())


def test_cancelled_request_leaves_the_batch_and_others_finish(tiny_model, tokenizer):
    policy = HFPolicy(tiny_model, tokenizer)
    prompt = _prompt(tokenizer, "cancel me")

    async def scenario():
        long, short = (SamplingParams(max_new_tokens=n, temperature=0) for n in (400, 8))
        doomed = asyncio.create_task(policy.generate(prompt, long))
        other = asyncio.create_task(policy.generate(prompt, short))
        await asyncio.sleep(0.05)
        doomed.cancel()
        result = await other
        with pytest.raises(asyncio.CancelledError):
            await doomed
        return result

    result = asyncio.run(scenario())
    policy.close()
    assert len(result.token_ids) == 8
