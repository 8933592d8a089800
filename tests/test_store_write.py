"""Write path on a real Postgres: dedup, extremes, partitions, retention, reorg repair, concurrency."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime

import psycopg
import pytest
from store_support import count_rows, make_transfers

from transfer_daemon import store
from transfer_daemon.db import partitions
from transfer_daemon.model import UINT256_MAX, Cursor, IngestEvent, Quarantined


@pytest.fixture
def conn(database_url: str):
    with psycopg.connect(database_url, autocommit=True) as connection:
        yield connection


def _all(conn: psycopg.Connection, chain_id: int) -> list:
    page = store.query_transfers(conn, store.TransferQuery((chain_id,), page_size=100, sort="asc"))
    return page.items


def test_same_batch_twice_and_overlapping_batches_store_each_transfer_once(conn) -> None:
    rows = make_transfers(1, 300)
    assert store.write_batch(conn, 1, rows[:200], cursor=None, event=None) == 200
    assert store.write_batch(conn, 1, rows[:200], cursor=None, event=None) == 0
    assert store.write_batch(conn, 1, rows[150:], cursor=None, event=None) == 100
    assert store.write_batch(conn, 1, rows[10:20] + rows[10:20], cursor=None, event=None) == 0
    fresh = make_transfers(1, 50, seed=4, start_block=90_000, base_ts=rows[-1].time_stamp + 1000)
    assert store.write_batch(conn, 1, fresh + fresh[:5], cursor=None, event=None) == 50  # duplicates in one batch
    assert store.write_batch(conn, 1, rows[:200], cursor=None, event=None) == 0
    assert count_rows(conn) == 350
    assert store.chain_stats(conn, 1).rows == 350


def test_key_is_contract_block_and_log_index_not_the_transaction(conn) -> None:
    first = make_transfers(1, 1)[0]
    twin = replace(first, log_index=first.log_index + 1)  # an identical transfer in the same transaction
    other_tx = replace(first, tx_hash=b"\x42" * 32)  # same (contract, block, log index): the same transfer
    other_contract = replace(first, contract_address=b"\x07" * 20)
    assert store.write_batch(conn, 1, [first, twin], cursor=None, event=None) == 2
    assert store.write_batch(conn, 1, [other_tx, other_contract], cursor=None, event=None) == 1
    stored = {(t.tx_hash, t.log_index, t.contract_address) for t in _all(conn, 1)}
    assert stored == {(first.tx_hash, 0, first.contract_address), (first.tx_hash, 1, first.contract_address),
                      (first.tx_hash, 0, other_contract.contract_address)}
    with pytest.raises(psycopg.errors.CheckViolation):  # block and log index share one int8 in the key
        store.write_batch(conn, 1, [replace(first, log_index=2**24)], cursor=None, event=None)
    assert count_rows(conn) == 3


def test_uint256_max_and_zero_round_trip_with_every_field(conn) -> None:
    base = make_transfers(1, 3)
    rows = [replace(base[0], value=UINT256_MAX, gas_price=UINT256_MAX), replace(base[1], value=0, gas_used=0),
            replace(base[2], gas_used=None, gas_price=None, method_id=None, block_hash=None)]
    store.write_batch(conn, 1, rows, cursor=None, event=None)
    stored = {(t.tx_hash, t.log_index): t for t in _all(conn, 1)}
    assert stored[(rows[0].tx_hash, rows[0].log_index)] == rows[0]
    assert stored[(rows[1].tx_hash, rows[1].log_index)] == rows[1]
    # block 1000 already has its hash from rows[0]: a row without one keeps it
    assert stored[(rows[2].tx_hash, rows[2].log_index)] == replace(rows[2], block_hash=rows[0].block_hash)
    assert stored[(rows[0].tx_hash, rows[0].log_index)].to_api()["value"] == str(UINT256_MAX)


def test_gas_is_stored_as_minimal_unsigned_bytes_and_read_back_by_td_uint(conn) -> None:
    base = make_transfers(1, 3)
    rows = [replace(base[0], gas_used=0, gas_price=UINT256_MAX), replace(base[1], gas_used=21_000, gas_price=256),
            replace(base[2], gas_used=None, gas_price=None)]
    store.write_batch(conn, 1, rows, cursor=None, event=None)
    stored = conn.execute("SELECT log_index, gas_used, gas_price, td_uint(gas_used)::text, td_uint(gas_price)::text"
                          " FROM transfers ORDER BY block_number, log_index").fetchall()
    assert [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row) for row in stored] == [
        (rows[0].log_index, b"", b"\xff" * 32, "0", str(UINT256_MAX)),
        (rows[1].log_index, b"\x52\x08", b"\x01\x00", "21000", "256"),
        (rows[2].log_index, None, None, None, None),
    ]
    items, _ = store.query_items(conn, store.TransferQuery((1,), sort="asc"))
    assert [(i["gasUsed"], i["gasPrice"]) for i in items] == [("0", str(UINT256_MAX)), ("21000", "256"), (None, None)]


@pytest.mark.parametrize("writer", ["this process", "another process"])
def test_a_stored_key_without_its_block_row_is_still_skipped(conn, writer: str) -> None:
    """The write path reads stored keys only when this process stored the blocks before the
    batch or a block of the batch's range is stored; a key stored without its block row (written
    by other means) must still not be duplicated, whichever path the batch takes."""
    rows = make_transfers(1, 40)
    assert store.write_batch(conn, 1, rows[:30], cursor=None, event=None) == 30
    conn.execute("DELETE FROM blocks")
    if writer == "another process":
        store.writes._caches.clear()  # what this process remembers of its own writes
    assert store.write_batch(conn, 1, rows, cursor=None, event=None) == 10
    assert count_rows(conn) == 40
    assert store.chain_stats(conn, 1).rows == 40
    assert conn.execute("SELECT count(*) FROM blocks").fetchone()[0] == len({t.block_number for t in rows})


def test_rows_cursor_and_event_commit_together_and_roll_back_together(conn) -> None:
    rows = make_transfers(1, 10)
    store.write_batch(conn, 1, rows, cursor=Cursor(1, synced_block=2000), event=IngestEvent(1, "ingested", rows=10),
                      quarantined=[Quarantined(1, "bad value", {"value": "-1"})])
    assert store.get_cursor(conn, 1).synced_block == 2000
    events = store.recent_events(conn, 1)
    assert [e["status"] for e in events] == ["ingested", "quarantined"]
    assert events[1]["detail"]["raw"] == {"value": "-1"} and events[1]["message"] == "bad value"
    assert store.data_version(conn, 1) == 1
    with pytest.raises(psycopg.Error):  # an event that cannot be stored aborts the whole batch
        store.write_batch(conn, 1, make_transfers(1, 5, seed=2), cursor=Cursor(1, synced_block=3000),
                          event=IngestEvent(1, None, rows=5))  # type: ignore[arg-type]
    assert count_rows(conn) == 10
    assert store.get_cursor(conn, 1).synced_block == 2000
    assert store.data_version(conn, 1) == 1


def test_data_version_bumps_only_when_transfers_change(conn) -> None:
    rows = make_transfers(7, 20)
    store.write_batch(conn, 7, rows, cursor=None, event=None)
    store.write_batch(conn, 7, rows, cursor=Cursor(7, synced_block=5), event=None)
    assert store.data_version(conn, 7) == 1
    store.replace_from_block(conn, 7, rows[-1].block_number, [], cursor=None, event=None)
    assert store.data_version(conn, 7) == 2
    assert store.data_version(conn, 8) == 0


def test_partitions_are_created_for_2019_and_future_months(conn) -> None:
    old = datetime(2019, 3, 15, tzinfo=UTC).timestamp()
    future = datetime(2031, 11, 2, tzinfo=UTC).timestamp()
    rows = make_transfers(1, 5, base_ts=int(old)) + make_transfers(1, 5, seed=3, base_ts=int(future), start_block=9000)
    assert store.write_batch(conn, 1, rows, cursor=None, event=None) == 10
    names = set(partitions.existing(conn).values())
    assert {"transfers_p201903", "transfers_p203111"} <= names
    assert conn.execute("SELECT count(*) FROM transfers_p201903").fetchone()[0] == 5


def test_retention_drops_whole_old_months_only(conn) -> None:
    now = datetime(2024, 6, 20, tzinfo=UTC).timestamp()
    old = make_transfers(1, 8, base_ts=int(datetime(2024, 2, 10, tzinfo=UTC).timestamp()))
    recent = make_transfers(1, 8, seed=5, start_block=5000, base_ts=int(datetime(2024, 3, 25, tzinfo=UTC).timestamp()))
    store.write_batch(conn, 1, old + recent, cursor=None, event=None)
    dropped = store.apply_retention(conn, 90, now)  # cutoff 2024-03-22: all of February is older
    assert dropped == ["transfers_p202402"]
    assert {t.tx_hash for t in _all(conn, 1)} == {t.tx_hash for t in recent}
    assert store.chain_stats(conn, 1).rows == 8
    assert store.chain_stats(conn, 1).oldest_block == 5000
    assert "transfers_p202408" in partitions.existing(conn).values()  # months ahead created
    compacted = {name for name, in conn.execute("SELECT name FROM partition_maintenance")}
    assert "transfers_p202403" in compacted and "transfers_p202406" not in compacted  # closed months only
    assert store.write_batch(conn, 1, make_transfers(1, 3, seed=9, base_ts=old[0].time_stamp),
                             cursor=None, event=None) == 3  # a late backfill recreates the month


def test_replace_from_block_deletes_the_fork_and_inserts_the_new_branch(conn) -> None:
    rows = make_transfers(1, 70, per_block=7)  # blocks 1000..1009
    store.write_batch(conn, 1, rows, cursor=None, event=None)
    fork = 1006
    branch = [replace(t, tx_hash=t.tx_hash[::-1], block_hash=b"\xee" * 32) for t in rows if t.block_number >= fork][:10]
    deleted, inserted = store.replace_from_block(conn, 1, fork, branch, cursor=Cursor(1, synced_block=1009),
                                                 event=IngestEvent(1, "reorg", rows=10))
    assert (deleted, inserted) == (28, 10)
    hashes = store.stored_block_hashes(conn, 1, 1000, 1009)
    assert hashes[1005] == (1005).to_bytes(32, "big") and hashes[1006] == b"\xee" * 32 and 1009 not in hashes
    keys = store.known_transfer_keys(conn, 1, fork, 1009)
    assert keys == {(t.tx_hash, t.log_index, t.contract_address) for t in branch}
    assert store.chain_stats(conn, 1).rows == 52


def test_concurrent_writers_on_one_chain_store_no_duplicates(database_url: str) -> None:
    rows = make_transfers(3, 2000)
    batches = [rows[i:i + 500] for i in range(0, 2000, 250)]  # every row in two batches
    errors: list[BaseException] = []
    new_counts: list[int] = []

    def writer(mine: list) -> None:
        try:
            with psycopg.connect(database_url, autocommit=True) as own:
                for batch in mine:
                    new_counts.append(store.write_batch(own, 3, batch, cursor=None, event=None))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(batches[k::4],)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert sum(new_counts) == 2000
    with psycopg.connect(database_url) as check:
        assert count_rows(check) == 2000
        assert store.chain_stats(check, 3).rows == 2000


def test_freshness_reports_last_ingest_newest_transfer_and_lag(conn) -> None:
    rows = make_transfers(5, 10)
    store.write_batch(conn, 5, rows, cursor=Cursor(5, synced_block=1), event=None, synced_to_head=True)
    ingested_at = store.freshness(conn, [5])[5].last_ingested_at
    fresh = store.freshness(conn, [5, 6], now=ingested_at + 42)
    assert fresh[5].newest_transfer_at == max(t.time_stamp for t in rows)
    assert fresh[5].lag_seconds == pytest.approx(42)
    assert fresh[6].last_ingested_at is None and fresh[6].lag_seconds is None
    store.record_event(conn, IngestEvent(5, "error", "upstream down"))
    assert store.freshness(conn, [5])[5].last_ingested_at == ingested_at
    assert [e["status"] for e in store.recent_events(conn, 5, statuses=["error"])] == ["error"]


def _rows_read_by_seq_scans(writer: psycopg.Connection, reader: psycopg.Connection) -> int:
    """seq_tup_read of `blocks` and the `transfers` partitions, once the writer's statistics are flushed."""
    writer.execute("SELECT pg_stat_force_next_flush()")
    writer.execute("SELECT 1")  # the flush happens when a transaction ends
    reader.execute("SELECT pg_stat_clear_snapshot()")
    return reader.execute("SELECT sum(seq_tup_read) FROM pg_stat_user_tables"
                          " WHERE relname = 'blocks' OR relname LIKE 'transfers_p%'").fetchone()[0]


