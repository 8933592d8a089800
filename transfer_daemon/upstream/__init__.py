"""Upstream sources: explorer APIs (`etherscan`, `etherscan_logs`) and JSON-RPC (`rpc_logs`).

Every call goes through the shared per-key limiter (`limiter.py`; `redis_limiter.py` when hosts
share the Redis cache) and the retrying HTTP layer (`http.py`); answers are read by `classify.py`
and rows turned into `Transfer`s by `normalize.py`. The clients know nothing of the store.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from transfer_daemon.config import CacheConfig, ChainConfig
from transfer_daemon.model import Quarantined, Transfer

if TYPE_CHECKING:
    from transfer_daemon.upstream.http import RetryPolicy
    from transfer_daemon.upstream.limiter import BoundedWaits

#: where this process's sources keep their buckets besides the limiter dir (see share_limiters)
_shared_buckets: dict[str, CacheConfig | None] = {"cache": None}


@dataclass(slots=True)
class FetchResult:
    """Transfers of [from_block, covered_to], ascending; every block in that range is complete."""

    transfers: list[Transfer]
    quarantined: list[Quarantined]
    skipped: int
    covered_to: int
    calls: int = 0  # upstream HTTP requests made (retries excluded)
    skipped_reasons: dict[str, int] = field(default_factory=dict)


class UpstreamSource(Protocol):
    chain: ChainConfig

    def head_block(self) -> int: ...

    def fetch_blocks(self, from_block: int, to_block: int, *, max_calls: int | None = None) -> FetchResult:
        """Ascending, whole blocks only; stops early when `max_calls` is spent."""

    def block_hashes(self, blocks: Sequence[int]) -> dict[int, bytes]:
        """Current canonical hashes (never cached) — for reorg checks."""


def share_limiters(cache: CacheConfig) -> None:
    """Set once per process by those that know the config (the supervisor's children, the API app):
    with the Redis cache backend, every source made afterwards keeps its key's bucket in that Redis,
    so hosts that share a key share its rate; otherwise the bucket stays in the host's limiter dir."""
    _shared_buckets["cache"] = cache if cache.backend == "redis" else None


def make_limiter(chain: ChainConfig, limiter_dir: str) -> BoundedWaits:
    """The bucket of the chain's key: in Redis when share_limiters chose it, else in `limiter_dir`."""
    from transfer_daemon.upstream.limiter import Limiter

    local = Limiter(limiter_dir, chain.limiter_key, chain.rate_limit_per_sec, chain.rate_limit_burst)
    cache = _shared_buckets["cache"]
    if cache is None:
        return local
    from transfer_daemon.upstream.redis_limiter import RedisLimiter

    return RedisLimiter(cache.url, cache.prefix, chain.limiter_key, chain.rate_limit_per_sec, chain.rate_limit_burst,
                        fallback=local)


def make_source(chain: ChainConfig, *, limiter_dir: str, environ: Mapping[str, str] = os.environ,
                retry: RetryPolicy | None = None, on_attempt: Callable[[], None] | None = None) -> UpstreamSource:
    """The client for `chain.kind`, with its limiter (make_limiter) and retries.

    `retry`: attempts / total time / backoff of every call (default `RetryPolicy()`: 8 attempts,
    300 s, 1 → 60 s with 20 % jitter); tests against the simulator may pass a quicker one.
    `on_attempt` is called after every attempt, answered or not (the worker's liveness).
    """
    from transfer_daemon.upstream.http import HttpClient, RetryPolicy

    limiter = make_limiter(chain, limiter_dir)
    http = HttpClient(chain, limiter, environ=environ, policy=retry or RetryPolicy(), on_attempt=on_attempt)
    if chain.kind == "rpc_logs":
        from transfer_daemon.upstream.rpc import RpcSource

        return RpcSource(chain, http)
    from transfer_daemon.upstream.etherscan import ExplorerSource

    return ExplorerSource(chain, http)
