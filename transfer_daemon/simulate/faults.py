"""Enforced rate limits and injected faults, switchable at run time.

The per-second limiter is a strict sliding one-second window (what "Max calls per sec" means); refused
calls do not count against the window, so a client that backs off recovers. The daily cap counts
per UTC day of the simulator's clock, and does count refused calls, as Etherscan's answer shows.
"""

from __future__ import annotations

import json
import random
import threading
from collections import Counter, deque
from dataclasses import dataclass
from datetime import UTC, datetime

from transfer_daemon.simulate.settings import FAULT_TYPES, SimConfig

HTML_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>Maintenance</title></head><body><h1>We'll be back shortly</h1>"
    b"<p>The explorer is undergoing maintenance.</p></body></html>\n"
)
_5XX = {
    500: b"<html><head><title>500 Internal Server Error</title></head><body><center><h1>500 Internal Server "
         b"Error</h1></center><hr><center>nginx</center></body></html>\n",
    502: b"<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center>"
         b"<hr><center>cloudflare</center></body></html>\n",
    503: b"<html><head><title>503 Service Temporarily Unavailable</title></head><body><center><h1>503 Service "
         b"Temporarily Unavailable</h1></center></body></html>\n",
    504: b"<html><head><title>504 Gateway Time-out</title></head><body><center><h1>504 Gateway Time-out</h1>"
         b"</center></body></html>\n",
}


@dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP answer the server sends as is (after sleeping `delay_s`)."""

    status: int
    body: bytes
    content_type: str = "application/json"
    delay_s: float = 0.0
    retry_after: int | None = None


class SlidingWindowLimiter:
    """At most `rate` calls per key in any one-second window; `rate <= 0` disables it."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._calls: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: str, now: float) -> bool:
        if self.rate <= 0:
            return True
        with self._lock:
            window = self._calls.setdefault(key, deque())
            while window and window[0] <= now - 1.0:
                window.popleft()
            if len(window) >= self.rate:
                return False
            window.append(now)
            return True


class DailyCap:
    """At most `limit` answered calls per key per UTC day; `limit <= 0` disables it (and counts nothing).

    A call over the cap still counts: Etherscan reports it ("110000 (100%) of 100000 day/limit").
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._day: int | None = None
        self._calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    def charge(self, key: str, now: float) -> int | None:
        """Count one call by `key` at `now` (unix seconds); the day's count if it is over the cap, else None."""
        if self.limit <= 0:
            return None
        with self._lock:
            day = int(now // 86_400)
            if day != self._day:
                self._day, self._calls = day, Counter()
            self._calls[key] += 1
            calls = self._calls[key]
        return calls if calls > self.limit else None

    def set(self, *, limit: int | None = None, reset: bool = False) -> None:
        with self._lock:
            if limit is not None:
                self.limit = limit
            if reset:
                self._calls.clear()

    def state(self) -> dict:
        with self._lock:
            day = None if self._day is None else datetime.fromtimestamp(self._day * 86_400, UTC).date().isoformat()
            return {"limit": self.limit, "day": day, "calls": dict(self._calls)}


class FaultInjector:
    """Draws a fault for a fraction `rate` of upstream calls; `outage` fails every call."""

    def __init__(self, config: SimConfig) -> None:
        self.rate = config.fault_rate
        self.types: tuple[str, ...] = config.fault_types
        self.timeout_s = config.fault_timeout_s
        self.outage: str | None = None  # None | "503" | "timeout"
        self._rng = random.Random(config.seed)
        self._lock = threading.Lock()

    def draw(self) -> tuple[str | None, int]:
        """(fault type or None, a number that varies the fault's details)."""
        with self._lock:
            if self.rate <= 0 or not self.types or self._rng.random() >= self.rate:
                return None, 0
            return self.types[self._rng.randrange(len(self.types))], self._rng.randrange(1 << 16)

    def set(self, *, rate: float | None = None, types: list[str] | None = None, outage: object = None) -> None:
        """Apply a control request; raises ValueError on a bad value (nothing is changed then)."""
        if rate is not None and not (isinstance(rate, int | float) and 0 <= rate <= 1):
            raise ValueError("fault_rate must be a number in [0, 1]")
        if types is not None and (not isinstance(types, list) or set(types) - set(FAULT_TYPES)):
            raise ValueError(f"fault_types must be a list of {list(FAULT_TYPES)}")
        if outage not in (None, True, False, "503", "timeout"):
            raise ValueError('outage must be true, false, "503" or "timeout"')
        with self._lock:
            if rate is not None:
                self.rate = float(rate)
            if types is not None:
                self.types = tuple(types)
            if outage is not None:
                self.outage = {True: "503", False: None}.get(outage, outage)

    def state(self) -> dict:
        return {"fault_rate": self.rate, "fault_types": list(self.types), "outage": self.outage or False,
                "fault_timeout_s": self.timeout_s}


def outage_reply(mode: str, timeout_s: float) -> Reply:
    return Reply(503, _5XX[503], "text/html", delay_s=timeout_s if mode == "timeout" else 0.0)


def fault_reply(fault: str, normal: bytes, rate_limit_body: bytes, timeout_s: float, pick: int) -> Reply:
    """The answer for one injected fault. `normal` is the real answer (timeouts send it late, truncated
    bodies cut it); `pick` varies the 5xx status deterministically."""
    if fault == "http_429":
        return Reply(429, b"Too Many Requests\n", "text/plain", retry_after=1)
    if fault == "http_5xx":
        status = sorted(_5XX)[pick % len(_5XX)]
        return Reply(status, _5XX[status], "text/html")
    if fault == "timeout":
        return Reply(200, normal, delay_s=timeout_s)
    if fault == "malformed":
        return Reply(200, normal[: max(1, len(normal) // 2)])
    if fault == "html":
        return Reply(200, HTML_PAGE, "text/html")
    return Reply(200, rate_limit_body)


def json_bytes(body: object) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()
