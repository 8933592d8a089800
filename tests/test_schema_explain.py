"""EXPLAIN ANALYZE of every API query shape on enough rows (ANALYZEd) for the planner to choose
honestly: transfers are only read through indexes, and only a page's worth of rows is touched."""

from __future__ import annotations

import time
import uuid
from dataclasses import replace

import psycopg
import pytest
from conftest import _with_dbname
from psycopg import sql as pgsql

from transfer_daemon import store
from transfer_daemon.api.resources import query_session
from transfer_daemon.db import partitions
from transfer_daemon.db.migrate import migrate
from transfer_daemon.store import TransferQuery
from transfer_daemon.store.queries import _PLACEHOLDER, build_sql

ROWS = {1: 140_000, 25: 60_000}
NOW = int(time.time())
TOKEN = {1: [bytes([1, k]) * 10 for k in range(3)], 25: [bytes([25, k]) * 10 for k in range(2)]}

LOAD = """
INSERT INTO transfers (time_stamp, block_number, stream_id, log_index, tx_hash, from_address, to_address, value,
                       gas_used, gas_price, method_id)
SELECT %(now)s - (%(n)s - i) / 10 * %(bt)s, 5000000 + i / 10, (%(sids)s::int[])[1 + i %% cardinality(%(sids)s::int[])],
       (i %% 10)::int, sha256(int8send(i * 100 + %(chain)s)),
       substr(sha256(int8send((3000 * random() ^ 3)::bigint)), 1, 20),
       substr(sha256(int8send((3000 * random() ^ 2)::bigint)), 1, 20),
       floor(random() * 1e24)::numeric, td_uint_bytes(50000), td_uint_bytes(20000000000), x'a9059cbb'::integer
FROM generate_series(0, %(n)s - 1) i
"""

#: a wallet on one side of many rows of chain 1's first two streams, of a handful on chain 25: rows of
#: their own (log indexes 10-19, which LOAD leaves free), one every BUSY_EVERY[chain] of LOAD's
BUSY = bytes.fromhex("b5" * 16 + "0badf00d")
BUSY_EVERY = {1: 5, 25: 10_000}
LOAD_BUSY = """
INSERT INTO transfers (time_stamp, block_number, stream_id, log_index, tx_hash, from_address, to_address, value,
                       gas_used, gas_price, method_id)
SELECT %(now)s - (%(n)s - i) / 10 * %(bt)s, 5000000 + i / 10, (%(sids)s::int[])[1 + i %% cardinality(%(sids)s::int[])],
       10 + (i %% 10)::int, sha256(int8send(-i * 100 - %(chain)s)),
       CASE WHEN i %% 2 = 0 THEN %(busy)s ELSE substr(sha256(int8send(i)), 1, 20) END,
       CASE WHEN i %% 2 = 1 THEN %(busy)s ELSE substr(sha256(int8send(i)), 1, 20) END,
       i, td_uint_bytes(50000), td_uint_bytes(20000000000), x'a9059cbb'::integer
FROM generate_series(0, %(n)s - 1, %(every)s) i
"""


