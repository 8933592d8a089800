"""Counters the simulator reports at `GET /_sim/stats` (thread-safe)."""

from __future__ import annotations

import hashlib
import threading
from collections import Counter

from transfer_daemon.simulate.quirks import Served


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
        self.daily_capped: Counter[str] = Counter()  # per key: daily-limit answers
        # per chain id, what the quirks did (simulate/quirks.py)
        self.withheld: Counter[str] = Counter()
        self.null_headers: Counter[str] = Counter()
        self.poison_rows: Counter[str] = Counter()
        self.nul_rows: Counter[str] = Counter()

    def count(self, counter: str, key: str) -> None:
        with self._lock:
            getattr(self, counter)[key] += 1

    def add_served(self, chain_id: int, served: Served) -> None:
        with self._lock:
            for name in ("withheld", "null_headers", "poison_rows", "nul_rows"):
                if getattr(served, name):
                    getattr(self, name)[str(chain_id)] += getattr(served, name)

    def snapshot(self) -> dict:
        with self._lock:
            return {
                "requests": dict(self.requests),
                "routes": dict(self.routes),
                "rateLimited": dict(self.rate_limited),
                "rateLimitedTotal": sum(self.rate_limited.values()),
                "faults": dict(self.faults),
                "faultsTotal": sum(self.faults.values()),
                "dailyCapAnswers": dict(self.daily_capped),
                "dailyCapAnswersTotal": sum(self.daily_capped.values()),
                "indexLagWithheldRows": dict(self.withheld),
                "nullHeaders": dict(self.null_headers),
                "poisonRowsServed": dict(self.poison_rows),
                "nulNameRowsServed": dict(self.nul_rows),
            }
