"""/healthz, /readyz, /api/cache-health (read-only), /metrics, OpenAPI, /status."""

from __future__ import annotations

import json
import os

import psycopg
import pytest

from tests.api_support import make_config, migrated, transfer, write
from transfer_daemon import store
from transfer_daemon.api import create_app
from transfer_daemon.daemon.pidfile import PidFile
from transfer_daemon.model import IngestEvent


@pytest.fixture
def env(make_database, tmp_path):
    url = migrated(make_database())
    config = make_config(tmp_path)
    app = create_app(config, url)
    yield config, url, app
    app.extensions["transfer_daemon"].close()


def test_healthz_needs_nothing_but_the_process(tmp_path):
    app = create_app(make_config(tmp_path), "postgresql://nobody@127.0.0.1:9/none")
    assert app.test_client().get("/healthz").get_json() == {"status": "ok"}


def test_readyz_waits_for_every_chains_first_sync(env):
    config, url, app = env
    client = app.test_client()
    response = client.get("/readyz")
    assert response.status_code == 503 and response.get_json()["chains"] == ["ethereum", "cronos"]
    write(url, 1, [transfer(1, 0)])
    assert client.get("/readyz").get_json()["chains"] == ["cronos"]
    write(url, 25, [], synced_block=50)
    assert client.get("/readyz").status_code == 200


def test_cache_health_reports_each_chain(env):
    config, url, app = env
    write(url, 1, [transfer(1, n) for n in range(4)])
    write(url, 25, [transfer(25, 0)])
    config_dir = config.daemon.data_dir
    os.makedirs(config_dir, exist_ok=True)
    state = {"pid": os.getpid(), "children": {"worker[ethereum]": {"name": "worker[ethereum]", "chain": "ethereum",
                                                                   "pid": 4242, "state": "RUNNING", "restarts": 2}}}
    with open(os.path.join(config_dir, "supervisor-state.json"), "w") as handle:
        json.dump(state, handle)
    pidfile = PidFile(config.daemon.pidfile)  # the state file counts only while its supervisor lives
    pidfile.acquire()
    try:
        body = app.test_client().get("/api/cache-health").get_json()
    finally:
        pidfile.release()
    assert body["store"]["ready"] is True and body["status"] == "ok"
    eth, cro = body["chains"]["1"], body["chains"]["25"]
    assert (eth["rows"], eth["worker"]["state"], eth["worker"]["restarts"]) == (4, "RUNNING", 2)
    assert cro["worker"]["state"] == "unknown" and cro["rows"] == 1
    assert eth["lastSuccess"]["status"] == "ingested" and eth["lastError"] is None
    assert eth["backfill"]["syncedBlock"] == 103 and eth["alerts"] == []
    assert set(body["cache"]) == {"hits", "misses", "hitRatio"}


def test_error_burst_shows_an_alert_and_no_get_writes(env):
    config, url, app = env
    write(url, 1, [transfer(1, 0)])
    with psycopg.connect(url, autocommit=True) as conn:
        for i in range(6):
            store.record_event(conn, IngestEvent(1, "error", f"HTTP 502 #{i}"))
        before = conn.execute("SELECT count(*), max(id) FROM ingest_events").fetchone()
    client = app.test_client()
    for _ in range(3):
        body = client.get("/api/cache-health").get_json()
        assert body["chains"]["1"]["alerts"] == ["errors"] and body["status"] == "degraded"
        assert body["chains"]["1"]["errorsLastMinute"] == 6
        assert client.get("/status").status_code == 200
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*), max(id) FROM ingest_events").fetchone() == before


def test_api_connections_are_read_only(env):
    config, url, app = env
    with app.extensions["transfer_daemon"].connection() as conn:
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            store.record_event(conn, IngestEvent(1, "error", "a write through the API's pool"))


def test_metrics_expose_api_latency_and_cache_counters(env):
    config, url, app = env
    client = app.test_client()
    client.get("/api/transfers?chainId=1")
    text = client.get("/metrics").get_data(as_text=True)
    assert 'transfers_api_request_seconds_bucket{le="0.01",route="/api/transfers",status="200"}' in text \
        or 'route="/api/transfers"' in text
    assert "transfers_cache_requests_total" in text


def test_openapi_describes_every_route(env):
    config, url, app = env
    spec = app.test_client().get("/api/openapi.json").get_json()
    routes = {r.rule for r in app.url_map.iter_rules() if r.endpoint != "static"}
    assert routes == set(spec["paths"])
    names = {p["name"] for p in spec["paths"]["/api/transfers"]["get"]["parameters"]}
    assert names == {"chainId", "page", "pageSize", "cursor", "address", "from", "to", "contract",
                     "fromBlock", "toBlock", "since", "until", "sort"}


def test_status_page_shows_chains_chart_and_events(env):
    config, url, app = env
    write(url, 1, [transfer(1, 0)])
    response = app.test_client().get("/status")
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and response.mimetype == "text/html"
    assert "<svg" in html and "<polyline" in html and "ethereum" in html and "cronos" in html
    assert "1 rows" in html
