"""What the jobs of one chain share inside a worker: the context, events, failures turned into
events, the first anchor of the cursor, row counters."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from psycopg_pool import ConnectionPool

from transfer_daemon import metrics, store
from transfer_daemon.config import ChainConfig, Config
from transfer_daemon.errors import InvalidApiKey, UpstreamError
from transfer_daemon.ingest import planning
from transfer_daemon.ingest.activity import Activity
from transfer_daemon.model import Cursor, IngestEvent

log = logging.getLogger(__name__)


@dataclass
class IngestContext:
    """What the jobs of one chain share inside one worker process."""

    config: Config
    chain: ChainConfig
    pool: ConnectionPool
    source: Any  # transfer_daemon.upstream.UpstreamSource
    stopping: threading.Event = field(default_factory=threading.Event)
    cursor_lock: threading.Lock = field(default_factory=threading.Lock)
    clock: Callable[[], float] = time.time
    on_changed: Callable[[], None] = lambda: None  # the worker schedules a warm-up
    halted: bool = False  # a reorg deeper than the limit: stop ingesting until restart
    auth_failed: bool = False  # InvalidApiKey: stop calling until the config is reloaded
    backfill_span: int = 0
    cache: Any = None  # transfer_daemon.cache.WarmCache, opened lazily by `warm`
    activity: Activity = field(default_factory=Activity)  # the sync job's once-a-minute log line
    verify_pass: Any = None  # transfer_daemon.ingest.verify.Progress of the nightly pass under way

    @property
    def chain_id(self) -> int:
        return self.chain.id

    @property
    def may_call_upstream(self) -> bool:
        return not (self.halted or self.auth_failed or self.stopping.is_set())


def record(ctx: IngestContext, event: IngestEvent) -> None:
    with ctx.pool.connection() as conn:
        store.record_event(conn, event)


def run_guarded(ctx: IngestContext, job: str, body: Callable[[IngestContext], Any]) -> Any:
    """Run one job; turn upstream failures into events instead of a dead scheduler thread.

    InvalidApiKey is alert-level and stops further upstream calls until the worker restarts with
    a reloaded config; other upstream errors are retried by the next scheduled run.
    """
    try:
        return body(ctx)
    except InvalidApiKey as exc:
        metrics.JOB_FAILURES.labels(ctx.chain.name, job).inc()
        ctx.auth_failed = True
        log.error("alert chain=%s job=%s invalid api key, calls stopped until config reload: %s",
                  ctx.chain.name, job, exc)
        record(ctx, IngestEvent(ctx.chain_id, "alert", f"{job}: invalid API key: {exc}", detail={"job": job}))
    except UpstreamError as exc:
        metrics.JOB_FAILURES.labels(ctx.chain.name, job).inc()
        log.warning("failed chain=%s job=%s upstream error, retrying next run: %s", ctx.chain.name, job, exc)
        record(ctx, IngestEvent(ctx.chain_id, "error", f"{job}: {exc}", detail={"job": job}))
    return None


def ensure_anchor(ctx: IngestContext, head: int | None = None) -> Cursor:
    """The chain's cursor, anchored below the head on first use."""
    with ctx.pool.connection() as conn:
        cursor = store.get_cursor(conn, ctx.chain_id)
    if cursor.synced_block is not None:
        return cursor
    head = ctx.source.head_block() if head is None else head
    with ctx.cursor_lock, ctx.pool.connection() as conn:
        cursor = store.get_cursor(conn, ctx.chain_id)
        if cursor.synced_block is not None:
            return cursor
        cursor = planning.anchor_cursor(ctx.chain_id, head, ctx.chain.confirmations, ctx.chain.start_block)
        event = IngestEvent(ctx.chain_id, "ingested", f"anchored at block {cursor.synced_block}",
                            detail={"job": "anchor", "head": head})
        store.write_batch(conn, ctx.chain_id, [], cursor=cursor, event=event)
    log.info("anchored chain=%s block=%d head=%d", ctx.chain.name, cursor.synced_block, head)
    return cursor


def count_rows(ctx: IngestContext, new: int, quarantined: int) -> None:
    if new:
        metrics.ROWS_INGESTED.labels(ctx.chain.name).inc(new)
    if quarantined:
        metrics.QUARANTINED.labels(ctx.chain.name).inc(quarantined)
