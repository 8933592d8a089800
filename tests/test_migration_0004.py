"""Migration 0004 rebuilds `transfers` (gas as bytes, method id as int4, stream id as int2):
every stored transfer comes through it unchanged, in the same monthly partitions."""

from __future__ import annotations

import time

import psycopg
import pytest
from store_support import old_months

from transfer_daemon import store
from transfer_daemon.db import partitions
from transfer_daemon.db.migrate import available_migrations, migrate
from transfer_daemon.model import UINT256_MAX, Transfer

OLD_INSERT = """
INSERT INTO transfers (time_stamp, block_number, stream_id, log_index, tx_hash, from_address, to_address,
                       value, gas_used, gas_price, method_id)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
"""


@pytest.fixture
def old_schema_url(empty_database_url: str) -> str:
    """A database at migration 0003, as an earlier release left it."""
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
                     " applied_at timestamptz NOT NULL DEFAULT now())")
        for version, file_name, sql in available_migrations():
            if version <= 3:
                conn.execute(sql)
                conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, file_name))
    return empty_database_url


def test_migration_keeps_every_transfer_and_partition(old_schema_url: str) -> None:
    now = int(time.time())
    old_month = now - 400 * 86400
    contract = b"\x11" * 20
    expected = [
        Transfer(1, 100, old_month, b"\x01" * 32, 0, b"\x02" * 20, b"\x03" * 20, UINT256_MAX, contract,
                 None, 0, UINT256_MAX, "0xa9059cbb"),
        Transfer(1, 101, old_month + 12, b"\x04" * 32, 7, b"\x05" * 20, b"\x06" * 20, 0, contract,
                 None, 21_000, 10**9, "0xffffffff"),
        Transfer(1, 9_000, now, b"\x07" * 32, 3, b"\x08" * 20, b"\x09" * 20, 10**18, contract,
                 None, None, None, None),
    ]
    with psycopg.connect(old_schema_url, autocommit=True) as conn:
        stream = conn.execute("INSERT INTO streams (chain_id, contract) VALUES (1, %s) RETURNING stream_id",
                              (contract,)).fetchone()[0]
        old_months(conn, old_month, now)
        for t in expected:
            conn.execute(OLD_INSERT, (t.time_stamp, t.block_number, stream, t.log_index, t.tx_hash, t.from_address,
                                      t.to_address, t.value, t.gas_used, t.gas_price,
                                      None if t.method_id is None else bytes.fromhex(t.method_id[2:])))
        conn.execute("INSERT INTO partition_maintenance (name) VALUES (%s)",
                     (partitions.partition_name(*partitions.month_of(old_month)),))
        months_before = set(partitions.existing(conn))

    assert migrate(old_schema_url) == len(available_migrations()) - 3

    with psycopg.connect(old_schema_url, autocommit=True) as conn:
        assert set(partitions.existing(conn)) >= months_before
        page = store.query_transfers(conn, store.TransferQuery((1,), sort="asc"))
        assert page.items == expected
        types = dict(conn.execute("SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
                                  " WHERE attrelid = 'transfers'::regclass AND attnum > 0").fetchall())
        assert (types["gas_used"], types["method_id"], types["stream_id"]) == ("bytea", "integer", "smallint")
        stats = {s for s, in conn.execute("SELECT stxname FROM pg_statistic_ext")}
        old_name = partitions.partition_name(*partitions.month_of(old_month))
        assert {f"{old_name}_from_stx", f"{old_name}_to_stx"} <= stats
        assert conn.execute("SELECT count(*) FROM partition_maintenance").fetchone()[0] == 0
        assert conn.execute("SELECT to_regclass('transfers_old')").fetchone()[0] is None
        # the write path works on the rebuilt table: a repeat is skipped, a new row lands
        again = [*expected[:1], Transfer(1, 9_001, now + 1, b"\x0a" * 32, 0, b"\x02" * 20, b"\x03" * 20, 5, contract)]
        assert store.write_batch(conn, 1, again, cursor=None, event=None) == 1
