"""GET /api/transfers against a real Postgres: contract shape, order, paging, filters, errors."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from tests.api_support import ALICE, BOB, CAROL, make_config, migrated, transfer, write
from transfer_daemon.api import create_app
from transfer_daemon.model import iso_utc
from transfer_daemon.state import pid_alive


@pytest.fixture
def seeded(make_database, tmp_path):
    """Chain 1: 30 transfers (n = 0..29); chain 25: 20 transfers interleaved in time."""
    url = migrated(make_database())
    write(url, 1, [transfer(1, n, sender=CAROL if n % 10 == 0 else ALICE) for n in range(30)])
    write(url, 25, [transfer(25, n, ts=transfer(1, n).time_stamp + 30) for n in range(20)])
    app = create_app(make_config(tmp_path), url)
    yield app, url
    app.extensions["transfer_daemon"].close()


@pytest.fixture
def client(seeded):
    return seeded[0].test_client()


def keys(items):
    return [(i["chainId"], i["blockNumber"], i["logIndex"]) for i in items]


def test_single_chain_page_has_the_contract_shape(client):
    body = client.get("/api/transfers?chainId=1&pageSize=5").get_json()
    assert set(body) == {"chainId", "items", "page", "pageSize", "nextCursor", "source", "lastIngestedAt",
                         "ingestLagSeconds", "stale", "chains"}
    assert (body["chainId"], body["page"], body["pageSize"], body["source"]) == (1, 1, 5, "store")
    assert body["items"][0] == transfer(1, 29).to_api()
    assert [i["blockNumber"] for i in body["items"]] == [129, 128, 127, 126, 125]
    assert set(body["chains"]) == {"1"} and body["chains"]["1"]["lastIngestedAt"] == body["lastIngestedAt"]
    assert isinstance(body["ingestLagSeconds"], int) and body["stale"] is False
    assert body["nextCursor"]


def test_aggregate_merges_chains_in_time_order(client):
    body = client.get("/api/transfers?pageSize=4").get_json()
    assert body["chainId"] == 0 and set(body["chains"]) == {"1", "25"}
    assert keys(body["items"]) == [(1, 129, 0), (1, 128, 0), (1, 127, 0), (1, 126, 0)]
    body = client.get("/api/transfers?chainId=0&page=3&pageSize=4").get_json()
    stamps = [i["timeStamp"] for i in body["items"]]
    assert stamps == sorted(stamps, reverse=True)
    assert {i["chainId"] for i in body["items"]} == {1, 25}


@pytest.mark.parametrize("sort", ["desc", "asc"])
def test_cursor_walks_every_row_once_in_order(client, sort):
    seen, cursor, pages = [], None, 0
    while True:
        url = f"/api/transfers?pageSize=7&sort={sort}" + (f"&cursor={cursor}" if cursor else "")
        body = client.get(url).get_json()
        seen += body["items"]
        cursor, pages = body["nextCursor"], pages + 1
        assert body["page"] == (1 if pages == 1 else None)
        if not cursor:
            break
    assert len(seen) == 50 and len(set(keys(seen))) == 50
    order = [(i["timeStamp"], i["blockNumber"], i["logIndex"]) for i in seen]
    assert order == sorted(order, reverse=(sort == "desc"))


def test_page_numbers_match_the_cursor_walk(client):
    by_page = client.get("/api/transfers?chainId=1&page=2&pageSize=10").get_json()["items"]
    first = client.get("/api/transfers?chainId=1&pageSize=10").get_json()
    by_cursor = client.get(f"/api/transfers?chainId=1&pageSize=10&cursor={first['nextCursor']}").get_json()["items"]
    assert keys(by_page) == keys(by_cursor) and len(by_page) == 10


@pytest.mark.parametrize("query,expected", [
    ("address=0x" + CAROL.hex(), [0, 10, 20]),
    ("from=0x" + CAROL.hex(), [0, 10, 20]),
    ("to=0x" + BOB.hex() + "&fromBlock=125&toBlock=127", [25, 26, 27]),
    ("address=0x" + ALICE.hex().upper() + "&toBlock=102", [1, 2]),
    (f"since={iso_utc(transfer(1, 27).time_stamp)}", [27, 28, 29]),
    (f"until={transfer(1, 1).time_stamp}", [0, 1]),
    ("contract=0x" + "aa" * 20 + "&fromBlock=128", [28, 29]),
    ("contract=0x" + "bb" * 20, []),
])
def test_filters(client, query, expected):
    body = client.get(f"/api/transfers?chainId=1&sort=asc&pageSize=100&{query}").get_json()
    assert [i["blockNumber"] - 100 for i in body["items"]] == expected


def test_unknown_chain_is_a_json_404(client):
    response = client.get("/api/transfers?chainId=56")
    assert response.status_code == 404 and response.get_json()["error"]["code"] == "unknown_chain"


@pytest.mark.parametrize("query,parameter", [
    ("page=1&cursor=abc", "cursor"), ("pageSize=101", "pageSize"), ("page=0", "page"),
    ("chainId=1&chainId=25", "chainId"), ("limit=5", "limit"), ("sort=up", "sort"),
])
def test_bad_parameters_are_400_naming_the_parameter(client, query, parameter):
    response = client.get(f"/api/transfers?{query}")
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "invalid_parameter" and error["parameter"] == parameter and error["message"]


@pytest.mark.parametrize("method,path,status", [
    ("GET", "/nope", 404), ("POST", "/api/transfers", 405), ("DELETE", "/healthz", 405),
])
def test_routing_errors_are_json(client, method, path, status):
    response = client.open(path, method=method)
    assert response.status_code == status and response.is_json and "error" in response.get_json()


def test_not_migrated_store_is_503_with_retry_after(make_database, tmp_path):
    app = create_app(make_config(tmp_path), make_database())
    response = app.test_client().get("/api/transfers?chainId=1&page=2")
    assert response.status_code == 503 and response.headers["Retry-After"]
    assert response.get_json()["error"]["code"] == "store_not_ready"
    app.extensions["transfer_daemon"].close()


def test_unreachable_database_is_503_not_500(tmp_path):
    app = create_app(make_config(tmp_path), "postgresql://nobody@127.0.0.1:9/none?connect_timeout=1")
    for path in ("/api/transfers", "/readyz", "/api/cache-health"):
        response = app.test_client().get(path)
        assert response.status_code == 503 and response.headers["Retry-After"], path
    app.extensions["transfer_daemon"].close()


def test_connections_the_server_closed_are_replaced_before_use(seeded):
    """A Postgres restart terminates every pooled backend; the next requests get fresh ones, not 503s."""
    import psycopg

    app, url = seeded
    client = app.test_client()
    pool = app.extensions["transfer_daemon"].pool()
    pool.wait()
    assert client.get("/api/transfers?chainId=1&page=2").status_code == 200
    others = "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    with psycopg.connect(url, autocommit=True) as admin:
        pids = [pid for pid, in admin.execute(f"SELECT pid {others}")]
        admin.execute(f"SELECT pg_terminate_backend(pid) {others}")
        deadline = time.monotonic() + 10
        # a restart is over once they are gone: out of pg_stat_activity, and (a server on this host) exited,
        # which is when their sockets close; a backend leaves pg_stat_activity a moment before that
        while admin.execute(f"SELECT count(*) {others}").fetchone()[0] or any(pid_alive(pid) for pid in pids):
            assert time.monotonic() < deadline, "terminated backends never exited"
            time.sleep(0.05)
    assert pool.get_stats()["pool_available"] >= 1  # dead ones still sit in the pool
    for page in (2, 3, 2):
        assert client.get(f"/api/transfers?chainId=1&page={page}&pageSize=5").status_code == 200


def test_pages_run_in_the_query_session_and_every_other_use_in_the_servers_defaults(seeded, tmp_path):
    """A connection takes the API's query settings (resources.query_session) for page queries only."""
    config = make_config(tmp_path)
    app = create_app(replace(config, database=replace(config.database, pool_min=1, pool_max=1)), seeded[1])
    res = app.extensions["transfer_daemon"]
    settings = "SELECT current_setting('plan_cache_mode'), current_setting('jit')"
    try:
        with res.connection() as conn:
            defaults = conn.execute(settings).fetchone()
        assert defaults[0] != "force_generic_plan"
        assert app.test_client().get("/api/transfers?chainId=1&since=0").status_code == 200
        with res.pool().connection() as conn:  # the one pooled connection, as the page query left it
            assert conn.execute(settings).fetchone() == ("force_generic_plan", "off")
        with res.connection() as conn:
            assert conn.execute(settings).fetchone() == defaults
        with res.connection(for_queries=True) as conn:
            assert conn.execute(settings).fetchone() == ("force_generic_plan", "off")
    finally:
        res.close()
