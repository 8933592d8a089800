"""What the jobs of one chain share inside a worker: the context, events, failures turned into
events or pauses, the chain's recorded stops, the first anchor of the cursor, row counters."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from psycopg_pool import ConnectionPool

from transfer_daemon import metrics, store
from transfer_daemon.config import ChainConfig, Config
from transfer_daemon.errors import CallsRefused, UpstreamError
from transfer_daemon.ingest import pauses, planning
from transfer_daemon.ingest.activity import Activity
from transfer_daemon.model import Cursor, Halt, IngestEvent, Pause, iso_utc

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
    halted: bool = False  # a reorg deeper than the limit: stop ingesting until `resume`
    pause: Pause | None = None  # the upstream refuses every call for now (pauses.py)
    stops_lock: threading.Lock = field(default_factory=threading.Lock)  # `pause` and its record
    backfill_span: int = 0
    cache: Any = None  # transfer_daemon.cache.WarmCache, opened lazily by `warm`
    activity: Activity = field(default_factory=Activity)  # the sync job's once-a-minute log line
    verify_pass: Any = None  # transfer_daemon.ingest.verify.Progress of the nightly pass under way
    last_progress: float = field(default_factory=time.monotonic)  # see `progress`

    @property
    def chain_id(self) -> int:
        return self.chain.id

    @property
    def may_call_upstream(self) -> bool:
        return not (self.halted or self.pause is not None or self.stopping.is_set())

    def progress(self) -> None:
        """Something moved: an upstream call attempt, a commit, a tick of a long statement. The
        worker's heartbeat stops only when no job has made progress for too long."""
        self.last_progress = time.monotonic()


@contextmanager
def ticking(ctx: IngestContext) -> Iterator[None]:
    """Count the block as progress while it runs, several times per heartbeat limit: for long
    statements whose own bound (`statement_timeout`) says how long they may take (a REINDEX)."""
    every_s = ctx.config.daemon.heartbeat_timeout / 10
    done = threading.Event()

    def tick() -> None:
        while not done.wait(every_s):
            ctx.progress()

    ticker = threading.Thread(target=tick, name=f"ticking-{ctx.chain.name}", daemon=True)
    ticker.start()
    try:
        yield
    finally:
        done.set()
        ticker.join()
        ctx.progress()


def record(ctx: IngestContext, event: IngestEvent) -> None:
    with ctx.pool.connection() as conn:
        store.record_event(conn, event)
    ctx.progress()


def run_guarded(ctx: IngestContext, job: str, body: Callable[[IngestContext], Any], *, gate: bool = False) -> Any:
    """Run one job; turn upstream failures into events instead of a dead scheduler thread.

    An answer that refuses every call for now (`CallsRefused`) pauses the chain's upstream calls
    (one alert per episode); other upstream errors are retried by the next scheduled run. `gate`
    is for the sync job, which runs every poll interval: it first adopts the stops recorded in
    the store and, while paused, lets through only a due probe; a halt it decides is recorded.
    """
    if gate and not admit(ctx):
        return None
    try:
        return body(ctx)
    except CallsRefused as exc:
        metrics.JOB_FAILURES.labels(ctx.chain.name, job).inc()
        pause_calls(ctx, job, exc)
    except UpstreamError as exc:
        metrics.JOB_FAILURES.labels(ctx.chain.name, job).inc()
        log.warning("failed chain=%s job=%s upstream error, retrying next run: %s", ctx.chain.name, job, exc)
        record(ctx, IngestEvent(ctx.chain_id, "error", f"{job}: {exc}", detail={"job": job}))
    finally:
        if gate and ctx.halted:  # admitted, so not halted before: sync found a reorg too deep
            _save_halt(ctx)
    return None


# --- stops: a pause (the upstream refuses every call for now) and a halt (an operator must look) ---


def upstream_digest(ctx: IngestContext) -> str:
    return pauses.upstream_digest(ctx.chain, ctx.chain.api_key())


def _until_text(pause: Pause) -> str:
    return "settings change" if pause.until is None else iso_utc(int(pause.until))


