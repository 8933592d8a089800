"""What a request may cost: statements cancelled at api.statement_timeout_s (503 with Retry-After),
health answers reused for a second per process, the status chart's reads bounded."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import psycopg
import pytest

from tests.api_support import make_config, migrated, transfer, write
from transfer_daemon import store
from transfer_daemon.api import create_app
from transfer_daemon.api.resources import ANSWER_TTL_S
from transfer_daemon.api.status_page import SAMPLES, WINDOW_S, lag_series, sample_times

TIMEOUT_S = 0.3


@pytest.fixture
def env(make_database, tmp_path):
    url = migrated(make_database())
    write(url, 1, [transfer(1, n) for n in range(4)])
    write(url, 25, [transfer(25, n) for n in range(2)])
    config = make_config(tmp_path)
    app = create_app(replace(config, api=replace(config.api, statement_timeout_s=TIMEOUT_S)), url)
    yield app, url
    app.extensions["transfer_daemon"].close()


def _locked(url: str, table: str, release_after_s: float = 5.0):
    """A connection holding `table` locked in an open transaction; the lock is taken away after
    `release_after_s` (its backend terminated) so that code waiting without a timeout fails, not hangs."""
    locker = psycopg.connect(url)
    locker.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
    pid = locker.info.backend_pid

    def release() -> None:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))

    timer = threading.Timer(release_after_s, release)
    timer.start()
    return locker, timer


def _waiting(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                            " AND wait_event_type = 'Lock'").fetchone()[0]


@pytest.mark.parametrize("path,table", [("/api/transfers?chainId=1&page=2", "transfers"),
                                        ("/api/cache-health", "ingest_cursors")])
def test_a_query_beyond_the_statement_timeout_is_cancelled_and_answered_503(env, path: str, table: str) -> None:
    app, url = env
    locker, timer = _locked(url, table)
    try:
        started = time.monotonic()
        response = app.test_client().get(path)
        elapsed = time.monotonic() - started
        waiting = _waiting(url)
    finally:
        timer.cancel()
        locker.close()
    assert response.status_code == 503 and response.headers["Retry-After"] and response.is_json
    assert TIMEOUT_S <= elapsed < 3 and waiting == 0  # Postgres cancelled the statement itself
    body = response.get_json()
    if path.startswith("/api/transfers"):
        assert body["error"]["code"] == "query_timeout"
    else:
        assert body["status"] == "down" and "statement_timeout" in body["store"]["error"]
    # the pool's connections serve the next request
    assert app.test_client().get("/api/transfers?chainId=1&page=2").status_code == 200


def test_health_answers_are_reused_for_a_second_by_each_process(env) -> None:
    app, url = env
    res = app.extensions["transfer_daemon"]
    now = [1000.0]
    res.clock = lambda: now[0]
    client = app.test_client()
    first = client.get("/api/cache-health").get_json()
    assert "5 rows" not in client.get("/status").get_data(as_text=True)
    write(url, 1, [transfer(1, n) for n in range(4, 9)])  # its event says "5 rows"
    now[0] += ANSWER_TTL_S * 0.9
    assert client.get("/api/cache-health").get_json() == first
    assert "5 rows" not in client.get("/status").get_data(as_text=True)
    now[0] += ANSWER_TTL_S * 0.2
    assert client.get("/api/cache-health").get_json()["chains"]["1"]["rows"] == 9
    assert "5 rows" in client.get("/status").get_data(as_text=True)


def test_the_lag_chart_reads_one_index_entry_per_point_however_many_events(database_url: str) -> None:
    now = time.time()
    with psycopg.connect(database_url, autocommit=True) as conn:
        # an ingest every 6 s for two days, and other events between them; half a second off the
        # sample times, which fall on multiples of 6 s (an ingest stored at a sample's very instant
        # could round a microsecond past it)
        conn.execute("INSERT INTO ingest_events (chain_id, status, occurred_at)"
                     " SELECT 1, CASE WHEN i %% 3 = 0 THEN 'ingested' ELSE 'error' END,"
                     " to_timestamp(%s - 0.5 - i * 2) FROM generate_series(0, 86400) i", (now,))
        conn.execute("ANALYZE ingest_events")
        times = sample_times(now)
        with conn.transaction():
            lasts = store.last_ingests(conn, 1, times)
            read = conn.execute("SELECT seq_tup_read, idx_tup_fetch FROM pg_stat_xact_user_tables"
                                " WHERE relname = 'ingest_events'").fetchone()
    assert len(lasts) == SAMPLES + 1 and all(0 <= t - last < 6 for t, last in zip(times, lasts, strict=True))
    assert read[0] == 0 and read[1] <= 2 * len(times), read
    assert store.last_ingests(psycopg.connect(database_url), 25, times[:2]) == [None, None]


def test_lag_series_is_the_time_since_the_last_ingest_at_each_point() -> None:
    times = sample_times(WINDOW_S * 2)
    lasts = [None, *[t - 30 for t in times[1:]]]
    assert lag_series(times, lasts) == [(times[0], None), *[(t, 30) for t in times[1:]]]
