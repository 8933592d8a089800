"""Retention: next months' partitions, dropping months older than the window, compacting
closed months' indexes.

Nothing here may stall the readers or hang its worker. Dropping a month takes an exclusive lock
on `transfers`, and every query that arrives while that lock is awaited queues behind it: the
wait is bounded by a short `lock_timeout`, retried a few times, then left to the next run.
Every statement is bounded by a `statement_timeout`, so the worker's liveness ticks during a
long REINDEX cannot hide a hung one. A month's compaction is recorded when it completes; one
cancelled or killed midway leaves invalid `_ccnew` indexes behind, which the next run drops
before it starts that month again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
from psycopg import sql

from transfer_daemon.db import partitions
from transfer_daemon.store.writes import forget_partitions, require_idle

log = logging.getLogger(__name__)

#: pg_advisory_lock key: one compaction at a time however many workers run retention.
COMPACTION_LOCK = (0x7464, 3)


@dataclass(frozen=True)
class RetentionLimits:
    """How long retention may wait for the lock that drops a month (readers queue behind that
    wait), how often it tries again, and how long any one statement (a month's REINDEX) may run."""

    lock_timeout_s: float = 2.0
    drop_attempts: int = 3
    drop_retry_s: float = 5.0
    statement_timeout_s: float = 4 * 3600.0


@contextmanager
def _bounded(conn: psycopg.Connection, timeout: str, seconds: float) -> Iterator[None]:
    """The session's `statement_timeout` or `lock_timeout` while the block runs."""
    conn.execute(sql.SQL("SET {} = {}").format(sql.Identifier(timeout), sql.Literal(f"{int(seconds * 1000)}ms")))
    try:
        yield
    finally:
        conn.execute(sql.SQL("RESET {}").format(sql.Identifier(timeout)))


def _ensure_months(conn: psycopg.Connection, now: float, limits: RetentionLimits) -> None:
    """Next months' partitions, made ahead (attaching one locks `transfers` like a drop); a
    writer makes a missing month itself, so a lock not granted soon only defers this."""
    try:
        with _bounded(conn, "lock_timeout", limits.lock_timeout_s):
            partitions.ensure_months(conn, now, now + 2 * 31 * 86400)
    except psycopg.errors.LockNotAvailable:
        log.warning("deferred creating the coming months' partitions: lock not granted within %.1fs",
                    limits.lock_timeout_s)


def _drop_partition(conn: psycopg.Connection, name: str) -> None:
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", partitions.PARTITION_LOCK)
        counts = conn.execute(
            f"SELECT s.chain_id, count(*) FROM {name} t JOIN streams s USING (stream_id) GROUP BY s.chain_id"
        ).fetchall()
        conn.execute(f"DROP TABLE {name}")
        for chain_id, count in counts:
            conn.execute(
                "UPDATE ingest_cursors SET row_count = row_count - %s, data_version = data_version + 1,"
                " updated_at = now() WHERE chain_id = %s",
                (count, chain_id),
            )


def _drop_with_retries(conn: psycopg.Connection, name: str, limits: RetentionLimits) -> bool:
    """Drop a month, giving up its lock wait after `lock_timeout_s` (then trying again); False
    when every attempt met a lock (the next run tries again)."""
    for attempt in range(1, limits.drop_attempts + 1):
        try:
            with _bounded(conn, "lock_timeout", limits.lock_timeout_s):
                _drop_partition(conn, name)
            return True
        except psycopg.errors.LockNotAvailable:
            log.warning("deferred dropping partition %s: lock not granted within %.1fs (attempt %d of %d)",
                        name, limits.lock_timeout_s, attempt, limits.drop_attempts)
            if attempt < limits.drop_attempts:
                time.sleep(limits.drop_retry_s)
    log.warning("deferred dropping partition %s until the next retention run", name)
    return False


def apply_retention(conn: psycopg.Connection, retention_days: int, now: float,
                    limits: RetentionLimits = RetentionLimits()) -> list[str]:
    """Create the coming months' partitions, drop every month wholly older than the retention
    window (with its blocks and events), and return the dropped partitions' names."""
    require_idle(conn)
    cutoff = now - retention_days * 86400
    dropped, kept_from = [], partitions.month_bounds(*partitions.month_of(int(cutoff)))[0]
    with _bounded(conn, "statement_timeout", limits.statement_timeout_s):
        _ensure_months(conn, now, limits)
        for (year, month), name in sorted(partitions.existing(conn).items()):
            lower, upper = partitions.month_bounds(year, month)
            if upper > cutoff:
                continue
            if _drop_with_retries(conn, name, limits):
                dropped.append(name)
                log.info("dropped partition %s (older than %d days)", name, retention_days)
            else:
                kept_from = min(kept_from, lower)
        with conn.transaction():
            # below `kept_from` no month is stored any more; blocks are pruned by time (index, 0007)
            conn.execute("DELETE FROM blocks WHERE time_stamp < %s", (kept_from,))
            conn.execute("DELETE FROM ingest_events WHERE occurred_at < to_timestamp(%s)", (cutoff,))
            conn.execute("DELETE FROM partition_maintenance WHERE name = ANY(%s)", (dropped,))
    forget_partitions(conn)
    compact_closed_partitions(conn, now, limits=limits, after=cutoff)
    return dropped


def _drop_leftovers(conn: psycopg.Connection, name: str) -> None:
    """Drop the invalid indexes a cancelled or killed REINDEX CONCURRENTLY left on `name`."""
    leftovers = conn.execute(
        "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " WHERE i.indrelid = %s::regclass AND NOT i.indisvalid", (name,)).fetchall()
    for (index,) in leftovers:
        conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(index)))
        log.info("dropped index %s left by an interrupted compaction of %s", index, name)


def _compact(conn: psycopg.Connection, name: str) -> bool:
    try:
        _drop_leftovers(conn, name)
        conn.execute(f"REINDEX TABLE CONCURRENTLY {name}")
    except psycopg.errors.QueryCanceled:
        # what the statement got to leave behind is dropped before the next run starts it again
        log.warning("deferred compacting partition %s: it ran past its statement timeout", name)
        return False
    conn.execute("INSERT INTO partition_maintenance (name) VALUES (%s) ON CONFLICT DO NOTHING", (name,))
    log.info("compacted partition %s", name)
    return True


def compact_closed_partitions(conn: psycopg.Connection, now: float, settle_seconds: int = 86400,
                              limits: RetentionLimits = RetentionLimits(), after: float | None = None) -> list[str]:
    """Rebuild, packed full, the indexes of each month that ended more than `settle_seconds` ago
    (and after `after`: a month retention is about to drop is not worth it) and was not compacted
    yet (REINDEX CONCURRENTLY: reads and writes go on meanwhile).

    Needs an autocommit connection (REINDEX CONCURRENTLY cannot run in a transaction); returns
    the partitions compacted. Skipped while another process compacts.
    """
    if not conn.autocommit:
        log.warning("skipped partition compaction: needs an autocommit connection")
        return []
    if not conn.execute("SELECT pg_try_advisory_lock(%s, %s)", COMPACTION_LOCK).fetchone()[0]:
        return []
    try:
        with _bounded(conn, "statement_timeout", limits.statement_timeout_s):
            done = {name for name, in conn.execute("SELECT name FROM partition_maintenance")}
            floor = float("-inf") if after is None else after
            due = [name for (year, month), name in sorted(partitions.existing(conn).items())
                   if name not in done and floor < partitions.month_bounds(year, month)[1] <= now - settle_seconds]
            return [name for name in due if _compact(conn, name)]
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s, %s)", COMPACTION_LOCK)