def test_reads_use_the_indexes_after_the_tables_grow(conn, database_url: str) -> None:
    """A plan cached while `blocks` or `transfers` was empty (a seq scan) must not stay in use once
    they are large: each call would read the whole table (found by bench_store: a quarter slower at
    1M rows)."""
    created = partitions.create(conn, set(partitions.months_between(1_700_000_000, 1_700_100_000)))
    for table in ("blocks", *created):  # no ANALYZE to replan behind our back
        conn.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
    conn.execute("VACUUM ANALYZE blocks, transfers")  # known empty, as after a TRUNCATE or on a new install

    def calls(i: int, base_ts: int) -> None:
        batch = make_transfers(1, 3, seed=i, start_block=base_ts - 1_699_000_000 + 10 * i, per_block=1,
                               base_ts=base_ts)
        assert store.write_batch(conn, 1, batch, cursor=None, event=None) == 3  # a new range: the block check
        assert store.write_batch(conn, 1, batch[1:], cursor=None, event=None) == 0  # a repeat: the stored keys
        store.stored_block_hashes(conn, 1, batch[0].block_number, batch[-1].block_number)
        store.known_transfer_keys(conn, 1, batch[0].block_number, batch[-1].block_number)
        store.freshness(conn, [1])
        store.chain_stats(conn, 1)

    for i in range(15):  # enough for psycopg to prepare a statement and Postgres to settle on a generic plan
        calls(i, 1_700_000_000)
    with psycopg.connect(database_url, autocommit=True) as reader:
        reader.execute("INSERT INTO blocks SELECT 1, b, 1700000000, NULL FROM generate_series(500000, 700000) b")
        reader.execute("INSERT INTO transfers (time_stamp, block_number, log_index, stream_id, tx_hash, from_address,"
                       " to_address, value) SELECT 1700000000, 500000 + i, 0, s.stream_id, sha256(int8send(i)),"
                       " substr(sha256(int8send(i)), 1, 20), substr(sha256(int8send(-i)), 1, 20), 0"
                       " FROM generate_series(1, 100000) i, (SELECT stream_id FROM streams"
                       " LIMIT 1) s")
        before = _rows_read_by_seq_scans(conn, reader)
        for i in range(3):
            calls(i, 1_700_100_000)
        assert _rows_read_by_seq_scans(conn, reader) - before < 1000
