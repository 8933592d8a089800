"""Migrations (idempotent, concurrent-safe) and the embedded server (shared between processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psycopg
import pytest

from transfer_daemon.config import parse_config
from transfer_daemon.db.bootstrap import (
    SETTINGS_FILE,
    EmbeddedPostgres,
    embedded_settings,
    migrate_command,
    resolve_database_url,
)
from transfer_daemon.db.migrate import available_migrations, is_migrated, migrate


def _tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}


def test_migrate_applies_every_migration_once(empty_database_url: str) -> None:
    assert migrate(empty_database_url) == len(available_migrations())
    assert migrate(empty_database_url) == 0
    assert {"transfers", "streams", "blocks", "ingest_cursors", "ingest_events"} <= _tables(empty_database_url)
    with psycopg.connect(empty_database_url) as conn:
        assert is_migrated(conn)


def test_concurrent_migrations_apply_each_migration_once(empty_database_url: str) -> None:
    results: list[int] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(migrate(empty_database_url))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert sorted(results) == [0, 0, 0, len(available_migrations())]


def test_an_empty_database_is_not_migrated(empty_database_url: str) -> None:
    with psycopg.connect(empty_database_url) as conn:
        assert not is_migrated(conn)


def _config(data_dir: Path, url: str = ""):
    return parse_config({
        "daemon": {"data_dir": str(data_dir)}, "database": {"url": url},
        "chains": [{"id": 1, "name": "eth", "kind": "rpc_logs", "rpc_url": "http://127.0.0.1:1",
                    "contracts": ["0x" + "11" * 20]}],
    }, environ={})


def test_configured_url_is_used_as_is(tmp_path: Path, database_url: str) -> None:
    config = _config(tmp_path, database_url)
    assert resolve_database_url(config) == database_url
    assert migrate_command(config) == 0
    assert not (tmp_path / "pgdata").exists()


_CHILD = textwrap.dedent("""
    import json, sys
    import psycopg
    from transfer_daemon.config import parse_config
    from transfer_daemon.db.bootstrap import resolve_database_url, migrate_command
    config = parse_config({"daemon": {"data_dir": sys.argv[1]}, "chains": [{"id": 1, "name": "eth",
        "kind": "rpc_logs", "rpc_url": "http://127.0.0.1:1", "contracts": ["0x" + "11" * 20]}]}, environ={})
    applied = migrate_command(config)
    url = resolve_database_url(config)
    with psycopg.connect(url) as conn:
        pid = conn.execute("SELECT pg_postmaster_start_time()::text").fetchone()[0]
    print(json.dumps({"url": url, "started": pid, "applied": applied}), flush=True)
    if len(sys.argv) > 2:
        sys.stdin.readline()  # hold the server until the test says so
""")


def _server_running(pgdata: Path) -> bool:
    pidfile = pgdata / "postmaster.pid"
    if not pidfile.exists():
        return False
    pid = int(pidfile.read_text().split()[0])
    return Path(f"/proc/{pid}").exists()


@pytest.mark.slow
def test_embedded_server_is_shared_between_processes_and_stopped_by_the_last(tmp_path: Path) -> None:
    # deep enough that the socket path would exceed the ~107-byte unix socket limit
    data_dir = tmp_path / ("d" * 60) / ("e" * 60)
    first = subprocess.Popen([sys.executable, "-c", _CHILD, str(data_dir), "hold"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        held = json.loads(first.stdout.readline())
        second = subprocess.run([sys.executable, "-c", _CHILD, str(data_dir)], capture_output=True, text=True,
                                timeout=120, check=True)
        found = json.loads(second.stdout)
        assert found["started"] == held["started"]  # the second process attached, it did not start another
        assert (held["applied"], found["applied"]) == (len(available_migrations()), 0)
        assert _server_running(data_dir / "pgdata")  # the second one's exit left the server running
    finally:
        first.communicate("go\n", timeout=60)
    deadline = time.monotonic() + 30
    while _server_running(data_dir / "pgdata") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _server_running(data_dir / "pgdata")  # the last user stopped it on exit


def test_embedded_settings_size_the_buffer_pool_to_the_machine() -> None:
    gib = 2**30
    assert embedded_settings(1 * gib)["shared_buffers"] == "128MB"  # never below initdb's default
    assert embedded_settings(8 * gib)["shared_buffers"] == "1024MB"  # an eighth of the memory
    assert embedded_settings(64 * gib)["shared_buffers"] == "2048MB"  # at most 2 GB
    assert embedded_settings(8 * gib)["jit"] == "off"


def test_embedded_server_runs_with_our_settings_included_once(tmp_path: Path) -> None:
    for _ in range(2):  # a second start finds the file and the include line in place
        embedded = EmbeddedPostgres(tmp_path)
        url = embedded.start()
        try:
            with psycopg.connect(url) as conn:
                shown = {name: conn.execute(f"SHOW {name}").fetchone()[0]
                         for name in ("shared_buffers", "max_wal_size", "checkpoint_timeout", "jit")}
        finally:
            embedded.stop()
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    wanted = embedded_settings(memory)
    megabytes = int(wanted["shared_buffers"][:-2])
    assert shown["shared_buffers"] == (f"{megabytes // 1024}GB" if megabytes % 1024 == 0 else f"{megabytes}MB")
    assert (shown["max_wal_size"], shown["checkpoint_timeout"], shown["jit"]) == ("4GB", "15min", "off")
    conf = (tmp_path / "pgdata" / "postgresql.conf").read_text()
    assert conf.count(f"include_if_exists = '{SETTINGS_FILE}'") == 1
