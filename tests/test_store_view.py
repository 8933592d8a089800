"""The SQL interface (DESIGN.md "Storage"): the view `token_transfers`, one row per stored transfer,
ethereum-etl's column names and types plus the chain, equal to what the HTTP API serves."""

from __future__ import annotations

from dataclasses import replace

import psycopg
import pytest
from api_support import ALICE, BOB, make_config, migrated, transfer, write

from transfer_daemon.api import create_app
from transfer_daemon.model import MAX_LOG_INDEX, MAX_TIME_STAMP, UINT256_MAX

COLUMNS = [("chain_id", "bigint"), ("token_address", "text"), ("from_address", "text"), ("to_address", "text"),
           ("value", "numeric(78,0)"), ("transaction_hash", "text"), ("log_index", "bigint"),
           ("block_timestamp", "timestamp without time zone"), ("block_number", "bigint"), ("block_hash", "text")]


@pytest.fixture
def seeded(make_database, tmp_path):
    """Chain 1 and chain 25 with ordinary rows and the extremes: a uint256 value of all ones, the
    last log index and second the schema holds, a row whose block carries no hash."""
    url = migrated(make_database())
    edge = replace(transfer(1, 40, sender=BOB, recipient=ALICE), value=UINT256_MAX, log_index=MAX_LOG_INDEX,
                   time_stamp=MAX_TIME_STAMP)
    write(url, 1, [transfer(1, n) for n in range(30)] + [edge])
    write(url, 25, [transfer(25, n, ts=transfer(1, n).time_stamp + 30) for n in range(20)]
          + [replace(transfer(25, 30), block_hash=None, value=0)])
    app = create_app(make_config(tmp_path), url)
    yield app, url
    app.extensions["transfer_daemon"].close()


def _api_items(client) -> list[dict]:
    items, cursor = [], None
    while True:
        body = client.get("/api/transfers?pageSize=100" + (f"&cursor={cursor}" if cursor else "")).get_json()
        items += body["items"]
        cursor = body["nextCursor"]
        if not cursor:
            return items


def _as_item(row: tuple) -> dict:
    chain, token, sender, recipient, value, tx, log_index, stamp, block, block_hash = row
    return {"chainId": chain, "contractAddress": token, "from": sender, "to": recipient, "value": str(value),
            "hash": tx, "logIndex": log_index, "timeStamp": stamp.isoformat() + "Z", "blockNumber": block,
            "blockHash": block_hash}


def test_the_view_holds_every_stored_transfer_as_the_api_serves_it(seeded):
    app, url = seeded
    with psycopg.connect(url) as conn:
        conn.execute("SET TIME ZONE 'Asia/Tokyo'")  # block_timestamp is UTC whatever the session's zone
        rows = conn.execute("SELECT * FROM token_transfers").fetchall()
    api = [{key: item[key] for key in _as_item(rows[0])} for item in _api_items(app.test_client())]
    assert len(rows) == len(api) == 52
    key = lambda item: (item["chainId"], item["blockNumber"], item["logIndex"])  # noqa: E731
    assert sorted(map(_as_item, rows), key=key) == sorted(api, key=key)
    edge = next(row for row in rows if row[6] == MAX_LOG_INDEX)
    assert edge[4] == UINT256_MAX and edge[7].isoformat() == "2106-02-07T06:28:15"
    assert all(text == text.lower() and text.startswith("0x") for row in rows for text in (*row[1:4], row[5]))
    assert sum(row[9] is None for row in rows) == 1


def test_the_view_has_ethereum_etl_column_names_and_types(seeded):
    _, url = seeded
    with psycopg.connect(url) as conn:
        columns = conn.execute(
            "SELECT column_name, CASE WHEN data_type = 'numeric'"
            " THEN format('numeric(%s,%s)', numeric_precision, numeric_scale) ELSE data_type END"
            " FROM information_schema.columns WHERE table_name = 'token_transfers' ORDER BY ordinal_position"
        ).fetchall()
    assert columns == COLUMNS
