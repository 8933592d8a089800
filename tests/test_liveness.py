"""Slow but progressing work is not hung: the heartbeat stops only when no job has made progress
(an upstream call attempt, a commit, a tick of a long statement) for the limit; retention's
REINDEX counts as progress, is bounded by its statement timeout, and resumes after an interruption."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
import responses

from transfer_daemon import store
from transfer_daemon.config import Config, parse_config
from transfer_daemon.db import partitions
from transfer_daemon.db.pool import open_pool
from transfer_daemon.ingest import context, upkeep
from transfer_daemon.ingest.worker import JobRunner
from transfer_daemon.store.retention import RetentionLimits
from transfer_daemon.upstream import make_source
from transfer_daemon.upstream.http import RetryPolicy

HEARTBEAT_TIMEOUT_S = 2.0
LIMIT_S = HEARTBEAT_TIMEOUT_S / 2  # what the worker checks `stuck` against
RPC = "http://127.0.0.1:9/rpc"


def _config(tmp_path: Path) -> Config:
    return parse_config({"daemon": {"data_dir": str(tmp_path), "heartbeat_timeout": HEARTBEAT_TIMEOUT_S},
                         "chains": [{"id": 25, "name": "cro", "kind": "rpc_logs", "rpc_url": RPC,
                                     "contracts": ["0x" + "33" * 20]}]}, {})


def _run_in_thread(runner: JobRunner, name: str, body: Callable) -> threading.Thread:
    thread = threading.Thread(target=runner._tracked(name, body), daemon=True)
    thread.start()
    return thread


def _never_stuck_while(runner: JobRunner, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if runner.stuck(LIMIT_S):
            return False
        time.sleep(0.05)
    return True


def test_a_job_is_stuck_only_when_it_stops_making_progress(tmp_path: Path) -> None:
    config = _config(tmp_path)
    ctx = context.IngestContext(config=config, chain=config.chains[0], pool=None, source=None)
    runner = JobRunner(ctx, config)
    release = threading.Event()

    def slow_but_progressing(c: context.IngestContext) -> None:
        while not release.wait(0.1):
            c.progress()  # what every upstream attempt and every commit does

    job = _run_in_thread(runner, "backfill", slow_but_progressing)
    assert _never_stuck_while(runner, LIMIT_S * 2.5), "a job that progresses was taken for hung"
    assert job.is_alive()
    release.set()
    job.join(5)

    silent = threading.Event()
    job = _run_in_thread(runner, "backfill", lambda c: silent.wait(10))
    time.sleep(LIMIT_S + 0.3)
    assert runner.stuck(LIMIT_S)
    silent.set()
    job.join(5)
    assert not runner.stuck(LIMIT_S)


def test_every_upstream_attempt_counts_as_progress(tmp_path: Path) -> None:
    config = _config(tmp_path)
    attempts: list[float] = []
    source = make_source(config.chains[0], limiter_dir=str(tmp_path), environ={}, on_attempt=lambda: attempts.append(1),
                         retry=RetryPolicy(initial_s=0.01, maximum_s=0.02, jitter=0))
    with responses.RequestsMock() as rsps:
        rsps.post(RPC, status=502)
        rsps.post(RPC, body=b"<html>maintenance</html>")
        rsps.post(RPC, json={"jsonrpc": "2.0", "id": 1, "result": "0x10"})
        assert source.head_block() == 16
    assert len(attempts) == 3


@pytest.fixture
def closed_month(database_url: str) -> str:
    """The oldest partition a fresh schema has: a month that closed days ago, not compacted yet."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        return sorted(partitions.existing(conn).values())[0]


@pytest.fixture
def writer_in_the_way(database_url: str, closed_month: str) -> Iterator[psycopg.Connection]:
    """A transaction holding a write lock on the month: REINDEX CONCURRENTLY waits for it."""
    with psycopg.connect(database_url) as blocker:
        blocker.execute(f"DELETE FROM {closed_month} WHERE false")
        yield blocker


def _invalid_indexes(conn: psycopg.Connection, table: str) -> list[str]:
    return [name for name, in conn.execute(
        "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " WHERE i.indrelid = %s::regclass AND NOT i.indisvalid", (table,))]


def _compacted(conn: psycopg.Connection) -> set[str]:
    return {name for name, in conn.execute("SELECT name FROM partition_maintenance")}


def test_retention_counts_as_progress_while_a_reindex_waits(tmp_path: Path, database_url: str, closed_month: str,
                                                             writer_in_the_way: psycopg.Connection) -> None:
    config = _config(tmp_path)
    pool = open_pool(database_url, 1, 2, "liveness-test")
    try:
        ctx = context.IngestContext(config=config, chain=config.chains[0], pool=pool, source=None)
        runner = JobRunner(ctx, config)
        job = _run_in_thread(runner, "retention", upkeep.retention)
        assert _never_stuck_while(runner, LIMIT_S * 2.5), "retention's REINDEX was taken for a hung job"
        assert job.is_alive(), "the REINDEX did not wait: the test proves nothing"
        writer_in_the_way.rollback()
        job.join(30)
        with pool.connection() as conn:
            assert closed_month in _compacted(conn)
    finally:
        pool.close()


def test_a_reindex_past_its_timeout_or_killed_is_cleaned_up_and_done_by_the_next_run(
        database_url: str, closed_month: str, writer_in_the_way: psycopg.Connection) -> None:
    now = time.time()
    with psycopg.connect(database_url, autocommit=True) as conn:
        compacted = store.compact_closed_partitions(conn, now, limits=RetentionLimits(statement_timeout_s=0.5))
        assert closed_month not in compacted and closed_month not in _compacted(conn)
        cancelled = _invalid_indexes(conn, closed_month)
        assert cancelled, "the cancelled REINDEX left nothing behind: the test proves nothing"

        with psycopg.connect(database_url, autocommit=True) as killed:
            pid = killed.info.backend_pid
            reindex = f"REINDEX TABLE CONCURRENTLY {closed_month}"
            thread = threading.Thread(target=_swallow, args=(killed.execute, reindex))
            thread.start()
            assert _poll(lambda: len(_invalid_indexes(conn, closed_month)) > len(cancelled), 10), "no REINDEX"
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))  # a worker killed in the middle
            thread.join(10)
        writer_in_the_way.rollback()
        assert closed_month in store.compact_closed_partitions(conn, now)
        assert _invalid_indexes(conn, closed_month) == [] and closed_month in _compacted(conn)


def _swallow(call: Callable, *args) -> None:
    try:
        call(*args)
    except psycopg.Error:
        pass


def _poll(condition: Callable[[], object], seconds: float) -> object:
    deadline = time.monotonic() + seconds
    while not (result := condition()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return result
