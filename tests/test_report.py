"""One per-chain report, three views: `status --json`, /api/cache-health and /status show the same
figures for one fixed store state."""

from __future__ import annotations

import os
import time
from pathlib import Path

import psycopg
import pytest
from api_support import CONTRACT_A, CONTRACT_B, migrated, transfer

from transfer_daemon import store
from transfer_daemon.api import create_app
from transfer_daemon.config import Config, parse_config
from transfer_daemon.daemon.pidfile import PidFile
from transfer_daemon.model import Cursor, IngestEvent
from transfer_daemon.report import status_document
from transfer_daemon.state import STATE_FILENAME, write_state

#: figures that do not depend on the instant each view was asked
STABLE = ("id", "name", "kind", "dataSource", "worker", "queuedJobs", "rows", "oldest", "newest", "backfill",
          "lastIngestedAt", "stale", "history", "lastSuccess", "lastError", "errorsLastMinute", "alerts")


def _config(root: Path, url: str) -> Config:
    return parse_config({
        "daemon": {"data_dir": str(root), "log_file": ""},
        "database": {"url": url},
        "chains": [
            {"id": 1, "name": "ethereum", "kind": "etherscan", "base_url": "http://127.0.0.1:9/api",
             "contracts": [CONTRACT_A]},
            {"id": 25, "name": "cronos", "kind": "rpc_logs", "rpc_url": "http://127.0.0.1:9/rpc",
             "contracts": [CONTRACT_B]},
        ],
    }, {})


def _seed(url: str) -> None:
    now = int(time.time())
    rows = [transfer(1, n, ts=now - 3600 + 60 * n) for n in range(7)]
    with psycopg.connect(url, autocommit=True) as conn:
        store.write_batch(conn, 1, rows, cursor=Cursor(1, synced_block=110, backfilled_block=100,
                                                       backfill_target_block=90, backfill_done=False),
                          event=IngestEvent(1, "ingested", "7 rows", rows=7), synced_to_head=True)
        for n in range(3):
            store.record_event(conn, IngestEvent(1, "error", f"HTTP 502 #{n} from http://x/?apikey=SECRETKEY"))


def _publish(root: Path, pidfile: PidFile) -> None:
    worker = {"name": "worker[ethereum]", "chain": "ethereum", "pid": 4242, "state": "RUNNING", "since": 1.0,
              "restarts": 2, "failures": 0, "next_start_at": None, "queued_jobs": 3, "backfill_span": 4,
              "last_exit": {"status": 1, "reason": "exit 1", "at": time.time() - 40}}
    write_state(root / STATE_FILENAME, {"version": 1, "pid": os.getpid(), "state": "running",
                                        "started_at": time.time() - 60, "updated_at": time.time(),
                                        "config": "", "children": {"worker[ethereum]": worker}})


@pytest.fixture
def views(make_database, tmp_path: Path):
    url = migrated(make_database())
    _seed(url)
    config = _config(tmp_path, url)
    pidfile = PidFile(config.daemon.pidfile)
    pidfile.acquire()
    app = create_app(config, url)
    try:
        _publish(tmp_path, pidfile)
        client = app.test_client()
        cli = {c["id"]: c for c in status_document(config)["chains"]}
        health = client.get("/api/cache-health").get_json()
        page = client.get("/status").get_data(as_text=True)
    finally:
        app.extensions["transfer_daemon"].close()
        pidfile.release()
    yield cli, {int(k): v for k, v in health["chains"].items()}, page


def test_status_and_cache_health_show_the_same_figures(views) -> None:
    cli, health, _ = views
    assert set(cli) == set(health) == {1, 25}
    for chain_id in cli:
        assert {k: cli[chain_id][k] for k in STABLE} == {k: health[chain_id][k] for k in STABLE}
        lags = (cli[chain_id]["ingestLagSeconds"], health[chain_id]["ingestLagSeconds"])
        assert lags == (None, None) or abs(lags[0] - lags[1]) < 5
    eth = cli[1]
    assert (eth["rows"], eth["worker"]["state"], eth["worker"]["restarts"], eth["queuedJobs"]) == (7, "RUNNING", 2, 3)
    assert eth["backfill"]["syncedBlock"] == 110 and eth["errorsLastMinute"] == 3
    # blocks 100..90 at the worker's published span of 4 blocks a window
    assert eth["backfill"]["remainingWindows"] == 3 and cli[25]["backfill"]["remainingWindows"] is None
    assert eth["stale"] is False and cli[25]["stale"] is True and cli[25]["ingestLagSeconds"] is None
    assert eth["history"] == {"completeFrom": eth["oldest"]["time"], "complete": False}
    assert eth["lastError"]["message"].endswith("apikey=***") and cli[25]["worker"]["state"] == "unknown"


def test_status_page_renders_the_same_report(views) -> None:
    cli, _, page = views
    eth = cli[1]
    assert "SECRETKEY" not in page
    for figure in (f"{eth['rows']} rows", eth["lastIngestedAt"], eth["lastError"]["message"],
                   f"{eth['backfill']['progress'] * 100:.1f} %", "RUNNING"):
        assert figure in page, figure
