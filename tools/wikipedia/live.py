"""Manners for talking to the real Wikipedia: who we are, one request at a time, and patience.

``PoliteTransport`` wraps the network transport of the ``wikipedia-api`` client. It answers
repeated queries from an on-disk cache, sends at most one request at a time to each host (across
all clients in the process), and on HTTP 429 or 5xx or a timeout waits (``Retry-After`` when the
server gives one, exponential backoff otherwise) and tries again, within a bounded total wait so
an agent is never stalled for long. Connection errors are not retried: without a network the model
hears so at once. When it gives up it hands the last response (or the error) to the client, which
turns it into a typed ``wikipediaapi`` exception that the tools report to the model.
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import importlib.metadata
import json
import logging
import os
import random
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx

log = logging.getLogger(__name__)

CONTACT_ENV = "ANCHORLOOP_WIKI_CONTACT"
PLACEHOLDER_CONTACT = f"contact not configured; set {CONTACT_ENV}"
CACHE_TTL_S = 7 * 24 * 3600.0
_warned_placeholder = False


def user_agent(contact: str | None = None) -> str:
    """A User-Agent per the Wikimedia policy: tool name, version and a way to reach the operator.

    ``contact`` (an e-mail address or URL) defaults to ``$ANCHORLOOP_WIKI_CONTACT``.
    """
    global _warned_placeholder
    contact = contact or os.environ.get(CONTACT_ENV) or PLACEHOLDER_CONTACT
    if contact == PLACEHOLDER_CONTACT and not _warned_placeholder:
        _warned_placeholder = True
        log.warning(
            "Live Wikipedia requests carry no contact address; set %s to an e-mail or URL "
            "(Wikimedia's User-Agent policy asks for one).",
            CONTACT_ENV,
        )
    try:
        version = importlib.metadata.version("anchorloop")
    except importlib.metadata.PackageNotFoundError:
        version = "dev"
    return f"anchorloop/{version} ({contact})"


class ResponseCache:
    """Successful API responses on disk, one file per canonical request URL, for ``ttl_s`` seconds."""

    def __init__(self, folder: str | Path, ttl_s: float = CACHE_TTL_S) -> None:
        self.folder = Path(folder)
        self.ttl_s = ttl_s

    @staticmethod
    def key(request: httpx.Request) -> str:
        params = sorted(request.url.params.multi_items())
        canonical = request.url.copy_with(params=params, fragment=None)
        return hashlib.sha256(f"{request.method} {canonical}".encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> bytes | None:
        path = self._path(key)
        try:
            if time.time() - path.stat().st_mtime > self.ttl_s:
                return None
            return path.read_bytes()
        except OSError:
            return None

    def put(self, key: str, body: bytes) -> None:
        path = self._path(key)
        tmp: str | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(body)
            os.replace(tmp, path)
        except OSError:  # a cache that cannot be written is only a slower cache
            log.warning("could not write the Wikipedia response cache at %s", path, exc_info=True)
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)


class PoliteTransport(httpx.BaseTransport):
    """Cache, serialize (per host) and retry the requests of a Wikipedia client.

    Args:
        inner: the transport that really talks to the network.
        cache: where successful responses are kept; ``None`` disables caching.
        max_retries: further attempts after a 429, 5xx or timeout.
        backoff_s: first wait of the exponential backoff (doubled on every retry, with jitter).
        max_wait_s: most total time spent waiting on one request; a ``Retry-After`` longer than
            what is left is not waited out, the 429 goes back to the caller at once.
        sleep: how to wait (tests pass a recorder).
    """

    def __init__(
        self,
        inner: httpx.BaseTransport | None = None,
        *,
        cache: ResponseCache | None = None,
        max_retries: int = 3,
        backoff_s: float = 1.0,
        max_wait_s: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.inner = inner if inner is not None else httpx.HTTPTransport()
        self.cache = cache
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_wait_s = max_wait_s
        self.sleep = sleep

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        key = ResponseCache.key(request) if self.cache and request.method == "GET" else None
        if key and (cached := self.cache.get(key)) is not None:
            return _json_response(200, cached, request, source="cache")
        # Held across retries and their waits, so that a rate limit pauses every caller.
        with host_lock(request.url.host):
            if key and (cached := self.cache.get(key)) is not None:  # filled while we waited
                return _json_response(200, cached, request, source="cache")
            response = self._send_with_retries(request)
        if key and response.status_code == 200 and _is_api_success(response.content):
            self.cache.put(key, response.content)
        return response

    def _send_with_retries(self, request: httpx.Request) -> httpx.Response:
        waited = 0.0
        for attempt in range(self.max_retries + 1):
            last_attempt = attempt == self.max_retries
            try:
                response = self.inner.handle_request(request)
                body = response.read()
            except httpx.TimeoutException:
                if last_attempt:
                    raise
                delay, reason = self._backoff(attempt), "timeout"
            else:
                if response.status_code != 429 and response.status_code < 500:
                    return _json_response(response.status_code, body, request, headers=response.headers)
                if last_attempt:
                    return _json_response(response.status_code, body, request, headers=response.headers)
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                delay = retry_after if retry_after is not None else self._backoff(attempt)
                reason = f"HTTP {response.status_code}"
                if waited + delay > self.max_wait_s:
                    log.warning("Wikipedia %s; a %.0f s wait exceeds the budget, giving up", reason, delay)
                    return _json_response(response.status_code, body, request, headers=response.headers)
            log.info("Wikipedia %s; retrying in %.1f s (attempt %d)", reason, delay, attempt + 2)
            self.sleep(delay)
            waited += delay
        raise AssertionError("unreachable")  # the last attempt always returns or raises

    def _backoff(self, attempt: int) -> float:
        return self.backoff_s * (2**attempt) * random.uniform(0.8, 1.2)

    def close(self) -> None:
        self.inner.close()


_host_locks: dict[str, threading.Lock] = {}
_host_locks_guard = threading.Lock()


def host_lock(host: str) -> threading.Lock:
    """The process-wide lock that serializes requests to ``host``."""
    with _host_locks_guard:
        return _host_locks.setdefault(host, threading.Lock())


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds: either a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    with contextlib.suppress(ValueError):
        return max(float(value), 0.0)
    with contextlib.suppress(TypeError, ValueError):
        when = email.utils.parsedate_to_datetime(value)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max((when - datetime.now(UTC)).total_seconds(), 0.0)
    return None


def _is_api_success(body: bytes) -> bool:
    """Only well-formed answers are cached: not malformed JSON, not a MediaWiki ``error`` body."""
    try:
        payload = json.loads(body)
    except ValueError:
        return False
    return isinstance(payload, dict) and "error" not in payload


_KEPT_HEADERS = ("content-type", "retry-after")


def _json_response(
    status: int,
    body: bytes,
    request: httpx.Request,
    *,
    headers: httpx.Headers | None = None,
    source: str = "network",
) -> httpx.Response:
    # The body is already decoded, so the transfer headers (length, encoding) must not travel on.
    kept = {k: v for k, v in (headers or {}).items() if k.lower() in _KEPT_HEADERS}
    kept.setdefault("content-type", "application/json")
    kept["x-anchorloop-source"] = source
    return httpx.Response(status, headers=kept, content=body, request=request)
