"""Counters the simulator reports at `GET /_sim/stats` (thread-safe)."""

from __future__ import annotations

import hashlib
import threading
from collections import Counter


def redact_key(api_key: str) -> str:
    """How an explorer API key appears in the stats (and keys the limiter): a short digest, so a
    test can still tell keys apart without the secret ever being served or logged."""
    return "key-" + hashlib.sha256(api_key.encode()).hexdigest()[:8]


class SimStats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[str] = Counter()  # per key: redact_key(apikey) (or client IP), rpc URL path
        self.routes: Counter[str] = Counter()  # explorer | rpc
        self.rate_limited: Counter[str] = Counter()  # per key
        self.faults: Counter[str] = Counter()  # per fault type, plus "outage"

    def count(self, counter: str, key: str) -> None:
        with self._lock:
            getattr(self, counter)[key] += 1

    def snapshot(self) -> dict:
        with self._lock:
            return {
                "requests": dict(self.requests),
                "routes": dict(self.routes),
                "rateLimited": dict(self.rate_limited),
                "rateLimitedTotal": sum(self.rate_limited.values()),
                "faults": dict(self.faults),
                "faultsTotal": sum(self.faults.values()),
            }