def pause_calls(ctx: IngestContext, job: str, error: CallsRefused) -> None:
    """Stop the chain's upstream calls for as long as `error` says. The first refusal of an
    episode logs one ERROR line and records one alert; the same refusal again only notes it."""
    now, reset = ctx.clock(), ctx.chain.daily_cap_reset_utc
    with ctx.stops_lock:
        current = ctx.pause
        if current is not None and current.reason == pauses.reason_for(error):
            pause = pauses.refused_again(current, now, reset)
        else:
            current, pause = None, pauses.pause_for(error, now, reset, upstream_digest(ctx))
        _set_pause(ctx, pause)
    if current is not None:
        log.info("refused again chain=%s job=%s (%s), still paused until %s", ctx.chain.name, job, pause.reason,
                 _until_text(pause))
        return
    fix = f" (fix {ctx.chain.api_key_env})" if pause.reason == pauses.INVALID_KEY and ctx.chain.api_key_env else ""
    log.error("alert chain=%s job=%s paused upstream calls (%s) until %s%s: %s", ctx.chain.name, job,
              pause.reason, _until_text(pause), fix, error)
    record(ctx, IngestEvent(ctx.chain_id, "alert", f"{job}: upstream calls paused ({pause.reason}) until "
                            f"{_until_text(pause)}: {error}",
                            detail={"job": job, "reason": pause.reason, "until": pause.until}))


def _set_pause(ctx: IngestContext, pause: Pause | None) -> None:
    """Record first, then act on it (callers hold `stops_lock`)."""
    with ctx.pool.connection() as conn:
        store.save_pause(conn, ctx.chain_id, pause)
    ctx.pause = pause


def resume(ctx: IngestContext, why: str) -> None:
    """Lift the chain's pause (its record too): one INFO line and a `resumed` event."""
    with ctx.stops_lock:
        pause = ctx.pause
        _set_pause(ctx, None)
    if pause is not None:
        _resumed(ctx, pause.reason, why)


def _resumed(ctx: IngestContext, reason: str, why: str, *, event: bool = True) -> None:
    log.info("resumed chain=%s after %s: %s", ctx.chain.name, reason, why)
    if event:
        record(ctx, IngestEvent(ctx.chain_id, "resumed", f"resumed after {reason}: {why}", detail={"reason": reason}))


def _save_halt(ctx: IngestContext) -> None:
    with ctx.pool.connection() as conn:
        event = store.last_event(conn, ctx.chain_id, ("halted",))
        reason = event["message"] if event else "halted"
        store.save_halt(conn, ctx.chain_id, Halt(reason, ctx.clock()))


def refresh_stops(ctx: IngestContext) -> None:
    """Adopt the chain's recorded stops: those from before this worker started, or an operator's
    `resume` that cleared them. A pause recorded under other upstream settings or key is lifted."""
    with ctx.stops_lock:
        with ctx.pool.connection() as conn:
            halt, pause = store.get_stops(conn, ctx.chain_id)
            stale = pause is not None and pauses.lifted(pause, upstream_digest(ctx))
            if stale:
                store.save_pause(conn, ctx.chain_id, None)
        before, ctx.pause = ctx.pause, None if stale else pause
    if stale:
        _resumed(ctx, pause.reason, "the chain's upstream settings or key changed")
    elif ctx.pause is not None and before is None:
        log.warning("paused chain=%s upstream calls (%s) until %s, as recorded: %s", ctx.chain.name,
                    ctx.pause.reason, _until_text(ctx.pause), ctx.pause.message)
    elif ctx.pause is None and before is not None:
        _resumed(ctx, before.reason, "cleared by resume", event=False)  # `resume` recorded it
    _adopt_halt(ctx, halt)


def _adopt_halt(ctx: IngestContext, halt: Halt | None) -> None:
    if (halt is not None) == ctx.halted:
        return
    ctx.halted = halt is not None
    if halt is not None:
        log.warning("halted chain=%s as recorded: %s (transfer-daemon resume clears it)", ctx.chain.name, halt.reason)
    else:
        _resumed(ctx, "halt", "cleared by resume", event=False)


def admit(ctx: IngestContext) -> bool:
    """Whether the gated job may call upstream now; while paused, a due probe (one cheap call)
    decides instead: answered, the pause is lifted; refused, it goes on."""
    refresh_stops(ctx)
    if ctx.halted or ctx.stopping.is_set():
        return False
    step = pauses.next_step(ctx.pause, ctx.clock())
    if step == pauses.WAIT:
        return False
    if step == pauses.CALL:
        return True
    try:
        ctx.source.head_block()
    except CallsRefused as exc:
        pause_calls(ctx, "probe", exc)
        return False
    except UpstreamError as exc:
        with ctx.stops_lock:
            _set_pause(ctx, replace(ctx.pause, probed_at=ctx.clock()))
        log.warning("probed chain=%s upstream failed, still paused: %s", ctx.chain.name, exc)
        return False
    resume(ctx, "the upstream answers again")
    return True


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
    """After every committed window (sync, backfill, repair): also progress."""
    ctx.progress()
    if new:
        metrics.ROWS_INGESTED.labels(ctx.chain.name).inc(new)
    if quarantined:
        metrics.QUARANTINED.labels(ctx.chain.name).inc(quarantined)
