"""The worker's jobs — sync, backfill, warm, retention, verify — each a function of a context.

Decisions come from `planning` (pure); I/O stays here at the edges: one upstream source, one
connection pool. Every commit of rows goes through the store together with the cursor that
covers them and the event that reports them, in one transaction, so a kill at any instant
loses and duplicates nothing.

Cursor fields are owned per job (sync: `synced_block`; backfill: the `backfill_*` fields). Jobs
may run at once in one worker, so each re-reads the cursor under `cursor_lock` just before it
commits and replaces only its own fields.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from psycopg_pool import ConnectionPool

from transfer_daemon import store
from transfer_daemon.config import ChainConfig, Config
from transfer_daemon.errors import InvalidApiKey, UpstreamError
from transfer_daemon.ingest import planning
from transfer_daemon.model import Cursor, IngestEvent, Transfer

log = logging.getLogger(__name__)

#: Blocks recounted by one verify run.
VERIFY_BLOCKS = 2000
#: Full pages per contract a backfill window aims at: each window ends in one partial page per
#: contract part, so longer windows waste less of the rate limit; memory bounds them
#: (~60 MB at 3 contracts × 1000 rows).
BACKFILL_PAGES_PER_WINDOW = 40
#: Parts of a backfill window fetched at once: one request in flight at a time cannot reach the
#: rate limit when a request takes longer than 1/rate; the shared limiter still paces them all.
BACKFILL_FETCHERS = 2


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

    @property
    def chain_id(self) -> int:
        return self.chain.id

    @property
    def may_call_upstream(self) -> bool:
        return not (self.halted or self.auth_failed or self.stopping.is_set())


def _metric(name: str, chain: str, amount: float = 1, gauge: bool = False) -> None:
    """Count into transfer_daemon.metrics when that module is present in this build."""
    try:
        from transfer_daemon import metrics
    except ImportError:
        return
    metric = getattr(metrics, name, None)
    if metric is None:
        return
    child = metric.labels(chain=chain)
    child.set(amount) if gauge else child.inc(amount)


def _record(ctx: IngestContext, event: IngestEvent) -> None:
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
        ctx.auth_failed = True
        log.error("alert chain=%s job=%s invalid api key, calls stopped until config reload: %s",
                  ctx.chain.name, job, exc)
        _record(ctx, IngestEvent(ctx.chain_id, "alert", f"{job}: invalid API key: {exc}", detail={"job": job}))
    except UpstreamError as exc:
        log.warning("failed chain=%s job=%s upstream error, retrying next run: %s", ctx.chain.name, job, exc)
        _record(ctx, IngestEvent(ctx.chain_id, "error", f"{job}: {exc}", detail={"job": job}))
    return None


# --- anchoring ----------------------------------------------------------------------------


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


# --- sync ---------------------------------------------------------------------------------


def sync(ctx: IngestContext) -> int:
    """One sync cycle: repair a reorg if the last blocks changed, else fetch from the cursor
    toward the head within `max_pages_per_cycle` calls. Returns rows newly stored."""
    if not ctx.may_call_upstream:
        return 0
    head = ctx.source.head_block()
    cursor = ensure_anchor(ctx, head)
    window = planning.sync_window(cursor, head, _sync_span(ctx.chain))
    # The next head's hash is read first, then the current head's for the reorg check, then the
    # rows: a reorg after the first read leaves a stale next-head hash that the next cycle
    # catches; one before it changes the current head too and is caught now. Never stale rows
    # under a fresh hash.
    wanted = list(dict.fromkeys(b for b in (window.hi if window else None, cursor.synced_block) if b is not None))
    upstream = ctx.source.block_hashes(wanted)
    plan = _check_reorg(ctx, cursor, upstream)
    if plan is not None:
        return _repair(ctx, cursor, plan, head)
    if window is None:
        _metric("INGEST_LAG", ctx.chain.name, 0, gauge=True)
        return 0
    result = ctx.source.fetch_blocks(window.lo, window.hi, max_calls=ctx.chain.max_pages_per_cycle)
    if result.covered_to < window.lo:
        return 0
    with ctx.pool.connection() as conn:
        known = store.known_transfer_keys(conn, ctx.chain_id, window.lo, result.covered_to)
    first_known = planning.stop_at_known(result.transfers, known)
    new = _commit_sync(ctx, result, window.lo, first_known, _head_hash(ctx, result.covered_to, window.hi, upstream))
    _metric("INGEST_LAG", ctx.chain.name, _lag_seconds(ctx, result.transfers), gauge=True)
    if new:
        ctx.on_changed()
    return new


def _head_hash(ctx: IngestContext, covered_to: int, planned: int, read_before: dict[int, bytes]) -> bytes | None:
    """The hash the cursor's new head carries. When the fetch stopped short of the planned block
    (call budget spent) the hash can only be read afterwards: a reorg inside that fetch is then
    caught only if it also changed a block with stored rows in the check range."""
    if covered_to == planned:
        return read_before.get(planned)
    return ctx.source.block_hashes([covered_to]).get(covered_to)


def _sync_span(chain: ChainConfig) -> int | None:
    # Explorers page through any block range within max_calls; JSON-RPC is windowed by blocks.
    return chain.max_pages_per_cycle * chain.log_window_blocks if chain.kind == "rpc_logs" else None


def _lag_seconds(ctx: IngestContext, transfers: list[Transfer]) -> float:
    return max(0.0, ctx.clock() - transfers[-1].time_stamp) if transfers else 0.0


def _commit_sync(ctx: IngestContext, result: Any, lo: int, first_known: int, head_hash: bytes | None) -> int:
    quarantined = len(result.quarantined)
    detail = {"job": "sync", "from_block": lo, "to_block": result.covered_to, "quarantined": quarantined,
              "skipped": result.skipped, "already_stored": len(result.transfers) - first_known}
    with ctx.cursor_lock, ctx.pool.connection() as conn:
        cursor = replace(store.get_cursor(conn, ctx.chain_id), synced_block=result.covered_to,
                         synced_hash=head_hash)
        event = IngestEvent(ctx.chain_id, "ingested", f"sync blocks {lo}..{result.covered_to}",
                            rows=len(result.transfers), detail=detail)
        new = store.write_batch(conn, ctx.chain_id, result.transfers, cursor=cursor, event=event,
                                quarantined=result.quarantined)
    _count(ctx, new, quarantined)
    log.info("ingested chain=%s job=sync blocks=%d..%d rows=%d new=%d quarantined=%d",
             ctx.chain.name, lo, result.covered_to, len(result.transfers), new, quarantined)
    return new


def _count(ctx: IngestContext, new: int, quarantined: int) -> None:
    if new:
        _metric("ROWS_INGESTED", ctx.chain.name, new)
    if quarantined:
        _metric("QUARANTINED", ctx.chain.name, quarantined)


def _check_reorg(ctx: IngestContext, cursor: Cursor, upstream_now: dict[int, bytes]) -> planning.ReorgPlan | None:
    """Compare the newest known block of the check range — the cursor's own head, whose hash is
    kept even without transfers — with upstream; only on a mismatch look for the fork. Every
    cycle verifies its head before extending past it, so one matching block vouches for every
    stored block below it: one hash per cycle instead of `confirmations`."""
    check = planning.reorg_check_range(cursor, ctx.chain.confirmations)
    if check is None:
        return None
    with ctx.pool.connection() as conn:
        stored = _known_hashes(conn, ctx.chain_id, cursor, check)
    if not stored:
        return None
    top = max(stored)
    current = upstream_now[top] if top in upstream_now else ctx.source.block_hashes([top]).get(top)
    if current == stored[top]:
        return None
    search = planning.fork_search_range(cursor, ctx.chain.max_reorg_depth)
    with ctx.pool.connection() as conn:
        stored = _known_hashes(conn, ctx.chain_id, cursor, search)
    upstream = ctx.source.block_hashes(sorted(stored))
    return planning.plan_reorg(stored, upstream, cursor.synced_block, ctx.chain.max_reorg_depth)


def _known_hashes(conn: Any, chain_id: int, cursor: Cursor, window: planning.Window) -> dict[int, bytes]:
    """Stored block hashes in the window, plus the cursor head's own."""
    stored = store.stored_block_hashes(conn, chain_id, window.lo, window.hi)
    if cursor.synced_hash is not None and window.lo <= cursor.synced_block <= window.hi:
        stored[cursor.synced_block] = cursor.synced_hash
    return stored


