"""The backfill job: backward from the oldest stored block to `start_block` or `backfill_days`
ago, window by window, each window whole and committed with its cursor; resumable after any crash."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from transfer_daemon import store
from transfer_daemon.config import ChainConfig
from transfer_daemon.errors import UpstreamError
from transfer_daemon.ingest import planning
from transfer_daemon.ingest.context import IngestContext, count_rows, ensure_anchor
from transfer_daemon.model import Cursor, IngestEvent, Transfer

log = logging.getLogger(__name__)

#: Full pages per contract a backfill window aims at: each window ends in one partial page per
#: contract part, so longer windows waste less of the rate limit; memory bounds them
#: (~60 MB at 3 contracts × 1000 rows).
BACKFILL_PAGES_PER_WINDOW = 40
#: Parts of a backfill window fetched at once: one request in flight at a time cannot reach the
#: rate limit when a request takes longer than 1/rate; the shared limiter still paces them all.
BACKFILL_FETCHERS = 2


def backfill(ctx: IngestContext, budget_s: float | None = None,
             progress: Callable[[Cursor], None] | None = None) -> bool:
    """Walk backward window by window from the oldest stored block to the target, until done,
    `budget_s` is spent or a stop is requested. Resumes from the cursor after any crash.
    Returns True when the backfill is complete.

    One committer thread writes window N while window N+1 is fetched, so the database time hides
    behind the rate limiter's pauses; windows still commit strictly in order, one at a time.
    """
    if not ctx.may_call_upstream:
        return False
    cursor = _reopen_if_extended(ctx, ensure_anchor(ctx))
    deadline = None if budget_s is None else ctx.clock() + budget_s
    pending: Future | None = None
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"commit-{ctx.chain.name}") as committer, \
            ThreadPoolExecutor(max_workers=BACKFILL_FETCHERS, thread_name_prefix=f"fetch-{ctx.chain.name}") as fetchers:
        pipeline = _Pipeline(committer, fetchers)
        try:
            while not cursor.backfill_done:
                if not ctx.may_call_upstream or (deadline is not None and ctx.clock() >= deadline):
                    break
                cursor, pending = _backfill_one_window(ctx, cursor, pipeline, pending, progress)
        finally:
            if pending is not None:
                _committed(pending, progress)
    return cursor.backfill_done


@dataclass(frozen=True)
class _Pipeline:
    committer: ThreadPoolExecutor  # one thread: windows commit in order
    fetchers: ThreadPoolExecutor  # the parts of one window


def _committed(pending: Future, progress: Callable[[Cursor], None] | None) -> Cursor:
    cursor = pending.result()
    if progress is not None:
        progress(cursor)
    return cursor


def _cutoff(ctx: IngestContext) -> float:
    """Rows older than this end a days-based backfill; a start_block backfill ignores time."""
    if ctx.chain.start_block is not None:
        return float("-inf")
    return ctx.clock() - ctx.chain.backfill_days * planning.SECONDS_PER_DAY


def _target(ctx: IngestContext, oldest: tuple[int, int] | None, head: int) -> int:
    with ctx.pool.connection() as conn:
        stats = store.chain_stats(conn, ctx.chain_id)
    newest = None
    if stats.newest_block is not None and stats.newest_time is not None:
        newest = (stats.newest_block, int(stats.newest_time))
    if oldest is None and stats.oldest_block is not None and stats.oldest_time is not None:
        oldest = (stats.oldest_block, int(stats.oldest_time))
    return planning.backfill_target(ctx.chain.start_block, ctx.chain.backfill_days, ctx.clock(),
                                    newest, oldest, head)


def _reopen_if_extended(ctx: IngestContext, cursor: Cursor) -> Cursor:
    """A finished backfill resumes when the configuration now asks for older history."""
    if not cursor.backfill_done or cursor.backfilled_block is None:
        return cursor
    target = _target(ctx, None, cursor.synced_block or 0)
    if target >= cursor.backfilled_block:
        return cursor
    with ctx.pool.connection() as conn:
        stats = store.chain_stats(conn, ctx.chain_id)
    if stats.oldest_time is not None and int(stats.oldest_time) < _cutoff(ctx):
        return cursor
    with ctx.cursor_lock, ctx.pool.connection() as conn:
        cursor = replace(store.get_cursor(conn, ctx.chain_id), backfill_target_block=target, backfill_done=False)
        event = IngestEvent(ctx.chain_id, "ingested", f"backfill extended to block {target}",
                            detail={"job": "backfill", "target_block": target})
        store.write_batch(conn, ctx.chain_id, [], cursor=cursor, event=event)
    log.info("extended chain=%s job=backfill target=%d", ctx.chain.name, target)
    return cursor


def span_limits(chain: ChainConfig) -> tuple[int, int, int]:
    """(first, smallest, largest) window in blocks, for backfill and verify: JSON-RPC reads whole log
    windows; explorers page through any range, so a window starts at about a page of rows where a
    block holds one."""
    if chain.kind == "rpc_logs":
        return chain.log_window_blocks, chain.log_window_blocks, chain.log_window_blocks * 50
    return max(1, chain.page_size), 1, 1_000_000


def _fetch_whole(ctx: IngestContext, window: planning.Window, fetchers: ThreadPoolExecutor) -> Any:
    """All of [lo, hi], its parts fetched at once; None when a stop request abandons it (nothing
    was committed, the cursor has not moved)."""
    parts = list(fetchers.map(lambda part: read_whole(ctx, part), planning.split_window(window, BACKFILL_FETCHERS)))
    if any(part is None for part in parts):
        return None
    return [t for part in parts for t in part[0]], [q for part in parts for q in part[1]]


def read_whole(ctx: IngestContext, window: planning.Window) -> tuple[list[Transfer], list] | None:
    """(transfers, quarantined rows) of [lo, hi] whole, read on from covered_to + 1 until covered;
    None when a stop request abandons it."""
    transfers: list[Transfer] = []
    quarantined: list = []
    lo = window.lo
    while lo <= window.hi:
        if ctx.stopping.is_set():
            return None
        # no call budget: a budget split between contracts ends each at a different block and
        # the rows past the lowest are read again; the window size bounds the work instead
        result = ctx.source.fetch_blocks(lo, window.hi)
        if result.covered_to < lo:
            raise UpstreamError(f"no progress at block {lo}", chain=ctx.chain.name)
        transfers.extend(result.transfers)
        quarantined.extend(result.quarantined)
        lo = result.covered_to + 1
    return transfers, quarantined


def _backfill_one_window(ctx: IngestContext, cursor: Cursor, pipeline: _Pipeline,
                         pending: Future | None, progress: Callable[[Cursor], None] | None
                         ) -> tuple[Cursor, Future | None]:
    """Fetch the next window whole, wait for the previous commit, hand this one to the committer.
    Returns the cursor as it will be once this window commits, and the pending commit."""
    ctx.backfill_span = ctx.backfill_span or span_limits(ctx.chain)[0]
    window = planning.backfill_window(cursor, ctx.backfill_span)
    fetched = _fetch_whole(ctx, window, pipeline.fetchers) if window is not None else ([], [])
    if pending is not None:
        _committed(pending, progress)  # in order, and chain_stats below sees its rows
    if fetched is None:
        return cursor, None
    transfers, quarantined = fetched
    if window is None:  # the target moved above what is stored: nothing left to fetch
        target = cursor.backfill_target_block or 0
        return replace(cursor, backfill_done=True), pipeline.committer.submit(
            _commit_backfill, ctx, None, [], [], target, True)
    oldest = min(((t.block_number, t.time_stamp) for t in transfers), default=None)
    target = _target(ctx, oldest, cursor.synced_block or window.hi)
    done = planning.backfill_reached(window.lo, target, oldest[1] if oldest else None, _cutoff(ctx))
    rows_goal = ctx.chain.page_size * len(ctx.chain.contracts) * BACKFILL_PAGES_PER_WINDOW
    ctx.backfill_span = planning.next_span(ctx.backfill_span, len(transfers), rows_goal, *span_limits(ctx.chain)[1:])
    future = pipeline.committer.submit(_commit_backfill, ctx, window, transfers, quarantined, target, done)
    return planning.backfilled_cursor(cursor, window, target, done), future


def _commit_backfill(ctx: IngestContext, window: planning.Window | None, transfers: list[Transfer],
                     quarantined: list, target: int, done: bool) -> Cursor:
    with ctx.cursor_lock, ctx.pool.connection() as conn:
        current = store.get_cursor(conn, ctx.chain_id)
        lo = window.lo if window is not None else current.backfilled_block
        cursor = planning.backfilled_cursor(current, planning.Window(lo, lo), target, done)
        share = planning.backfill_share(cursor)
        detail = {"job": "backfill", "oldest_block": lo, "target_block": target, "share": round(share, 4),
                  "to_block": window.hi if window is not None else None, "quarantined": len(quarantined)}
        event = IngestEvent(ctx.chain_id, "ingested", f"backfill reached block {lo} ({share:.1%})",
                            rows=len(transfers), detail=detail)
        new = store.write_batch(conn, ctx.chain_id, transfers, cursor=cursor, event=event, quarantined=quarantined)
    count_rows(ctx, new, len(quarantined))
    log.info("ingested chain=%s job=backfill oldest_block=%s target=%d rows=%d new=%d share=%.3f done=%s",
             ctx.chain.name, lo, target, len(transfers), new, share, done)
    return cursor
