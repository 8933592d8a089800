"""Upkeep jobs: warm the shared cache, retention, the nightly verify."""

from __future__ import annotations

import logging

from transfer_daemon import cache, store
from transfer_daemon.ingest.context import IngestContext, record, ticking
from transfer_daemon.ingest.verify import REPAIR_MISSING, Progress, plan_window, record_drift, record_verified, walk
from transfer_daemon.model import IngestEvent

log = logging.getLogger(__name__)

#: Hours of settled history the nightly verify pass compares.
VERIFY_HOURS = 24
#: A pass still unfinished this long after it started gives way to a fresh one (its day moved on).
STALE_PASS_S = 12 * 3600


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


def verify(ctx: IngestContext, budget_s: float | None = None) -> bool:
    """Advance the nightly verify pass over the last settled day by at most `budget_s` seconds
    (one chunk at least): compare with a fresh upstream read, re-ingest the blocks where the
    upstream has rows the store lacks, record a `drift` event when the store differed.

    The pass lives in `ctx.verify_pass` between runs (the worker resumes it shortly after a run
    that ran out of budget). Returns True when no pass remains: done, or nothing to verify.
    """
    if not ctx.may_call_upstream:
        return True
    now = ctx.clock()
    progress = ctx.verify_pass
    if progress is None or now - progress.started_at > STALE_PASS_S:
        window = plan_window(ctx, VERIFY_HOURS, now)
        progress = ctx.verify_pass = None if window is None else Progress.start(ctx.chain, window, now)
        if progress is None:
            return True
    tally = walk(ctx, progress, REPAIR_MISSING, None if budget_s is None else now + budget_s)
    if tally.to_block >= tally.from_block:
        record_drift(ctx, tally, "nightly")
        progress.differed |= tally.differs
    if progress.done:
        ctx.verify_pass = None
        if not progress.differed:
            record_verified(ctx, progress.window, "nightly")
    return progress.done
