"""Migration 0008 rebuilds the address indexes on a 64-bit digest of the address and the stream: every
stored transfer is found by address as before, in every month that existed and in months made later."""

from __future__ import annotations

import time

import psycopg
import pytest
from store_support import make_transfers, old_months, sort_key, stream_ids

from transfer_daemon import store
from transfer_daemon.db import partitions
from transfer_daemon.db.migrate import available_migrations, migrate

VERSION = 8


@pytest.fixture
def before_url(empty_database_url: str) -> str:
    """A database with every migration but 0008: its address indexes as an earlier release left them
    (the later migrations only add what today's writer needs to seed it, none touches those indexes)."""
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
                     " applied_at timestamptz NOT NULL DEFAULT now())")
        for version, file_name, sql in available_migrations():
            if version != VERSION:
                conn.execute(sql)
                conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, file_name))
    return empty_database_url


def _index_keys(conn: psycopg.Connection) -> dict[str, set[str]]:
    """Each address index's definition per partition, without the partition's name."""
    rows = conn.execute(
        "SELECT c.relname, pg_get_indexdef(x.indexrelid) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " JOIN pg_index x ON x.indrelid = c.oid WHERE i.inhparent = 'transfers'::regclass"
        " AND pg_get_indexdef(x.indexrelid) LIKE '%%_address%%'").fetchall()
    keys: dict[str, set[str]] = {}
    for name, definition in rows:
        keys.setdefault(name, set()).add(definition.split(" USING btree ")[1])
    return keys


def test_migration_keys_the_address_indexes_by_digest_and_stream(before_url: str) -> None:
    now = int(time.time())
    old = now - 200 * 86400
    rows = (make_transfers(1, 300, base_ts=old, addresses=8)
            + make_transfers(25, 300, base_ts=now - 3600, start_block=90_000, addresses=8))
    with psycopg.connect(before_url, autocommit=True) as conn:
        old_months(conn, old - 86400, now + 86400)
        for chain in (1, 25):
            store.write_batch(conn, chain, [t for t in rows if t.chain_id == chain], cursor=None, event=None)
        months = set(partitions.existing(conn))

    assert migrate(before_url) == 1

    expected = {
        "(td_addr64(from_address), stream_id, td_ts32(time_stamp)) WITH (fillfactor='100')",
        "(td_addr64(to_address), stream_id, td_ts32(time_stamp)) WITH (fillfactor='100')",
    }
    with psycopg.connect(before_url, autocommit=True) as conn:
        partitions.ensure_months(conn, now, now + 400 * 86400)  # months made after the migration
        keys = _index_keys(conn)
        assert set(keys) == set(partitions.existing(conn).values()) and set(partitions.existing(conn)) > months
        assert all(found == expected for found in keys.values()), keys
        stats = dict(conn.execute("SELECT stxname, pg_get_statisticsobjdef(oid) FROM pg_statistic_ext").fetchall())
        for name in partitions.existing(conn).values():
            assert "td_addr64(from_address)" in stats[f"{name}_from_stx"]
            assert "td_addr64(to_address)" in stats[f"{name}_to_stx"]
        assert conn.execute("SELECT to_regprocedure('td_addr32(bytea)')").fetchone()[0] is None
        streams = stream_ids(conn)
        for who in {t.from_address for t in rows[:20]}:
            page = store.query_transfers(conn, store.TransferQuery((), page_size=1000, address=who))
            mine = [t for t in rows if who in (t.from_address, t.to_address)]
            assert page.items == sorted(mine, key=lambda t: sort_key(t, streams), reverse=True)
        # the write path on the new indexes: a repeat is skipped, a new row lands
        again = [rows[0], *make_transfers(1, 7, seed=9, base_ts=now, start_block=500_000)]
        assert store.write_batch(conn, 1, again, cursor=None, event=None) == 7
