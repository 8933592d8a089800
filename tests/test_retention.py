"""Retention does not stall readers: dropping a month waits for its lock only briefly, gives up
when a reader holds it (the month stays whole) and succeeds on a later run; `blocks` is pruned
through an index."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import psycopg
from store_support import make_transfers

from transfer_daemon import store
from transfer_daemon.db import partitions
from transfer_daemon.model import Cursor
from transfer_daemon.store.retention import RetentionLimits

NOW = datetime(2024, 6, 20, tzinfo=UTC).timestamp()  # retention cutoff (90 days): 2024-03-22
FEBRUARY = int(datetime(2024, 2, 10, tzinfo=UTC).timestamp())
APRIL = int(datetime(2024, 4, 10, tzinfo=UTC).timestamp())
LIMITS = RetentionLimits(lock_timeout_s=0.3, drop_attempts=2, drop_retry_s=0.2, statement_timeout_s=30)


def _blocks(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT count(*) FROM blocks").fetchone()[0]


def test_dropping_a_month_gives_up_on_a_held_lock_without_stalling_readers_and_succeeds_later(database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        old = make_transfers(1, 40, base_ts=FEBRUARY)
        store.write_batch(conn, 1, old + make_transfers(1, 40, seed=4, start_block=9000, base_ts=APRIL),
                          cursor=Cursor(1, synced_block=9100), event=None)
        stored_blocks = _blocks(conn)
        with psycopg.connect(database_url) as reader:  # a long read of February: holds it until it ends
            reader.execute("SELECT count(*) FROM transfers_p202402").fetchone()
            waits: list[float] = []
            late_reader = threading.Thread(target=_timed_read, args=(database_url, waits))
            started = time.monotonic()
            threading.Timer(0.1, late_reader.start).start()  # arrives while the drop waits for its lock
            dropped = store.apply_retention(conn, 90, NOW, LIMITS)
            elapsed = time.monotonic() - started
            late_reader.join(10)
        assert dropped == [] and "transfers_p202402" in partitions.existing(conn).values()
        assert elapsed < LIMITS.drop_attempts * (LIMITS.lock_timeout_s + LIMITS.drop_retry_s) + 2
        assert waits and waits[0] < LIMITS.lock_timeout_s + 1, "a reader queued behind the drop"
        assert store.chain_stats(conn, 1).rows == 80 and _blocks(conn) == stored_blocks  # the month is whole

        assert store.apply_retention(conn, 90, NOW, LIMITS) == ["transfers_p202402"]
        assert store.chain_stats(conn, 1).rows == 40
        assert _blocks(conn) == stored_blocks - len({t.block_number for t in old})
        assert store.chain_stats(conn, 1).oldest_block == 9000


def _timed_read(url: str, waits: list[float]) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        started = time.monotonic()
        conn.execute("SELECT count(*) FROM transfers WHERE time_stamp >= %s", (APRIL,)).fetchone()
        waits.append(time.monotonic() - started)


def test_blocks_are_pruned_by_time_through_an_index(database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO blocks (chain_id, block_number, time_stamp)"
                     " SELECT c, n, 1700000000 + n * 12 FROM generate_series(1, 2) c, generate_series(1, 100000) n")
        conn.execute("ANALYZE blocks")
        plan = conn.execute("EXPLAIN (FORMAT JSON) DELETE FROM blocks WHERE time_stamp < %s",
                            (1700000000 + 1000 * 12,)).fetchone()[0][0]["Plan"]
    types = {node["Node Type"] for node in _nodes(plan)}
    assert "Seq Scan" not in types, types
    assert any(node.get("Index Name") == "blocks_time_idx" for node in _nodes(plan)), types


def _nodes(plan: dict):
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)
