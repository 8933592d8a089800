"""Retention: next months' partitions, dropping months older than the window, compacting
closed months' indexes."""

from __future__ import annotations

import logging

import psycopg

from transfer_daemon.db import partitions
from transfer_daemon.store.writes import forget_partitions, require_idle

log = logging.getLogger(__name__)


def _drop_partition(conn: psycopg.Connection, name: str, upper: int) -> None:
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
        conn.execute("DELETE FROM blocks WHERE time_stamp < %s", (upper,))


def apply_retention(conn: psycopg.Connection, retention_days: int, now: float) -> list[str]:
    """Create the coming months' partitions, drop every month wholly older than the retention
    window (with its blocks and events), and return the dropped partitions' names."""
    require_idle(conn)
    partitions.ensure_months(conn, now, now + 2 * 31 * 86400)
    cutoff = now - retention_days * 86400
    dropped = []
    for (year, month), name in sorted(partitions.existing(conn).items()):
        upper = partitions.month_bounds(year, month)[1]
        if upper <= cutoff:
            _drop_partition(conn, name, upper)
            dropped.append(name)
            log.info("dropped partition %s (older than %d days)", name, retention_days)
    with conn.transaction():
        conn.execute("DELETE FROM ingest_events WHERE occurred_at < to_timestamp(%s)", (cutoff,))
        conn.execute("DELETE FROM partition_maintenance WHERE name = ANY(%s)", (dropped,))
    forget_partitions(conn)
    compact_closed_partitions(conn, now)
    return dropped


def compact_closed_partitions(conn: psycopg.Connection, now: float, settle_seconds: int = 86400) -> list[str]:
    """Rebuild, packed full, the indexes of each month that ended more than `settle_seconds` ago
    and was not compacted yet (REINDEX CONCURRENTLY: reads and writes go on meanwhile).

    Needs an autocommit connection (REINDEX CONCURRENTLY cannot run in a transaction); returns
    the partitions compacted.
    """
    if not conn.autocommit:
        log.warning("skipped partition compaction: needs an autocommit connection")
        return []
    done = {name for name, in conn.execute("SELECT name FROM partition_maintenance")}
    compacted = []
    for (year, month), name in sorted(partitions.existing(conn).items()):
        if name in done or partitions.month_bounds(year, month)[1] > now - settle_seconds:
            continue
        conn.execute(f"REINDEX TABLE CONCURRENTLY {name}")
        conn.execute("INSERT INTO partition_maintenance (name) VALUES (%s) ON CONFLICT DO NOTHING", (name,))
        compacted.append(name)
        log.info("compacted partition %s", name)
    return compacted
