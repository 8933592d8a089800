"""Verify's store surface on a real Postgres: one block replaced in one transaction, the reads."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import psycopg
import pytest
from store_support import make_transfers

from transfer_daemon import store
from transfer_daemon.model import Cursor, IngestEvent
from transfer_daemon.store.writes import WRITE_LOCK_CLASS


@pytest.fixture
def conn(database_url: str):
    with psycopg.connect(database_url, autocommit=True) as connection:
        yield connection


def _block(rows, block):
    return [t for t in rows if t.block_number == block]


def _contracts(rows):
    return sorted({t.contract_address for t in rows})


def _state(conn, chain_id: int):
    return conn.execute("SELECT row_count, data_version, synced_at FROM ingest_cursors WHERE chain_id = %s",
                        (chain_id,)).fetchone()


def _stored(conn, rows, block):
    return sorted(store.stored_transfers(conn, 1, _contracts(rows), block, block), key=lambda t: t.log_index)


def _in_order(rows):
    return sorted(rows, key=lambda t: (t.block_number, t.log_index))


def _comparable(rows):
    """What stored_transfers reads back: no block hash, no gas fields."""
    return sorted((replace(t, block_hash=None, gas_used=None, gas_price=None, method_id=None) for t in rows),
                  key=lambda t: t.log_index)


def test_replace_block_inserts_the_missing_and_deletes_the_extra_rows_only(conn) -> None:
    rows = make_transfers(1, 70)  # blocks 1000..1009, 7 rows each
    cursor = Cursor(1, synced_block=1009, backfilled_block=1000)
    store.write_batch(conn, 1, rows, cursor=cursor, event=None, synced_to_head=True)
    upstream = _block(rows, 1004)
    conn.execute("DELETE FROM transfers WHERE block_number = 1004 AND log_index = 3")  # lost by hand
    stray = replace(upstream[0], log_index=9, tx_hash=b"\x99" * 32)
    store.write_batch(conn, 1, [stray], cursor=None, event=None)  # an extra row
    rows_before, version_before, ingested_before = _state(conn, 1)
    assert ingested_before is not None
    new_hash = b"\x55" * 32
    event = IngestEvent(1, "repair", "verify re-ingested block 1004", detail={"block": 1004})

    deleted, inserted = store.replace_block(conn, 1, 1004, [replace(t, block_hash=new_hash) for t in upstream],
                                            contracts=_contracts(rows), event=event)

    assert (deleted, inserted) == (1, 1)  # the five matching rows were left alone
    assert _stored(conn, rows, 1004) == _comparable(upstream)
    assert store.stored_block_hashes(conn, 1, 1004, 1004) == {1004: new_hash}
    row_count, version, ingested = _state(conn, 1)
    assert row_count == rows_before and version == version_before + 1
    assert ingested == ingested_before  # a repair is not a sync: freshness does not move
    assert store.get_cursor(conn, 1) == cursor
    assert store.recent_events(conn, 1, statuses=["repair"])[0]["detail"] == {"block": 1004}
    assert _stored(conn, rows, 1003) == _comparable(_block(rows, 1003))  # neighbours untouched
    assert _stored(conn, rows, 1005) == _comparable(_block(rows, 1005))


def test_a_row_that_says_something_else_is_replaced(conn) -> None:
    rows = make_transfers(1, 21)
    store.write_batch(conn, 1, rows, cursor=None, event=None)
    upstream = [replace(t, value=t.value + 1) if t.log_index == 2 else t for t in _block(rows, 1001)]
    assert store.replace_block(conn, 1, 1001, upstream, contracts=_contracts(rows), event=None) == (1, 1)
    assert _stored(conn, rows, 1001) == _comparable(upstream)


def test_an_emptied_block_is_forgotten_unless_another_contract_keeps_rows_in_it(conn) -> None:
    rows = make_transfers(1, 21, contracts=2)
    store.write_batch(conn, 1, rows, cursor=None, event=None)
    first, second = _contracts(rows)
    assert store.replace_block(conn, 1, 1000, [], contracts=[first, second], event=None) == (7, 0)
    assert store.stored_block_hashes(conn, 1, 1000, 1000) == {}
    kept = [t for t in _block(rows, 1001) if t.contract_address == second]
    assert kept, "the fixture puts both contracts in block 1001"
    assert store.replace_block(conn, 1, 1001, [], contracts=[first], event=None)[1] == 0
    assert _stored(conn, rows, 1001) == _comparable(kept)  # other contracts' rows are not verify's to judge
    assert 1001 in store.stored_block_hashes(conn, 1, 1001, 1001)
    assert store.chain_stats(conn, 1).rows == 21 - 7 - (7 - len(kept))


def test_replace_block_waits_for_the_chains_write_lock(conn, database_url) -> None:
    rows = make_transfers(1, 14)
    store.write_batch(conn, 1, rows, cursor=None, event=None)
    done = threading.Event()
    with psycopg.connect(database_url) as holder:  # a worker's write transaction, under way
        holder.execute("SELECT pg_advisory_xact_lock(%s, %s)", (WRITE_LOCK_CLASS, 1))

        def repair() -> None:
            with psycopg.connect(database_url, autocommit=True) as other:
                store.replace_block(other, 1, 1000, [], contracts=_contracts(rows), event=None)
            done.set()

        thread = threading.Thread(target=repair)
        thread.start()
        time.sleep(0.5)
        assert not done.is_set()
        holder.commit()
    thread.join(10)
    assert done.is_set() and _stored(conn, rows, 1000) == []


def test_replace_block_refuses_rows_of_another_block(conn) -> None:
    rows = make_transfers(1, 14)
    with pytest.raises(ValueError, match="block 1000"):
        store.replace_block(conn, 1, 1000, rows, contracts=_contracts(rows), event=None)


def test_blocks_around_a_time_and_stored_transfers_of_a_range(conn) -> None:
    rows = make_transfers(1, 70, blocks_per_second=1)  # blocks 1000..1009 one second apart
    store.write_batch(conn, 1, rows, cursor=None, event=None)
    base = rows[0].time_stamp
    assert store.blocks_around(conn, 1, base + 4) == ((1003, base + 3), (1004, base + 4))
    assert store.blocks_around(conn, 1, base) == (None, None)
    assert store.blocks_around(conn, 1, base + 100) == ((1009, base + 9), None)
    stored = store.stored_transfers(conn, 1, _contracts(rows), 1002, 1004)
    assert _in_order(stored) == _in_order(_comparable(rows[14:35]))
    assert store.stored_transfers(conn, 1, [b"\x77" * 20], 1000, 1009) == []