def _repair(ctx: IngestContext, cursor: Cursor, plan: planning.ReorgPlan, head: int) -> int:
    """Replace everything from the fork with the upstream's current blocks, in one transaction;
    or halt the chain when the reorg is deeper than the limit."""
    chain = ctx.chain
    if plan.halt:
        ctx.halted = True
        log.error("halted chain=%s reorg depth=%d beyond max_reorg_depth=%d fork=%d",
                  chain.name, plan.depth, chain.max_reorg_depth, plan.fork)
        _record(ctx, IngestEvent(chain.id, "halted", f"reorg of depth {plan.depth} exceeds max_reorg_depth "
                                 f"{chain.max_reorg_depth}; ingestion stopped",
                                 detail={"depth": plan.depth, "fork_block": plan.fork, "level": "alert"}))
        return 0
    hi = max(plan.fork, head if _sync_span(chain) is None else min(head, plan.fork + _sync_span(chain) - 1))
    read_before = ctx.source.block_hashes([hi])
    result = ctx.source.fetch_blocks(plan.fork, hi, max_calls=chain.max_pages_per_cycle)
    covered_to = max(result.covered_to, plan.fork - 1)
    head_hash = _head_hash(ctx, covered_to, hi, read_before) if covered_to >= plan.fork else None
    detail = {"depth": plan.depth, "fork_block": plan.fork, "to_block": covered_to}
    with ctx.cursor_lock, ctx.pool.connection() as conn:
        current = replace(store.get_cursor(conn, chain.id), synced_block=covered_to, synced_hash=head_hash)
        event = IngestEvent(chain.id, "reorg", f"reorg of depth {plan.depth} from block {plan.fork}",
                            rows=len(result.transfers), detail=detail)
        deleted, inserted = store.replace_from_block(conn, chain.id, plan.fork, result.transfers,
                                                     cursor=current, event=event)
    log.warning("reorg chain=%s depth=%d fork=%d deleted=%d inserted=%d",
                chain.name, plan.depth, plan.fork, deleted, inserted)
    _metric("REORGS", chain.name)
    _count(ctx, inserted, 0)
    ctx.on_changed()
    return inserted


