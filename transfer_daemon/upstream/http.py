"""One HTTP call to an upstream, with the shared limiter, retries, counters and redaction.

Retried: HTTP 429 and 5xx, timeouts, connection errors, explorer rate-limit answers and
malformed bodies (HTML error pages, truncated JSON), with `Backoff` (1, 2, 4 … 60 s, jitter) and
`Retry-After` honoured. Never retried: an invalid key (`InvalidApiKey`, alert level) or any
answer an operator must act on. A call gives up after `max_attempts` or `max_total_s`
(`UpstreamError`). The API key never appears in a message: every error text is scrubbed of it.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import requests

from transfer_daemon import metrics
from transfer_daemon.backoff import Backoff
from transfer_daemon.config import ChainConfig
from transfer_daemon.errors import InvalidApiKey, RateLimited, UpstreamError
from transfer_daemon.redact import redact_url, url_secrets
from transfer_daemon.upstream.limiter import BoundedWaits

log = logging.getLogger(__name__)
T = TypeVar("T")


class _RedactQuery(logging.Filter):
    """urllib3 logs request lines (query string and all) at DEBUG: keep keys out of them."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact_url(record.getMessage()), None
        return True


logging.getLogger("urllib3.connectionpool").addFilter(_RedactQuery())


@dataclass
class UpstreamStats:
    """This client's own counters (its tests read them); `metrics` exports the same events."""

    requests: Counter = field(default_factory=Counter)  # attempts by outcome
    retries: int = 0
    gave_up: int = 0
    rate_limit_waits: int = 0
    rate_limit_wait_s: float = 0.0


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8
    max_total_s: float = 300.0
    initial_s: float = 1.0
    maximum_s: float = 60.0
    jitter: float = 0.2


