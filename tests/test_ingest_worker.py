"""The worker process: kill -9 at any instant, the advisory lock with a standby, SIGTERM, heartbeat."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time

import psycopg
import pytest
from ingest_support import ENVIRON, Sim, comparable, make_config, poll, sim_config

from transfer_daemon.db.bootstrap import migrate
from transfer_daemon.ingest.lock import ChainLock
from transfer_daemon.ingest.worker import run_worker

pytestmark = pytest.mark.slow
FORK = multiprocessing.get_context("fork")


@pytest.fixture
def setup(tmp_path, empty_database_url, monkeypatch):
    for name, value in ENVIRON.items():
        monkeypatch.setenv(name, value)  # inherited by the forked workers
    sim = Sim(sim_config("etherscan_logs", history_days=600 / 86400, rate_limit=12.0))
    config = make_config(tmp_path, sim, "etherscan_logs", rate_limit_per_sec=10, page_size=50)
    migrate(empty_database_url)
    workers: list = []

    def start():
        beats = FORK.Value("d", 0.0)

        def heartbeat() -> None:
            beats.value = time.time()

        process = FORK.Process(target=run_worker, args=(config, "sim", empty_database_url, heartbeat), daemon=True)
        process.start()
        process.beats = beats
        workers.append(process)
        return process

    yield sim, config, empty_database_url, start
    for process in workers:
        if process.is_alive():
            process.kill()
        process.join(5)
    sim.stop()


def _holder(url: str) -> int | None:
    """pid of the worker holding a chain's advisory lock in this database (its lock connection's name);
    a chain's lock has a bigint key (objsubid 1), the store's others two int4 keys."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted AND l.database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database())").fetchone()
    return int(row[0].rsplit(" ", 1)[1]) if row else None


def _state(url: str, chain_id: int) -> tuple[int | None, bool, list[tuple]]:
    """(synced_block, backfill_done, stored rows up to the cursor) read straight from a connection."""
    from transfer_daemon import store

    with psycopg.connect(url, autocommit=True) as conn:
        cursor = store.get_cursor(conn, chain_id)
        if cursor.synced_block is None:
            return None, False, []
        items, page_cursor = [], None
        while True:
            page = store.query_transfers(conn, store.TransferQuery(
                chain_ids=(chain_id,), page_size=100, cursor=page_cursor, sort="asc", to_block=cursor.synced_block))
            items.extend(item.to_api() for item in page.items)
            if not page.next_cursor:
                break
            page_cursor = page.next_cursor
    return cursor.synced_block, cursor.backfill_done, comparable(items)


def _equals_truth(sim: Sim, url: str) -> bool:
    synced, done, stored = _state(url, sim.chain_id)
    return done and stored == comparable(sim.truth(synced))


def test_kill_9_at_any_instant_loses_and_duplicates_nothing(setup):
    sim, _, url, start = setup
    rng = random.Random(3)
    for _ in range(5):
        worker = start()
        time.sleep(rng.uniform(0.3, 1.2))
        os.kill(worker.pid, signal.SIGKILL)
        worker.join(5)
    synced, done, _ = _state(url, sim.chain_id)
    assert synced is not None and not done  # the kills landed mid-backfill
    worker = start()
    assert poll(lambda: _equals_truth(sim, url), 40, interval_s=0.5)
    worker.terminate()
    worker.join(10)
    assert worker.exitcode == 0
    assert _equals_truth(sim, url)


def test_one_worker_ingests_and_the_standby_takes_over_within_a_poll_interval(setup):
    sim, config, url, start = setup
    first = start()
    assert poll(lambda: _holder(url) == first.pid, 10)
    second = start()
    assert poll(lambda: second.beats.value > 0, 10)  # the standby is alive and beating
    time.sleep(1.5)
    assert _holder(url) == first.pid
    assert not ChainLock(url, sim.chain_id, "sim").try_acquire()
    os.kill(first.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    assert poll(lambda: _holder(url) == second.pid, 5, interval_s=0.05)
    assert time.monotonic() - killed_at <= config.chains[0].poll_interval_s + 0.5
    assert poll(lambda: _equals_truth(sim, url), 40, interval_s=0.5)


def test_sigterm_stops_promptly_with_a_consistent_store_and_heartbeats_flow(setup):
    sim, _, url, start = setup
    worker = start()
    assert poll(lambda: _state(url, sim.chain_id)[0] is not None, 10)
    first_beat = worker.beats.value
    assert poll(lambda: worker.beats.value > first_beat, 5)
    worker.terminate()
    stopped_at = time.monotonic()
    worker.join(10)
    assert worker.exitcode == 0 and time.monotonic() - stopped_at < 5
    assert _holder(url) is None
    synced, _, stored = _state(url, sim.chain_id)
    truth = set(comparable(sim.truth(synced)))
    assert set(stored) <= truth and len(stored) == len(set(stored))


def test_a_workers_retries_wait_at_most_a_poll_interval() -> None:
    from transfer_daemon.ingest.worker import retry_policy

    assert [retry_policy(s).maximum_s for s in (0.5, 1, 30, 600)] == [2.0, 2.0, 30, 60.0]
