"""The supervisor's alert monitor over a real store: facts from the report, one firing and one
resolve per episode, a webhook that receives them, one evaluating monitor per database."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
import pytest
from alert_receivers import HttpReceiver, wait_until
from api_support import CONTRACT_A, CONTRACT_B, migrated, transfer

from transfer_daemon import store
from transfer_daemon.config import Config, parse_config
from transfer_daemon.daemon.alert_monitor import AlertMonitor, chain_facts
from transfer_daemon.model import Cursor, IngestEvent

HOOK_ENV = "TD_TEST_ALERT_HOOK"


def _config(root: Path, url: str, hook: str | None = None) -> Config:
    alerts = {"lag_threshold_s": 300, "errors_per_min": 5}
    if hook:
        alerts["webhook_url_env"] = HOOK_ENV
    return parse_config({
        "daemon": {"data_dir": str(root), "log_file": ""}, "database": {"url": url}, "alerts": alerts,
        "chains": [
            {"id": 1, "name": "ethereum", "kind": "etherscan", "base_url": "http://127.0.0.1:9/api",
             "contracts": [CONTRACT_A]},
            {"id": 25, "name": "cronos", "kind": "rpc_logs", "rpc_url": "http://127.0.0.1:9/rpc",
             "contracts": [CONTRACT_B]},
        ],
    }, {})


def _synced(url: str, chain_id: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        store.write_batch(conn, chain_id, [transfer(chain_id, 0)], cursor=Cursor(chain_id, synced_block=100),
                          event=IngestEvent(chain_id, "ingested", "1 row", rows=1))


def _running(*names: str) -> dict[str, dict]:
    return {f"worker[{n}]": {"name": f"worker[{n}]", "state": "RUNNING", "pid": 1, "restarts": 0} for n in names}


def test_chain_facts_come_from_the_report() -> None:
    report = {"id": 1, "name": "ethereum", "ingestLagSeconds": 12.5, "errorsLastMinute": 7,
              "worker": {"state": "FATAL"}, "halted": {"at": "x"}, "paused": {"reason": "daily_cap"},
              "lastVerify": {"status": "drift", "rows": 2}}
    facts = chain_facts(report, 100.0)
    assert (facts.lag_s, facts.errors_last_min, facts.worker_state, facts.running_since) == (12.5, 7, "FATAL", 100.0)
    assert facts.halted and facts.auth_failed and facts.drift
    quiet = chain_facts({"id": 25, "name": "cronos", "worker": {"state": "RUNNING"},
                         "lastVerify": {"status": "verified", "rows": 0}}, None)
    assert (quiet.lag_s, quiet.halted, quiet.auth_failed, quiet.drift) == (None, False, False, False)


@pytest.fixture
def store_url(make_database) -> str:
    url = migrated(make_database())
    _synced(url, 1)
    _synced(url, 25)
    return url


def test_lag_fires_once_resolves_once_and_reaches_the_webhook(store_url, tmp_path, monkeypatch) -> None:
    receiver = HttpReceiver().start()
    monkeypatch.setenv(HOOK_ENV, receiver.url + "/hook")
    clock = [time.time()]
    monitor = AlertMonitor(_config(tmp_path, store_url, hook="yes"), lambda: _running("ethereum", "cronos"),
                           clock=lambda: clock[0])
    monitor._dispatcher.start()
    try:
        assert monitor.evaluate_once() == []
        clock[0] += 400  # no sync has finished for 400 s
        fired = monitor.evaluate_once()
        assert sorted((t.name, t.chain, t.state) for t in fired) == [
            ("IngestLag", "cronos", "firing"), ("IngestLag", "ethereum", "firing")]
        assert monitor.evaluate_once() == []
        _synced(store_url, 1)
        clock[0] = time.time() + 1  # both chains synced within the last seconds again
        resolved = monitor.evaluate_once()
        assert sorted((t.name, t.chain, t.state) for t in resolved) == [
            ("IngestLag", "cronos", "resolved"), ("IngestLag", "ethereum", "resolved")]
        assert monitor.evaluate_once() == []
        wait_until(lambda: sum(len(b["alerts"]) for b in receiver.bodies("/hook")) == 4, what="four alerts posted")
    finally:
        monitor.stop(timeout_s=2)
        receiver.stop()
    states = [(a["chain"], a["state"]) for b in receiver.bodies("/hook") for a in b["alerts"]]
    assert sorted(states) == [("cronos", "firing"), ("cronos", "resolved"), ("ethereum", "firing"),
                              ("ethereum", "resolved")]
    with psycopg.connect(store_url, autocommit=True) as conn:
        events = store.recent_events(conn, 1, limit=10, statuses=["alert"])
    assert [e["message"].split(" ")[:2] for e in events] == [["resolved", "IngestLag:"], ["firing", "IngestLag:"]]


def test_a_fatal_worker_fires_worker_fatal(store_url, tmp_path) -> None:
    children = _running("ethereum", "cronos")
    monitor = AlertMonitor(_config(tmp_path, store_url), lambda: children)
    try:
        assert monitor.evaluate_once() == []
        children["worker[cronos]"]["state"] = "FATAL"
        assert [(t.name, t.chain) for t in monitor.evaluate_once()] == [("WorkerFatal", "cronos")]
    finally:
        monitor.stop(timeout_s=2)


def test_one_monitor_evaluates_per_database(store_url, tmp_path) -> None:
    first = AlertMonitor(_config(tmp_path / "a", store_url), lambda: _running("ethereum"))
    second = AlertMonitor(_config(tmp_path / "b", store_url), lambda: _running("ethereum"))
    try:
        first.evaluate_once()
        second.evaluate_once()
        assert first._holder and not second._holder
        first.stop(timeout_s=2)  # its backend releases the lock once it has exited: a moment later

        def takes_over() -> bool:
            second.evaluate_once()
            return second._holder

        wait_until(takes_over, what="the second monitor to take the lock")
    finally:
        second.stop(timeout_s=2)


def test_an_unreachable_store_skips_the_evaluation(tmp_path) -> None:
    monitor = AlertMonitor(_config(tmp_path, "postgresql://nobody@127.0.0.1:9/none"), dict)
    try:
        assert monitor.evaluate_once() == []
        assert monitor._evaluator.firing() == []
    finally:
        monitor.stop(timeout_s=2)