def upstream_error(outcome: str, message: str, *, retryable: bool, kind: type[UpstreamError] = UpstreamError,
                   **extra: Any) -> UpstreamError:
    """An UpstreamError tagged with the metrics outcome of the attempt that raised it."""
    error = kind(message, retryable=retryable, **extra) if kind is not InvalidApiKey else kind(message)
    error.outcome = outcome
    error.detail = message
    return error


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """`Retry-After: 7` or an HTTP date -> seconds (None when absent or unreadable)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def check_status(response: requests.Response) -> None:
    """Raise for the HTTP statuses that mean the same whatever the body says."""
    status = response.status_code
    if status == 429:
        retry_after = retry_after_seconds(response.headers.get("Retry-After"))
        raise upstream_error("http_429", "HTTP 429 Too Many Requests", retryable=True, kind=RateLimited,
                   retry_after=retry_after)
    if status >= 500 or status == 408:
        raise upstream_error("http_5xx", f"HTTP {status}", retryable=True)
    if status == 401:
        raise upstream_error("invalid_key", "HTTP 401 Unauthorized", retryable=False, kind=InvalidApiKey)
    if status == 403:
        raise upstream_error("http_4xx", "HTTP 403 Forbidden", retryable=False)


class HttpClient:
    """Sends one logical call, retrying it; interprets the response with the caller's function."""

    def __init__(self, chain: ChainConfig, limiter: BoundedWaits, *, environ: Mapping[str, str] | None = None,
                 session: requests.Session | None = None, policy: RetryPolicy = RetryPolicy(),
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None, stats: UpstreamStats | None = None,
                 on_attempt: Callable[[], None] | None = None) -> None:
        self.chain = chain
        self.limiter = limiter
        self.environ = environ
        self.session = session or requests.Session()
        self.policy = policy
        self.stats = stats or UpstreamStats()
        self._sleep = sleep
        self._clock = clock
        self._rng = rng or random.Random()
        self._on_attempt = on_attempt or (lambda: None)  # progress: a retrying call is not a hung one
        self._warned: set[str] = set()

    def api_key(self) -> str:
        """Read at the moment of use, so a rotated key needs no restart."""
        return self.chain.api_key(self.environ)

    def scrub(self, text: str) -> str:
        key = self.api_key()
        for secret in url_secrets(self.chain.rpc_url) | url_secrets(self.chain.base_url):
            text = text.replace(secret, "***")  # quoted without its URL: "url: /v2/<key>"
        text = redact_url(text)
        return text.replace(key, "***") if len(key) >= 4 else text

    def warn_once(self, message: str) -> None:
        """An upstream complaint worth one operator line per process, not one per call."""
        if message not in self._warned:
            self._warned.add(message)
            log.warning("upstream warned chain=%s: %s", self.chain.name, self.scrub(message))

    def call(self, method: str, url: str, interpret: Callable[[requests.Response], T], *,
             params: Mapping[str, Any] | None = None, json: Any = None, what: str = "call") -> T:
        """One logical call: limiter, send, interpret; retry what is retryable; give up eventually."""
        backoff = Backoff(self.policy.initial_s, self.policy.maximum_s, self.policy.jitter, rng=self._rng)
        started = self._clock()
        attempt = 0
        while True:
            attempt += 1
            self._wait_for_token()
            try:
                value = self._attempt(method, url, interpret, params, json)
            except UpstreamError as error:
                self._on_attempt()
                self._add_context(error, url, attempt)
                self._count(getattr(error, "outcome", "error"))
                delay = self._next_delay(error, backoff, started, attempt, url, what)
                log.warning("retrying chain=%s %s after %s: waiting %.1fs (attempt %d)",
                            self.chain.name, what, self.scrub(getattr(error, "detail", "")), delay, attempt)
                self.stats.retries += 1
                metrics.RETRIES.labels(self.chain.name).inc()
                self._sleep(delay)
                continue
            self._on_attempt()
            self._count("ok")
            return value

    def _count(self, outcome: str) -> None:
        self.stats.requests[outcome] += 1
        metrics.UPSTREAM_REQUESTS.labels(self.chain.name, self.chain.kind, outcome).inc()

    def _wait_for_token(self) -> None:
        waited = self.limiter.acquire()
        if waited > 0:
            self.stats.rate_limit_waits += 1
            self.stats.rate_limit_wait_s += waited
            metrics.RATE_LIMIT_WAITS.labels(self.chain.name).inc()
            metrics.RATE_LIMIT_WAIT_SECONDS.labels(self.chain.name).inc(waited)

    def _attempt(self, method: str, url: str, interpret: Callable[[requests.Response], T],
                 params: Mapping[str, Any] | None, json: Any) -> T:
        started = time.perf_counter()
        try:
            response = self.session.request(method, url, params=params, json=json,
                                            timeout=self.chain.request_timeout_s)
            return interpret(response)
        except requests.Timeout as exc:
            raise self._wrapped("timeout", "timed out", exc) from None
        except requests.ConnectionError as exc:
            raise self._wrapped("connection", "connection failed", exc) from None
        except requests.RequestException as exc:
            raise self._wrapped("error", "request failed", exc) from None
        finally:
            metrics.UPSTREAM_LATENCY.labels(self.chain.name, self.chain.kind).observe(time.perf_counter() - started)

    def _add_context(self, error: UpstreamError, url: str, attempt: int) -> None:
        """Name chain, URL (redacted) and attempt in the message, and scrub the key from all of it."""
        error.chain, error.url, error.attempt = self.chain.name, self.scrub(url), attempt
        detail = getattr(error, "detail", None) or str(error)
        error.args = (self.scrub(f"{detail} [{error.chain}] {error.url} (attempt {attempt})"),)

    def _wrapped(self, outcome: str, what: str, exc: Exception) -> UpstreamError:
        detail = self.scrub(f"{type(exc).__name__}: {exc}")[:300]
        return upstream_error(outcome, f"{what} ({detail})", retryable=True)

    def _next_delay(self, error: UpstreamError, backoff: Backoff, started: float, attempt: int,
                    url: str, what: str) -> float:
        """The pause before the next attempt, or raise when the call must stop here."""
        if not error.retryable:
            if isinstance(error, InvalidApiKey):
                log.warning("gave up chain=%s %s: invalid API key (fix %s)", self.chain.name, what,
                            self.chain.api_key_env)
            raise error
        delay = backoff.failed(self._clock())
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            delay = max(delay, retry_after)
        if attempt >= self.policy.max_attempts or self._clock() - started + delay > self.policy.max_total_s:
            self.stats.gave_up += 1
            last = self.scrub(getattr(error, "detail", None) or str(error))
            log.error("gave up chain=%s %s after %d attempts: %s", self.chain.name, what, attempt, last)
            raise UpstreamError(f"gave up {what} after {attempt} attempts: {last}", chain=self.chain.name,
                                url=self.scrub(url), attempt=attempt) from error
        return delay
