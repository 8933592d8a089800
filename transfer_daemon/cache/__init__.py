"""The warm cache shared by the workers and the API: page 1 of every chain and of the aggregate,
and the chains' freshness snapshot, over one of two backends (diskcache on one machine, Redis when
several machines share it)."""

from transfer_daemon.cache.warm import (
    SNAPSHOT_MAX_AGE_S,
    UPSTREAM_TTL_S,
    WARM_PAGE_SIZE,
    ChainState,
    WarmCache,
    compute_page,
    decode_snapshot,
    encode_snapshot,
    hit_ratio,
    load_snapshot,
    page_fragment,
    page_key,
    warm,
)

__all__ = [
    "SNAPSHOT_MAX_AGE_S", "UPSTREAM_TTL_S", "WARM_PAGE_SIZE", "ChainState", "WarmCache", "compute_page",
    "decode_snapshot", "encode_snapshot", "hit_ratio", "load_snapshot", "page_fragment", "page_key", "warm",
]
