"""Upkeep jobs: warm the shared cache, retention, the nightly verify."""

from __future__ import annotations

import logging

from transfer_daemon import cache, store
from transfer_daemon.ingest import planning
from transfer_daemon.ingest.context import IngestContext, record, ticking
from transfer_daemon.model import IngestEvent

log = logging.getLogger(__name__)

#: Blocks recounted by one verify run.
VERIFY_BLOCKS = 2000


def warm(ctx: IngestContext) -> int:
    """Precompute page 1 of the chain and of the aggregate into the shared cache."""
    if ctx.cache is None:
        ctx.cache = cache.WarmCache.for_config(ctx.config)
    with ctx.pool.connection() as conn:
        pages = cache.warm(ctx.config, conn, ctx.cache)
    log.debug("warmed chain=%s pages=%d", ctx.chain.name, pages)
    return pages


def retention(ctx: IngestContext) -> list[str]:
    """Create next month's partitions and drop those older than retention_days."""
    days = ctx.config.ingest.retention_days
    # a month's REINDEX may outlast the heartbeat limit: its statement_timeout bounds it instead
    with ctx.pool.connection() as conn, ticking(ctx):
        dropped = store.apply_retention(conn, days, ctx.clock())
    record(ctx, IngestEvent(ctx.chain_id, "retention", f"dropped {len(dropped)} partitions older than {days} days",
                             detail={"dropped": list(dropped)}))
    log.info("retention chain=%s days=%d dropped=%s", ctx.chain.name, days, ",".join(dropped) or "-")
    return list(dropped)


def verify(ctx: IngestContext) -> dict | None:
    """Recount a settled window upstream and compare with the store; record the drift."""
    if not ctx.may_call_upstream:
        return None
    with ctx.pool.connection() as conn:
        cursor = store.get_cursor(conn, ctx.chain_id)
        oldest = store.chain_stats(conn, ctx.chain_id).oldest_block  # what retention left
    window = planning.verify_window(cursor, ctx.chain.confirmations, VERIFY_BLOCKS, ctx.clock(), oldest)
    if window is None:
        return None
    result = ctx.source.fetch_blocks(window.lo, window.hi, max_calls=ctx.chain.max_pages_per_cycle)
    if result.covered_to < window.lo:
        return None
    upstream = {planning.transfer_key(t) for t in result.transfers}
    with ctx.pool.connection() as conn:
        stored = store.known_transfer_keys(conn, ctx.chain_id, window.lo, result.covered_to)
    detail = {"from_block": window.lo, "to_block": result.covered_to, "upstream": len(upstream),
              "stored": len(stored), "missing": len(upstream - stored), "extra": len(stored - upstream)}
    drift = detail["missing"] + detail["extra"]
    record(ctx, IngestEvent(ctx.chain_id, "drift", f"verify blocks {window.lo}..{result.covered_to}: drift {drift}",
                             rows=drift, detail=detail))
    level = logging.WARNING if drift else logging.INFO
    log.log(level, "verified chain=%s blocks=%d..%d upstream=%d stored=%d missing=%d extra=%d", ctx.chain.name,
            window.lo, result.covered_to, detail["upstream"], detail["stored"], detail["missing"], detail["extra"])
    return detail
