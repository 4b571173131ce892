"""``OpenAIPolicy``: token ids in, token ids out, against any OpenAI-compatible completions server.

The prompt goes to ``/v1/completions`` as a list of token ids (vLLM and llama.cpp accept that), so
the server sees exactly the tokens the agent templated. The sampled ids come back three ways,
whichever the server offers: vLLM's ``token_ids`` field (``return_token_ids``), vLLM's
``"token_id:123"`` logprob tokens (``return_tokens_as_token_ids``), or llama.cpp's
``logprobs.content[*].id``. A server that offers none of them gets its text re-tokenized, which is
flagged in ``metadata`` and logged once: such a turn is fine to show a user, not to train on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

import httpx

from agent.openai_wire import Draft, is_int_list, server_message, sse_data
from agent.policy import FinishReason, Generation, PolicyError, SamplingParams

logger = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 503})
_RETRY_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError)
_MAX_BACKOFF_S = 30.0


class OpenAIPolicy:
    """A ``Policy`` backed by an OpenAI-compatible server (vLLM, llama.cpp, Ollama, ...).

    ``base_url`` is the server root or its ``/v1`` (``http://localhost:8000/v1``); ``model`` the
    name it serves. ``tokenizer`` is a Hugging Face tokenizer, or a hub id/path to load one from
    (default: ``model``); it must be the served model's. ``prompt_format="text"`` sends the decoded
    prompt instead of ids, for servers that only take strings (Ollama). ``transport`` plugs any
    httpx transport in (tests use ``httpx.ASGITransport``). Requests answered 429/503 or failing to
    connect are retried ``max_retries`` times with exponential backoff from ``backoff_s``.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        tokenizer: Any = None,
        timeout_s: float = 120.0,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        prompt_format: Literal["token_ids", "text"] = "token_ids",
        max_retries: int = 3,
        backoff_s: float = 0.5,
    ) -> None:
        if prompt_format not in ("token_ids", "text"):
            raise ValueError(f"prompt_format={prompt_format!r}: use 'token_ids' (vLLM, llama.cpp) or 'text'")
        if max_retries < 0 or backoff_s < 0:
            raise ValueError(f"max_retries={max_retries}, backoff_s={backoff_s}: both must be >= 0")
        root = server_root(base_url)
        self.base_url = root
        self.completions_url = f"{root}/v1/completions"
        self.model = model
        self.tokenizer = _load_tokenizer(model if tokenizer is None else tokenizer)
        self.prompt_format = prompt_format
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        # Waiting for a free pooled connection is not the server's fault: no limit on that wait.
        self._timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0), pool=None)
        self._timeout_s = timeout_s
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._warned: set[str] = set()

    def __repr__(self) -> str:
        return f"OpenAIPolicy({self.completions_url!r}, model={self.model!r})"

    async def generate(
        self,
        prompt_ids: list[int],
        sampling: SamplingParams,
        *,
        on_text: Callable[[str], None] | None = None,
    ) -> Generation:
        """Sample one turn. With ``on_text``, the answer is streamed and each text delta passed to it."""
        draft = Draft()
        choices = self._choices(prompt_ids, sampling, stream=on_text is not None)
        async with contextlib.aclosing(choices):
            async for choice in choices:
                try:
                    delta = draft.add(choice)
                except ValueError as exc:
                    raise self._malformed(str(exc)) from exc
                if on_text is not None and delta:
                    on_text(delta)
        return self._to_generation(draft, sampling)

    async def stream(self, prompt_ids: list[int], sampling: SamplingParams) -> AsyncIterator[str]:
        """The text of one turn as it is generated (chat). ``generate(on_text=...)`` also keeps the ids."""
        choices = self._choices(prompt_ids, sampling, stream=True)
        async with contextlib.aclosing(choices):  # an early break closes the connection now
            async for choice in choices:
                delta = choice.get("text")
                if isinstance(delta, str) and delta:
                    yield delta

    async def aclose(self) -> None:
        """Close the pooled connections (a policy is reusable after, it opens new ones)."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def __aenter__(self) -> OpenAIPolicy:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # --- request -----------------------------------------------------------------------------

    def _request_body(
        self, prompt_ids: list[int], sampling: SamplingParams, *, stream: bool
    ) -> dict[str, Any]:
        if not is_int_list(prompt_ids) or not prompt_ids:
            raise ValueError(
                "prompt_ids must be a non-empty list of token ids (ints); template the prompt first"
            )
        if self.prompt_format == "text":
            prompt: list[int] | str = self.tokenizer.decode(prompt_ids, skip_special_tokens=False)
        else:
            prompt = list(prompt_ids)
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": prompt,
            "max_tokens": sampling.max_new_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "logprobs": 1,  # 0 would switch llama.cpp's log-probs off
            "stream": stream,
            # vLLM extensions (other servers ignore them): ids back, and text that matches the ids.
            "return_token_ids": True,
            "return_tokens_as_token_ids": True,
            "include_stop_str_in_output": True,
        }
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        if sampling.top_k > 0:
            body["top_k"] = sampling.top_k
        return body

    def _http(self) -> httpx.AsyncClient:
        # One pooled client per event loop: httpx connections cannot cross loops, and callers such
        # as a CLI may run each turn under its own asyncio.run().
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            self._client = httpx.AsyncClient(
                headers=self._headers, timeout=self._timeout, transport=self._transport
            )
            self._client_loop = loop
        return self._client

    async def _open(self, body: dict[str, Any]) -> httpx.Response:
        """POST with bounded retries; return the open response once its status is a success."""
        client = self._http()
        for attempt in range(self.max_retries + 1):
            last = attempt == self.max_retries
            try:
                request = client.build_request("POST", self.completions_url, json=body)
                response = await client.send(request, stream=True)
            except _RETRY_ERRORS as exc:
                if last:
                    raise PolicyError(
                        f"cannot connect to the model server at {self.completions_url} "
                        f"({type(exc).__name__}: {exc}; tried {attempt + 1} times). Is it running? "
                        "Start one, e.g. `vllm serve MODEL`, or fix base_url."
                    ) from exc
                delay = self._backoff(attempt, None)
                logger.warning("%s: %s; retrying in %.1fs", self.completions_url, type(exc).__name__, delay)
            else:
                if response.status_code in RETRY_STATUSES and not last:
                    delay = self._backoff(attempt, response)
                    await response.aclose()
                    logger.warning(
                        "%s answered HTTP %d; retrying in %.1fs",
                        self.completions_url,
                        response.status_code,
                        delay,
                    )
                elif response.is_error:
                    await response.aread()
                    await response.aclose()
                    raise self._http_error(response, attempts=attempt + 1)
                else:
                    return response
            await asyncio.sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _backoff(self, attempt: int, response: httpx.Response | None) -> float:
        retry_after = response.headers.get("retry-after") if response is not None else None
        if retry_after is not None:
            try:
                return min(max(float(retry_after), 0.0), _MAX_BACKOFF_S)
            except ValueError:
                pass  # an HTTP date; fall back to our own schedule
        return min(self.backoff_s * 2**attempt, _MAX_BACKOFF_S)

    def _http_error(self, response: httpx.Response, *, attempts: int) -> PolicyError:
        status = response.status_code
        message = server_message(response)
        if status in (401, 403):
            hint = "Pass api_key= (the key the server was started with)."
        elif status == 404:
            hint = (
                f"Check base_url (the server must serve /v1/completions) and that model={self.model!r} "
                f"is one it serves (GET {self.base_url}/v1/models)."
            )
        elif status in (400, 422):
            if "context" in message.lower() and "length" in message.lower():
                hint = "Shorten the prompt or lower max_new_tokens."
            elif "prompt" in message.lower() and self.prompt_format == "token_ids":
                hint = "If this server takes no token-id prompts (Ollama), use prompt_format='text'."
            else:
                hint = "Check the model name and the sampling parameters."
        elif status in RETRY_STATUSES:
            hint = f"The server is overloaded or starting; tried {attempts} times. Try again later."
        else:
            hint = "See the server's log."
        return PolicyError(f"model server {self.completions_url} answered HTTP {status}: {message}. {hint}")

    def _malformed(self, what: str) -> PolicyError:
        return PolicyError(
            f"model server {self.completions_url} sent an answer that is not an OpenAI completion ({what}). "
            "Is base_url an OpenAI-compatible server?"
        )

    # --- response ----------------------------------------------------------------------------

    async def _choices(
        self, prompt_ids: list[int], sampling: SamplingParams, *, stream: bool
    ) -> AsyncIterator[dict[str, Any]]:
        """The server's choice objects for one request: one, or one per SSE chunk."""
        body = self._request_body(prompt_ids, sampling, stream=stream)
        try:
            response = await self._open(body)
            try:
                if stream and "text/event-stream" in response.headers.get("content-type", ""):
                    async for data in sse_data(response):
                        if data.strip() == "[DONE]":
                            break
                        choice = self._choice(self._parse(data), required=False)
                        if choice is not None:
                            yield choice
                else:  # also a server that ignored stream=true and answered plain JSON
                    await response.aread()
                    choice = self._choice(self._parse(response.text), required=True)
                    assert choice is not None
                    yield choice
            finally:
                await response.aclose()
        except httpx.TimeoutException as exc:
            raise PolicyError(
                f"model server {self.completions_url} did not answer within {self._timeout_s:g}s "
                f"({type(exc).__name__}). Raise timeout_s, lower max_new_tokens, or check the server's load."
            ) from exc
        except httpx.TransportError as exc:
            raise PolicyError(
                f"connection to model server {self.completions_url} failed mid-answer "
                f"({type(exc).__name__}: {exc}). See the server's log."
            ) from exc

    def _parse(self, text: str) -> dict[str, Any]:
        try:
            obj = json.loads(text)
        except ValueError as exc:
            raise self._malformed(f"not JSON: {text[:200]!r}") from exc
        if not isinstance(obj, dict):
            raise self._malformed(f"JSON {type(obj).__name__}, not an object")
        if "error" in obj or obj.get("object") == "error":
            error = obj.get("error", obj)
            message = error.get("message", error) if isinstance(error, dict) else error
            raise PolicyError(f"model server {self.completions_url} reported an error: {message}")
        return obj

    def _choice(self, obj: dict[str, Any], *, required: bool) -> dict[str, Any] | None:
        choices = obj.get("choices")
        if not isinstance(choices, list) or (required and not choices):
            raise self._malformed("no 'choices'")
        if not choices:
            return None  # e.g. a usage-only chunk at the end of a stream
        if not isinstance(choices[0], dict):
            raise self._malformed("a choice is not an object")
        return choices[0]

    def _to_generation(self, draft: Draft, sampling: SamplingParams) -> Generation:
        ids_exact = draft.saw_ids and not draft.missing_ids
        finish = self._finish_reason(draft, sampling, draft.token_ids if ids_exact else None)
        if ids_exact:
            token_ids = draft.token_ids
        else:
            self._warn_once(
                "token_ids",
                "%s returned no token ids; re-tokenizing its text (ids may differ from those sampled: "
                "do not train on these turns). vLLM returns exact ids.",
            )
            token_ids = list(self.tokenizer.encode(draft.text, add_special_tokens=False))
            eos_id = getattr(self.tokenizer, "eos_token_id", None)
            if finish == "eos" and eos_id is not None:
                token_ids.append(eos_id)
        logprobs_exact = not draft.missing_logprobs and len(draft.logprobs) == len(token_ids)
        logprobs = draft.logprobs if logprobs_exact else [math.nan] * len(token_ids)
        if any(math.isnan(v) for v in logprobs):
            self._warn_once(
                "logprobs", "%s returned no (or misaligned) log-probs; they are NaN where unknown."
            )
            logprobs_exact = False
        logprobs_exact = logprobs_exact and ids_exact
        return Generation(
            token_ids=token_ids,
            logprobs=logprobs,
            text=draft.text,
            finish_reason=finish,
            metadata={
                "token_ids_exact": ids_exact,
                "logprobs_exact": logprobs_exact,
                "prompt_exact": self.prompt_format == "token_ids",
                "server_finish_reason": draft.finish_reason,
                "stop_reason": draft.stop_reason,
            },
        )

    def _finish_reason(
        self, draft: Draft, sampling: SamplingParams, exact_ids: list[int] | None
    ) -> FinishReason:
        reason = draft.finish_reason
        if reason == "length":
            return "length"
        if reason != "stop":
            raise PolicyError(
                f"model server {self.completions_url} ended the completion with finish_reason={reason!r} "
                "(expected 'stop' or 'length'); the answer was cut off or aborted. See the server's log."
            )
        if draft.has_stop_reason:  # vLLM says exactly: a stop string, a stop token id, or null for EOS
            return "stop" if isinstance(draft.stop_reason, str) else "eos"
        # llama.cpp and others say only "stop": tell EOS from a stop string by the last token.
        eos_id = getattr(self.tokenizer, "eos_token_id", None)
        if exact_ids and exact_ids[-1] == eos_id:
            return "eos"
        if any(draft.text.endswith(s) for s in sampling.stop):
            return "stop"
        return "stop" if sampling.stop else "eos"

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(message, self.completions_url)


def server_root(base_url: str) -> str:
    """The server's root URL, whether ``base_url`` is given with or without its ``/v1``."""
    return base_url.rstrip("/").removesuffix("/v1")


def _load_tokenizer(spec: Any) -> Any:
    if not isinstance(spec, (str, os.PathLike)):
        return spec
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(spec)
    except Exception as exc:  # any load failure gets the same fix
        raise PolicyError(
            f"cannot load a tokenizer from {str(spec)!r} ({type(exc).__name__}: {exc}). Pass tokenizer= "
            "(a Hugging Face tokenizer, or its hub id or path) matching the served model."
        ) from exc
