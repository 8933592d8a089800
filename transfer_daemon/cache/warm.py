"""Warm cache: page 1 of every chain and of the aggregate, as ready-to-send JSON fragments.

The backend (cache_backends: diskcache in data_dir/cache on one host, or Redis shared by several
hosts) holds bytes only; one client per process, opened on first use after the fork.
Freshness without a database round trip per request: a small *snapshot* entry holds each
chain's `store.data_version` and ingest times. The worker rewrites it right after every commit
that changed data (`warm`); an API process reloads it from the store when it is older than
SNAPSHOT_MAX_AGE_S. Page keys carry the versions of the chains they cover, so an answer is
never older than the snapshot, and the snapshot is never older than the last warm (or a few
seconds).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import partial

import orjson

from transfer_daemon import metrics, store
from transfer_daemon.cache.backends import CacheBackend, DiskBackend, open_backend
from transfer_daemon.config import Config

log = logging.getLogger(__name__)

SNAPSHOT_KEY = "snapshot"
SNAPSHOT_MAX_AGE_S = 2.0
UPSTREAM_TTL_S = 15.0
WARM_PAGE_SIZE = 25
#: page 1 fragments a process keeps in memory (chains x sorts x page sizes in use)
PAGE_MEMO_SIZE = 64


@dataclass(frozen=True, slots=True)
class ChainState:
    """A chain's data version and freshness (DESIGN "Contract: freshness"), as the API serves them."""

    version: int
    last_ingested_at: float | None  # unix seconds: a sync last finished up to the upstream's head
    newest_transfer_at: float | None
    complete_from: float | None = None  # unix seconds the stored history is complete from
    history_complete: bool = False  # backfill reached its target


