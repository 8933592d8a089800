"""Keyset queries on a real Postgres, checked against a plain Python sort and filter of the rows."""

from __future__ import annotations

import base64
from dataclasses import replace

import psycopg
import pytest
from store_support import make_transfers, sort_key, stream_ids

from transfer_daemon import store
from transfer_daemon.api.resources import query_session
from transfer_daemon.model import iso_utc
from transfer_daemon.store import MAX_OFFSET, TransferQuery
from transfer_daemon.store.queries import _iso_utc

CHAINS = (1, 25)


@pytest.fixture(scope="module")
def loaded(pg_server_url: str):
    """Two chains, 3 contracts each, 7 rows per block, 3 blocks per second, 40 addresses."""
    import uuid

    from conftest import _with_dbname

    from transfer_daemon.db.migrate import migrate

    name = f"td_test_query_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_server_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = _with_dbname(pg_server_url, name)
    migrate(url)
    rows = make_transfers(1, 900) + make_transfers(25, 600, start_block=50_000)
    with psycopg.connect(url, autocommit=True) as conn:
        for chain in CHAINS:
            store.write_batch(conn, chain, [t for t in rows if t.chain_id == chain], cursor=None, event=None)
        yield conn, rows, stream_ids(conn)
    with psycopg.connect(pg_server_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _walk(conn: psycopg.Connection, query: TransferQuery) -> list:
    """Every page through next_cursor."""
    seen, cursor = [], query.cursor
    for _ in range(10_000):
        page = store.query_transfers(conn, TransferQuery(**{**query.__dict__, "cursor": cursor}))
        seen.extend(page.items)
        cursor = page.next_cursor
        if cursor is None:
            return seen
    raise AssertionError("pagination did not end")


def _expected(rows: list, streams: dict, sort: str, keep=lambda t: True) -> list:
    return sorted((t for t in rows if keep(t)), key=lambda t: sort_key(t, streams), reverse=sort == "desc")


@pytest.mark.parametrize("sort", ["desc", "asc"])
@pytest.mark.parametrize("chain_ids", [(1,), (25,), ()])
def test_cursor_pages_visit_every_row_once_in_order(loaded, sort: str, chain_ids: tuple) -> None:
    conn, rows, streams = loaded
    seen = _walk(conn, TransferQuery(chain_ids, page_size=37, sort=sort))
    assert seen == _expected(rows, streams, sort, lambda t: not chain_ids or t.chain_id in chain_ids)


def _filters(rows: list) -> list[tuple[dict, object]]:
    a, b = rows[3].from_address, rows[8].to_address
    contract = rows[5].contract_address
    t0 = rows[200].time_stamp

    def touches(t, who):
        return who in (t.from_address, t.to_address)

    return [
        ({"address": a}, lambda t: a in (t.from_address, t.to_address)),
        ({"from_address": a}, lambda t: t.from_address == a),
        ({"to_address": b}, lambda t: t.to_address == b),
        ({"from_address": a, "to_address": b}, lambda t: t.from_address == a and t.to_address == b),
        ({"address": a, "to_address": b}, lambda t: t.to_address == b and a in (t.from_address, t.to_address)),
        ({"contract": contract}, lambda t: t.contract_address == contract),
        ({"contract": contract, "address": b}, lambda t: t.contract_address == contract and touches(t, b)),
        ({"from_block": 1010, "to_block": 1050}, lambda t: 1010 <= t.block_number <= 1050),
        ({"from_block": 50_010, "address": a}, lambda t: t.block_number >= 50_010 and touches(t, a)),
        ({"since": t0, "until": t0 + 20}, lambda t: t0 <= t.time_stamp <= t0 + 20),
        ({"since": t0, "from_address": a}, lambda t: t.time_stamp >= t0 and t.from_address == a),
        ({"to_block": 999}, lambda t: t.block_number <= 999),
        # values in the statement's text (see store.queries.build_sql): bytes and every bound as literals
        ({"contract": contract, "since": t0, "until": t0 + 40},
         lambda t: t.contract_address == contract and t0 <= t.time_stamp <= t0 + 40),
        ({"address": a, "since": t0 - 400, "until": t0 + 400},
         lambda t: touches(t, a) and t0 - 400 <= t.time_stamp <= t0 + 400),
        # times beyond the address index's time key (1970..2106), as the API passes them on
        ({"address": a, "since": -86400, "until": 2**40}, lambda t: touches(t, a)),
        ({"from_address": a, "since": 2**40}, lambda t: False),
    ]


@pytest.mark.parametrize("sort", ["desc", "asc"])
@pytest.mark.parametrize("case", range(16))
@pytest.mark.parametrize("chain_ids", [(1,), ()])
@pytest.mark.parametrize("api_session", [False, True])
def test_every_filter_matches_a_plain_filter_of_the_rows(loaded, sort: str, case: int, chain_ids: tuple,
                                                         api_session: bool) -> None:
    """In the server's default session and in the API's (statements planned once, see query_session)."""
    conn, rows, streams = loaded
    params, keep = _filters(rows)[case]
    query_session(conn, api_session)
    seen = _walk(conn, TransferQuery(chain_ids, page_size=9, sort=sort, **params))
    expected = _expected(rows, streams, sort, lambda t: (not chain_ids or t.chain_id in chain_ids) and keep(t))
    assert seen == expected


def test_page_numbers_agree_with_cursor_pages_and_are_bounded(loaded) -> None:
    conn, rows, streams = loaded
    by_cursor = _walk(conn, TransferQuery((), page_size=25))
    by_page = []
    for page in range(1, 5):
        by_page.extend(store.query_transfers(conn, TransferQuery((), page_size=25, page=page)).items)
    assert by_page == by_cursor[:100]
    with pytest.raises(ValueError):
        store.query_transfers(conn, TransferQuery((), page_size=100, page=MAX_OFFSET // 100 + 1))


def test_items_carry_chain_contract_and_block_hash(loaded) -> None:
    conn, rows, streams = loaded
    item = store.query_transfers(conn, TransferQuery((25,), page_size=1)).items[0]
    newest = _expected(rows, streams, "desc", lambda t: t.chain_id == 25)[0]
    assert item == newest and item.block_hash == newest.block_number.to_bytes(32, "big")


@pytest.mark.parametrize("sort", ["desc", "asc"])
def test_cursor_survives_inserts_between_pages(database_url: str, sort: str) -> None:
    rows = make_transfers(1, 400)
    first, later = rows[::2], rows[1::2]  # the later rows land on both sides of the cursor
    with psycopg.connect(database_url, autocommit=True) as conn:
        store.write_batch(conn, 1, first, cursor=None, event=None)
        page = store.query_transfers(conn, TransferQuery((1,), page_size=50, sort=sort))
        store.write_batch(conn, 1, later, cursor=None, event=None)
        streams = stream_ids(conn)
        rest = _walk(conn, TransferQuery((1,), page_size=50, sort=sort, cursor=page.next_cursor))
    everything = _expected(rows, streams, sort)
    after = everything[everything.index(page.items[-1]) + 1:]
    assert page.items == _expected(first, streams, sort)[:50]
    assert rest == after and len(rest) > 250


@pytest.mark.parametrize("bad", [
    "", "not a cursor", "A" * 500, "%%%%",
    base64.urlsafe_b64encode(b"\x01" * 66).decode().rstrip("="),
])
def test_bad_cursor_raises_value_error(loaded, bad: str) -> None:
    conn, _, _ = loaded
    with pytest.raises(ValueError):
        store.query_transfers(conn, TransferQuery((1,), cursor=bad))


def test_tampered_or_wrong_direction_cursor_raises_value_error(loaded) -> None:
    conn, _, _ = loaded
    cursor = store.query_transfers(conn, TransferQuery((1,), page_size=5)).next_cursor
    raw = bytearray(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    raw[5] ^= 1
    with pytest.raises(ValueError):
        store.query_transfers(conn, TransferQuery((1,), cursor=base64.urlsafe_b64encode(bytes(raw)).decode()))
    with pytest.raises(ValueError):
        store.query_transfers(conn, TransferQuery((1,), sort="asc", cursor=cursor))


def test_unknown_chain_gives_an_empty_page(loaded) -> None:
    conn, _, _ = loaded
    assert store.query_transfers(conn, TransferQuery((999,))) == store.TransferPage([], None)



def _edge_rows() -> list:
    """Values at the ends of their ranges, absent gas fields, block hash and method id."""
    from transfer_daemon.model import UINT256_MAX

    base = make_transfers(1, 6, seed=5, per_block=1)  # a block each: a block's hash is per block
    return [
        replace(base[0], value=UINT256_MAX, gas_used=UINT256_MAX, gas_price=0),
        replace(base[1], value=0, gas_used=None, gas_price=None, method_id=None),
        replace(base[2], block_hash=None, method_id="0x00000000"),
        replace(base[3], value=10**30, gas_used=0),
        *base[4:],
    ]


@pytest.mark.parametrize("sort", ["desc", "asc"])
def test_api_items_are_the_transfers_to_api(database_url: str, sort: str) -> None:
    rows = _edge_rows()
    with psycopg.connect(database_url, autocommit=True) as conn:
        store.write_batch(conn, 1, rows, cursor=None, event=None)
        read = store.query_transfers(conn, TransferQuery((1,), page_size=10, sort=sort)).items
        for query in (TransferQuery((1,), page_size=4, sort=sort), TransferQuery((), page_size=10, sort=sort),
                      TransferQuery((), page_size=10, sort=sort, address=rows[1].to_address)):
            page = store.query_transfers(conn, query)
            items, next_cursor = store.query_items(conn, query)
            assert page.items and items == [t.to_api() for t in page.items] and next_cursor == page.next_cursor
    assert sorted(read, key=lambda t: t.tx_hash) == sorted(rows, key=lambda t: t.tx_hash)


def test_a_stream_created_after_a_query_is_in_scope_at_once(database_url: str) -> None:
    new_token = b"\x09" * 20
    first = make_transfers(1, 40, contracts=1)
    later = [replace(t, contract_address=new_token) for t in make_transfers(1, 40, seed=2, start_block=2000)]
    with psycopg.connect(database_url, autocommit=True) as conn:
        store.write_batch(conn, 1, first, cursor=None, event=None)
        assert len(store.query_items(conn, TransferQuery((1,), page_size=100))[0]) == 40
        assert store.query_items(conn, TransferQuery((1,), contract=new_token)) == ([], None)
        store.write_batch(conn, 1, later, cursor=None, event=None)
        items, _ = store.query_items(conn, TransferQuery((1,), page_size=100))
        only_new, _ = store.query_items(conn, TransferQuery((), page_size=100, contract=new_token))
    assert len(items) == 80 and len(only_new) == 40
    assert {i["contractAddress"] for i in only_new} == {"0x" + new_token.hex()}


@pytest.mark.parametrize("unix", [0, 59, 60, 3599, 3600, 86399, 86400, 951782399, 951868800, 1_714_000_123,
                                  4_102_444_800, 253402300799])
def test_item_times_are_iso_utc_at_every_boundary(unix: int) -> None:
    assert _iso_utc(unix) == iso_utc(unix)