# --- backfill -----------------------------------------------------------------------------


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


def _initial_span(chain: ChainConfig) -> int:
    if chain.kind == "rpc_logs":
        return chain.log_window_blocks
    return max(1, chain.page_size)  # about one page of rows where a block holds one transfer


def _span_bounds(chain: ChainConfig) -> tuple[int, int]:
    if chain.kind == "rpc_logs":
        return chain.log_window_blocks, chain.log_window_blocks * 50
    return 1, 1_000_000


def _fetch_whole(ctx: IngestContext, window: planning.Window, fetchers: ThreadPoolExecutor) -> Any:
    """All of [lo, hi], its parts fetched at once; None when a stop request abandons it (nothing
    was committed, the cursor has not moved)."""
    parts = list(fetchers.map(lambda part: _fetch_part(ctx, part), planning.split_window(window, BACKFILL_FETCHERS)))
    if any(part is None for part in parts):
        return None
    return [t for part in parts for t in part[0]], [q for part in parts for q in part[1]]


def _fetch_part(ctx: IngestContext, window: planning.Window) -> tuple[list, list] | None:
    """One part whole, continuing from covered_to + 1 until it is complete."""
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
    ctx.backfill_span = ctx.backfill_span or _initial_span(ctx.chain)
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
    ctx.backfill_span = planning.next_span(ctx.backfill_span, len(transfers), rows_goal, *_span_bounds(ctx.chain))
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
    _count(ctx, new, len(quarantined))
    log.info("ingested chain=%s job=backfill oldest_block=%s target=%d rows=%d new=%d share=%.3f done=%s",
             ctx.chain.name, lo, target, len(transfers), new, share, done)
    return cursor


# --- warm, retention, verify --------------------------------------------------------------


def warm(ctx: IngestContext) -> int:
    """Precompute page 1 of the chain and of the aggregate into the shared cache."""
    try:
        from transfer_daemon import cache
    except ImportError:
        return 0
    if ctx.cache is None:
        ctx.cache = cache.WarmCache.for_config(ctx.config)
    with ctx.pool.connection() as conn:
        pages = cache.warm(ctx.config, conn, ctx.cache)
    log.debug("warmed chain=%s pages=%d", ctx.chain.name, pages)
    return pages


def retention(ctx: IngestContext) -> list[str]:
    """Create next month's partitions and drop those older than retention_days."""
    days = ctx.config.ingest.retention_days
    with ctx.pool.connection() as conn:
        dropped = store.apply_retention(conn, days, ctx.clock())
    _record(ctx, IngestEvent(ctx.chain_id, "retention", f"dropped {len(dropped)} partitions older than {days} days",
                             detail={"dropped": list(dropped)}))
    log.info("retention chain=%s days=%d dropped=%s", ctx.chain.name, days, ",".join(dropped) or "-")
    return list(dropped)


def verify(ctx: IngestContext) -> dict | None:
    """Recount a settled window upstream and compare with the store; record the drift."""
    if not ctx.may_call_upstream:
        return None
    with ctx.pool.connection() as conn:
        cursor = store.get_cursor(conn, ctx.chain_id)
    window = planning.verify_window(cursor, ctx.chain.confirmations, VERIFY_BLOCKS, ctx.clock())
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
    _record(ctx, IngestEvent(ctx.chain_id, "drift", f"verify blocks {window.lo}..{result.covered_to}: drift {drift}",
                             rows=drift, detail=detail))
    level = logging.WARNING if drift else logging.INFO
    log.log(level, "verified chain=%s blocks=%d..%d upstream=%d stored=%d missing=%d extra=%d", ctx.chain.name,
            window.lo, result.covered_to, detail["upstream"], detail["stored"], detail["missing"], detail["extra"])
    return detail