def _unix(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.timestamp()
    return float(value)  # type: ignore[arg-type]


def load_snapshot(conn, chain_ids: Iterable[int]) -> dict[int, ChainState]:
    """Versions and freshness of `chain_ids`, read from the store (a query, then one per chain)."""
    ids = tuple(chain_ids)
    fresh = store.freshness(conn, ids)
    snapshot = {}
    for chain_id in ids:
        f = fresh.get(chain_id)
        snapshot[chain_id] = ChainState(
            version=store.data_version(conn, chain_id),
            last_ingested_at=_unix(getattr(f, "last_ingested_at", None)),
            newest_transfer_at=_unix(getattr(f, "newest_transfer_at", None)),
            complete_from=_unix(getattr(f, "complete_from", None)),
            history_complete=bool(getattr(f, "history_complete", False)),
        )
    return snapshot


def page_key(chain_ids: Iterable[int], page_size: int, sort: str, snapshot: dict[int, ChainState]) -> str:
    versions = ",".join(f"{c}@{snapshot[c].version if c in snapshot else 0}" for c in sorted(chain_ids))
    return f"page1:{sort}:{page_size}:{versions}"


def page_fragment(items: list[dict], next_cursor: str | None) -> bytes:
    """`"items":[…],"nextCursor":…` — spliced into each response's envelope as is."""
    return orjson.dumps({"items": items, "nextCursor": next_cursor})[1:-1]


class WarmCache:
    """The warm cache of one process; safe to construct before a fork, its backend opened after it."""

    def __init__(self, opener: Callable[[], CacheBackend], ttl_s: float) -> None:
        self.opener = opener
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._pid = 0
        self._backend: CacheBackend | None = None
        self._pages: dict[str, tuple[float, bytes]] = {}  # page key -> (expires at, fragment)
        self._snapshot: tuple[bytes, dict[int, ChainState]] | None = None  # last read: (raw, decoded)

    @classmethod
    def for_config(cls, config: Config) -> WarmCache:
        return cls(partial(open_backend, config.cache, config.daemon.data_dir), config.cache.ttl_s)

    @classmethod
    def on_disk(cls, directory: str | os.PathLike, ttl_s: float) -> WarmCache:
        return cls(partial(DiskBackend, directory), ttl_s)

    @property
    def backend(self) -> CacheBackend:
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    self._backend = self.opener()
                    self._pid = os.getpid()
        return self._backend  # type: ignore[return-value]

    def close(self) -> None:
        if self._backend is not None and self._pid == os.getpid():
            self._backend.close()
        self._backend, self._pid = None, 0

    def snapshot(self) -> dict[int, ChainState] | None:
        raw = self.backend.get(SNAPSHOT_KEY)
        if raw is None:
            return None
        last = self._snapshot
        if last is None or last[0] != raw:
            # every request reads the snapshot; it changes only when a worker or a reload rewrites it
            last = self._snapshot = (raw, decode_snapshot(raw))
        return last[1]

    def put_snapshot(self, snapshot: dict[int, ChainState]) -> None:
        self.backend.set(SNAPSHOT_KEY, encode_snapshot(snapshot), SNAPSHOT_MAX_AGE_S)

    def get(self, key: str) -> bytes | None:
        """A page (or upstream answer); counted as a hit or a miss."""
        value = self.backend.get(key)
        metrics.CACHE_REQUESTS.labels("miss" if value is None else "hit").inc()
        return value

    def page(self, key: str) -> bytes | None:
        """A page 1 fragment by `page_key`, counted like get().

        A page key names the data versions it covers, so its fragment never changes: each process
        keeps the ones it served in memory (until the TTL) and skips the backend read for them.
        """
        memo = self._pages.get(key)
        if memo is not None and memo[0] > time.monotonic():
            metrics.CACHE_REQUESTS.labels("hit").inc()
            return memo[1]
        value = self.get(key)
        if value is not None:
            self._remember(key, value)
        return value

    def put_page(self, key: str, value: bytes) -> None:
        self.put(key, value)
        self._remember(key, value)

    def _remember(self, key: str, value: bytes) -> None:
        if len(self._pages) >= PAGE_MEMO_SIZE:
            self._pages.clear()  # superseded versions pile up here; starting over costs a read each
        self._pages[key] = (time.monotonic() + self.ttl_s, value)

    def peek(self, key: str) -> bytes | None:
        """A marker lookup that is not a page: not counted in the hit ratio."""
        return self.backend.get(key)

    def put(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        self.backend.set(key, value, self.ttl_s if ttl_s is None else ttl_s)


def encode_snapshot(snapshot: dict[int, ChainState]) -> bytes:
    return orjson.dumps({str(chain_id): list(dataclasses.astuple(state)) for chain_id, state in snapshot.items()})


def decode_snapshot(raw: bytes) -> dict[int, ChainState]:
    return {int(chain_id): ChainState(*fields) for chain_id, fields in orjson.loads(raw).items()}


def compute_page(conn, chain_ids: tuple[int, ...], page_size: int, sort: str) -> bytes:
    items, next_cursor = store.query_items(conn, store.TransferQuery(chain_ids=chain_ids, page_size=page_size,
                                                                    sort=sort))
    return page_fragment(items, next_cursor)


def warm(config: Config, conn, cache: WarmCache | None = None) -> int:
    """Refresh the snapshot, then precompute page 1 of every chain and of the aggregate.

    The ingest worker calls it after a sync that changed data, and hourly. Returns pages written.
    """
    cache = cache or WarmCache.for_config(config)
    started = time.monotonic()
    ids = tuple(chain.id for chain in config.chains)
    snapshot = load_snapshot(conn, ids)
    cache.put_snapshot(snapshot)
    targets = [(chain_id,) for chain_id in ids] + ([ids] if len(ids) > 1 else [])
    for chain_ids in targets:
        key = page_key(chain_ids, WARM_PAGE_SIZE, "desc", snapshot)
        cache.put(key, compute_page(conn, chain_ids, WARM_PAGE_SIZE, "desc"))
    log.debug("warmed %d pages for chains %s in %.3f s", len(targets), ",".join(map(str, ids)),
              time.monotonic() - started)
    return len(targets)


def hit_ratio() -> tuple[int, int, float | None]:
    """(hits, misses, ratio) over every process since the metrics directory was wiped."""
    totals = metrics.counter_totals("transfers_cache_requests", "result")
    hits, misses = int(totals.get("hit", 0)), int(totals.get("miss", 0))
    return hits, misses, (hits / (hits + misses) if hits + misses else None)