@pytest.fixture(scope="module")
def big(pg_server_url: str):
    name = f"td_test_explain_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_server_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = _with_dbname(pg_server_url, name)
    migrate(url)
    with psycopg.connect(url, autocommit=True) as conn:
        for chain, n in ROWS.items():
            bt = 12 if chain == 1 else 6
            partitions.ensure_months(conn, NOW - n // 10 * bt - 86400, NOW)
            conn.execute("INSERT INTO streams (chain_id, contract) SELECT %s, unnest(%s::bytea[])",
                         (chain, TOKEN[chain]))
            sids = [s for s, in conn.execute("SELECT stream_id FROM streams WHERE chain_id = %s", (chain,))]
            conn.execute(LOAD, {"now": NOW, "n": n, "bt": bt, "sids": sids, "chain": chain})
            conn.execute(LOAD_BUSY, {"now": NOW, "n": n, "bt": bt, "sids": sids[:2], "every": BUSY_EVERY[chain],
                                     "busy": BUSY, "chain": chain})
            conn.execute("INSERT INTO blocks SELECT %s, block_number, min(time_stamp), NULL FROM transfers"
                         " WHERE stream_id = ANY(%s) GROUP BY block_number", (chain, sids))
        conn.execute("VACUUM ANALYZE")
        yield conn
    with psycopg.connect(pg_server_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _nodes(plan: dict):
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def _explain(conn: psycopg.Connection, query: TransferQuery) -> dict:
    sql, params = build_sql(query)
    return conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params).fetchone()[0][0]["Plan"]


def _hot_address(conn: psycopg.Connection) -> bytes:
    return bytes(conn.execute("SELECT substr(sha256(int8send(0::bigint)), 1, 20)").fetchone()[0])


def _deep_cursor(conn: psycopg.Connection) -> str:
    cursor = None
    for _ in range(50):
        cursor = store.query_transfers(conn, TransferQuery((1,), page_size=100, cursor=cursor)).next_cursor
    return cursor


SHAPES = {
    "chain desc": lambda c: TransferQuery((1,)),
    "chain asc": lambda c: TransferQuery((25,), sort="asc"),
    "aggregate desc": lambda c: TransferQuery(()),
    "aggregate asc": lambda c: TransferQuery((), sort="asc"),
    "cursor 5,000 deep": lambda c: TransferQuery((1,), cursor=_deep_cursor(c)),
    "page 3": lambda c: TransferQuery((), page=3),
    "address": lambda c: TransferQuery((), address=_hot_address(c)),
    "address asc on a chain": lambda c: TransferQuery((1,), address=_hot_address(c), sort="asc"),
    "from": lambda c: TransferQuery((), from_address=_hot_address(c)),
    "to": lambda c: TransferQuery((25,), to_address=_hot_address(c)),
    "contract": lambda c: TransferQuery((1,), contract=TOKEN[1][2]),
    "block range": lambda c: TransferQuery((1,), from_block=5_005_000, to_block=5_008_000),
    "block range aggregate asc": lambda c: TransferQuery((), from_block=5_004_000, sort="asc"),
    "since/until": lambda c: TransferQuery((), since=NOW - 200_000, until=NOW - 100_000),
    "address + since": lambda c: TransferQuery((), address=_hot_address(c), until=NOW - 100_000),
}


@pytest.mark.parametrize("shape", SHAPES)
def test_every_query_shape_reads_transfers_by_index_and_only_a_page_of_rows(big, shape: str) -> None:
    plan = _explain(big, SHAPES[shape](big))
    scans = [n for n in _nodes(plan) if n.get("Relation Name", "").startswith("transfers_p")]
    assert scans, "the plan must read transfers"
    for scan in scans:
        rows = scan["Actual Rows"] * scan["Actual Loops"] + scan.get("Rows Removed by Filter", 0)
        # a sequential scan only of an empty partition (the months created ahead)
        assert scan["Node Type"] != "Seq Scan" or rows == 0, (shape, scan["Relation Name"])
    touched = sum(n["Actual Rows"] * n["Actual Loops"] + n.get("Rows Removed by Filter", 0)
                  + n.get("Rows Removed by Index Recheck", 0) for n in scans)
    assert touched <= 2_000, (shape, touched)
    for node in _nodes(plan):
        if node["Node Type"] == "Sort":  # only the few candidate rows are ever sorted
            assert all(child["Actual Rows"] * child["Actual Loops"] <= 600 for child in node["Plans"]), shape
    assert plan["Actual Rows"] == 26  # a full page plus the row that proves a next page exists


def test_a_hot_address_is_read_in_time_order_from_the_address_index(big) -> None:
    plan = _explain(big, TransferQuery((), from_address=_hot_address(big)))
    scans = [n for n in _nodes(plan) if n.get("Relation Name", "").startswith("transfers_p") and n["Actual Rows"]]
    assert [n["Node Type"] for n in scans] == ["Index Scan"]
    assert scans[0]["Index Name"].endswith("td_addr64_stream_id_td_ts32_idx")
    assert scans[0]["Actual Rows"] <= 100


def _explain_as_served(conn: psycopg.Connection, query: TransferQuery, options: str = "ANALYZE") -> dict:
    """EXPLAIN of the plan the API runs: in its query session (resources.query_session), a statement with
    parameters is prepared by psycopg and planned once without its values; one without is planned per call."""
    sql, params = build_sql(query)
    query_session(conn, True)
    if params is None:
        return conn.execute(f"EXPLAIN ({options}, FORMAT JSON) " + sql, prepare=False).fetchone()[0][0]
    conn.execute(sql, params, prepare=True).fetchall()
    names = list(dict.fromkeys(_PLACEHOLDER.findall(sql)))  # psycopg numbers them as they first occur
    numbered = _PLACEHOLDER.sub(lambda m: f"${names.index(m.group(1)) + 1}", sql)
    name, generic_before = conn.execute("SELECT name, generic_plans FROM pg_prepared_statements WHERE statement = %s",
                                        (numbered,), prepare=False).fetchone()
    args = pgsql.SQL(", ").join(pgsql.Literal(params[n]) for n in names)
    explain = pgsql.SQL("EXPLAIN ({}, FORMAT JSON) EXECUTE {}").format(pgsql.SQL(options), pgsql.Identifier(name))
    if names:
        explain = pgsql.SQL("{}({})").format(explain, args)
    plan = conn.execute(explain, prepare=False).fetchone()[0][0]
    generic_after = conn.execute("SELECT generic_plans FROM pg_prepared_statements WHERE name = %s", (name,),
                                 prepare=False).fetchone()[0]
    assert generic_after > generic_before, "the statement must run on its generic plan"
    return plan


def _deep(conn: psycopg.Connection, query: TransferQuery) -> TransferQuery:
    """`query` continued 3,000 rows deep by cursor."""
    for _ in range(30):
        query = replace(query, cursor=store.query_transfers(conn, replace(query, page_size=100)).next_cursor)
    return query


#: the values a plan made without them could be worst for: unbounded, beyond the stored rows, a hot address
EXTREMES = {
    **SHAPES,
    "since 0": lambda c: TransferQuery((1,), since=0),
    "since 0 aggregate": lambda c: TransferQuery((), since=0),
    "until far future": lambda c: TransferQuery((1,), until=253402300799),
    "since 0 until far future asc": lambda c: TransferQuery((), since=0, until=253402300799, sort="asc"),
    "a narrow time window": lambda c: TransferQuery((), since=NOW - 50_000, until=NOW - 49_000),
    "blocks 0 to max asc": lambda c: TransferQuery((), from_block=0, to_block=2**63 - 1, sort="asc"),
    "blocks beyond the stored ones": lambda c: TransferQuery((), from_block=10**12),
    "blocks from 0": lambda c: TransferQuery((25,), from_block=0),
    "deep cursor asc aggregate": lambda c: _deep(c, TransferQuery((), sort="asc")),
    "hot address since 0": lambda c: TransferQuery((), address=_hot_address(c), since=0),
    "hot from in a time window": lambda c: TransferQuery((), from_address=_hot_address(c), since=NOW - 150_000,
                                                         until=NOW - 50_000),
    "hot address deep cursor": lambda c: _deep(c, TransferQuery((), address=_hot_address(c))),
    "hot to deep cursor asc": lambda c: _deep(c, TransferQuery((), to_address=_hot_address(c), sort="asc")),
    "hot address blocks from 0": lambda c: TransferQuery((), address=_hot_address(c), from_block=0),
    "absent address": lambda c: TransferQuery((), address=bytes(20)),
    "deep cursor since 0": lambda c: _deep(c, TransferQuery((1,), since=0)),
    "deep cursor asc until far future": lambda c: _deep(c, TransferQuery((25,), sort="asc", until=253402300799)),
}


@pytest.mark.parametrize("shape", EXTREMES)
def test_every_query_shape_as_served_reads_only_a_page_of_rows_for_any_values(big, shape: str) -> None:
    plan = _explain_as_served(big, EXTREMES[shape](big))["Plan"]
    # blocks too: a plan that joins the page's blocks by scanning all of them is as bad
    scans = [n for n in _nodes(plan) if n.get("Relation Name", "").startswith(("transfers_p", "blocks"))]
    touched = sum(n["Actual Rows"] * n["Actual Loops"] + n.get("Rows Removed by Filter", 0)
                  + n.get("Rows Removed by Index Recheck", 0) for n in scans)
    assert touched <= 2_000, (shape, touched)
    for node in _nodes(plan):
        if node["Node Type"] == "Sort":
            assert all(child["Actual Rows"] * child["Actual Loops"] <= 600 for child in node["Plans"]), shape


def _collider() -> bytes:
    """An address ending like BUSY: it shared BUSY's address-index key before migration 0008."""
    return bytes.fromhex("c0" * 16) + BUSY[-4:]


#: pages of addresses that look like the busy wallet's, or of the busy wallet where it has few rows
BUSY_SHAPES = {
    "collider": lambda c: TransferQuery((), address=_collider()),
    "collider from on chain 1": lambda c: TransferQuery((1,), from_address=_collider()),
    "collider to asc since 0": lambda c: TransferQuery((), to_address=_collider(), sort="asc", since=0),
    "busy on chain 25": lambda c: TransferQuery((25,), address=BUSY),
    "busy from on chain 25 asc": lambda c: TransferQuery((25,), from_address=BUSY, sort="asc"),
    "busy on chain 25 until far future": lambda c: TransferQuery((25,), address=BUSY, until=2**40),
    "busy in a quiet contract": lambda c: TransferQuery((1,), address=BUSY, contract=TOKEN[1][2]),
    "busy in a quiet contract, a window": lambda c: TransferQuery((), to_address=BUSY, contract=TOKEN[1][2],
                                                                  since=NOW - 400_000, until=NOW),
    "busy on chain 25, blocks": lambda c: TransferQuery((25,), address=BUSY, from_block=0, to_block=2**63 - 1),
}


def _buffers(plan: dict) -> int:
    return plan["Shared Hit Blocks"] + plan["Shared Read Blocks"]


@pytest.mark.parametrize("shape", BUSY_SHAPES)
def test_a_page_costs_no_more_buffers_however_busy_a_lookalike_or_other_chain_wallet_is(big, shape: str) -> None:
    """EXPLAIN (ANALYZE, BUFFERS) as served: as few buffers as a page of an address nobody uses, while
    the busy wallet has 28,000 rows in chain 1's first two streams."""
    query = BUSY_SHAPES[shape](big)
    busy_rows = big.execute("SELECT count(*) FROM transfers WHERE %s IN (from_address, to_address)", (BUSY,))
    assert busy_rows.fetchone()[0] > 20_000
    plan = _explain_as_served(big, query, "ANALYZE, BUFFERS")["Plan"]
    nobody = _explain_as_served(big, replace(query, **{k: bytes(20) for k in ("address", "from_address",
                                                                               "to_address") if getattr(query, k)}),
                                "ANALYZE, BUFFERS")["Plan"]
    assert _buffers(plan) <= _buffers(nobody) + 100 and _buffers(plan) <= 600, (shape, _buffers(plan), _buffers(nobody))
