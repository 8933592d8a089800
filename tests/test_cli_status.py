"""`transfer-daemon status` and `backfill`: worker states from the state file, store facts over a
short-lived connection, the embedded server found (never started), no secret in the output."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import requests
from click.testing import CliRunner
from store_support import make_transfers

from transfer_daemon import store
from transfer_daemon.cli import main
from transfer_daemon.daemon.pidfile import PidFile
from transfer_daemon.model import Cursor, IngestEvent
from transfer_daemon.simulate import ChainSpec, SimConfig, start_in_thread
from transfer_daemon.state import STATE_FILENAME, write_state

CONTRACT = "0x" + "22" * 20


def write_config(root: Path, *, database_url: str = "", chains: str | None = None) -> Path:
    chains = chains or (
        f'[[chains]]\nid = 1\nname = "ethereum"\nkind = "rpc_logs"\nrpc_url = "http://127.0.0.1:9"\n'
        f'contracts = ["{CONTRACT}"]\n\n'
        f'[[chains]]\nid = 25\nname = "cronos"\nkind = "rpc_logs"\nrpc_url = "http://127.0.0.1:9"\n'
        f'contracts = ["{CONTRACT}"]\n'
    )
    path = root / "td.toml"
    path.write_text(f'[daemon]\ndata_dir = "{root / "data"}"\nlog_file = ""\n\n'
                    f'[database]\nurl = "{database_url}"\n\n{chains}')
    return path


def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.output


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TRANSFERS_DATABASE_URL", "TRANSFERS_CONFIG"):
        monkeypatch.delenv(name, raising=False)


def publish_state(config_dir: Path, pidfile: PidFile, children: dict) -> None:
    """A state file as a live supervisor (this process, holding the pidfile lock) writes it."""
    document = {"version": 1, "pid": os.getpid(), "state": "running", "started_at": time.time() - 60,
                "updated_at": time.time(), "config": "", "children": children}
    write_state(config_dir / "data" / STATE_FILENAME, document)


def child(name: str, pid: int, restarts: int = 0, chain: str | None = None) -> dict:
    return {"name": name, "chain": chain, "pid": pid, "state": "RUNNING", "since": time.time() - 30,
            "restarts": restarts, "failures": 0, "next_start_at": None,
            "last_exit": {"status": 1, "reason": "exit 1", "at": time.time() - 40} if restarts else None}


def test_without_supervisor_or_store_reports_workers_and_unreachable_store(tmp_path: Path, clean_env: None) -> None:
    config = write_config(tmp_path)
    code, out = run_cli("status", "--config", str(config))
    assert code == 0, out
    assert "supervisor: not running" in out
    assert "store unreachable" in out and "is not running" in out
    rows = [line for line in out.splitlines() if line.startswith(("ethereum", "cronos"))]
    assert len(rows) == 2 and all("not running" in row for row in rows)
    assert not (tmp_path / "data" / "pgdata").exists(), "status must never start an embedded server"


def test_json_never_shows_the_database_password(tmp_path: Path, clean_env: None) -> None:
    config = write_config(tmp_path, database_url="postgresql://reader:s3cr3t-pw@127.0.0.1:1/transfers")
    code, out = run_cli("status", "--json", "--config", str(config))
    assert code == 0, out
    report = json.loads(out)
    assert report["store"]["reachable"] is False and report["store"]["error"]
    assert [c["name"] for c in report["chains"]] == ["ethereum", "cronos"]
    assert "s3cr3t-pw" not in out
    code, table = run_cli("status", "--config", str(config))
    assert "s3cr3t-pw" not in table and "store unreachable" in table


def test_reports_worker_state_and_store_facts(tmp_path: Path, database_url: str, clean_env: None) -> None:
    config = write_config(tmp_path, database_url=database_url)
    transfers = make_transfers(1, 50, start_block=1000, base_ts=int(time.time()) - 3600)
    with psycopg.connect(database_url, autocommit=True) as conn:
        store.write_batch(conn, 1, transfers, cursor=Cursor(1, synced_block=1007, backfilled_block=1000,
                                                            backfill_target_block=1000, backfill_done=True),
                          event=IngestEvent(1, "ingested", "50 rows", rows=50), synced_to_head=True)
        store.record_event(conn, IngestEvent(1, "error", "upstream 503 from http://x/?apikey=SECRETKEY"))
    pidfile = PidFile(tmp_path / "data" / "transfer-daemon.pid")
    pidfile.acquire()
    try:
        publish_state(tmp_path, pidfile, {"worker[ethereum]": child("worker[ethereum]", 4242, 3, "ethereum"),
                                          "api": child("api", 4343)})
        code, out = run_cli("status", "--json", "--config", str(config))
        _, table = run_cli("status", "--config", str(config))
    finally:
        pidfile.release()
    assert code == 0, out
    report = json.loads(out)
    assert report["supervisor"]["running"] and report["supervisor"]["pid"] == os.getpid()
    assert report["store"]["reachable"] and report["api"]["pid"] == 4343
    ethereum, cronos = report["chains"]
    worker = ethereum["worker"]
    assert (worker["state"], worker["pid"], worker["restarts"]) == ("RUNNING", 4242, 3)
    assert worker["lastExit"]["reason"] == "exit 1" and worker["lastExit"]["at"].endswith("Z")
    assert ethereum["rows"] == 50 and ethereum["backfill"]["progress"] == 1.0
    assert ethereum["backfill"]["syncedBlock"] == 1007
    assert ethereum["oldest"]["block"] == 1000 and ethereum["newest"]["block"] == 1007
    assert 0 <= ethereum["ingestLagSeconds"] < 60
    assert ethereum["lastSuccess"]["rows"] == 50 and "apikey=***" in ethereum["lastError"]["message"]
    assert cronos["worker"]["state"] == "unknown" and cronos["rows"] == 0 and cronos["ingestLagSeconds"] is None
    assert "SECRETKEY" not in out + table
    row = next(line for line in table.splitlines() if line.startswith("ethereum"))
    assert row.split()[2:5] == ["RUNNING", "4242", "3"] and " 50 " in row and "100%" in row


@pytest.fixture
def outside_pytest_tmp() -> Iterator[Path]:
    """A directory for an embedded server: not under tmp_path, because any pytest session started
    meanwhile chmods /tmp/pytest-of-<user> to 0700 and so locks out the server's `pgserver` user."""
    root = Path(tempfile.mkdtemp(prefix="td-status-test-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_finds_the_running_embedded_server_without_starting_or_holding_one(outside_pytest_tmp: Path,
                                                                         clean_env: None) -> None:
    from transfer_daemon.db.bootstrap import EmbeddedPostgres, migrate

    config = write_config(outside_pytest_tmp)
    server = EmbeddedPostgres(outside_pytest_tmp / "data")
    url = server.start()
    try:
        migrate(url)
        handles = (server.pgdata / ".handle_pids.json").read_text()
        # a separate process, as an operator runs it: its exit must not stop the server
        done = subprocess.run([sys.executable, "-m", "transfer_daemon.cli", "status", "--json", "--config",
                               str(config)], capture_output=True, text=True, timeout=60,
                              env={k: v for k, v in os.environ.items() if k != "TRANSFERS_DATABASE_URL"})
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert report["store"]["reachable"], report["store"]
        assert [c["rows"] for c in report["chains"]] == [0, 0]
        assert (server.pgdata / ".handle_pids.json").read_text() == handles
        with psycopg.connect(url, connect_timeout=3) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        server.stop()


def test_backfill_unknown_chain_is_bad_usage(tmp_path: Path, clean_env: None) -> None:
    config = write_config(tmp_path)
    code, out = run_cli("backfill", "--config", str(config), "--chain", "nope")
    assert code == 2
    assert "--chain" in out and "'nope'" in out and "ethereum, cronos" in out


def test_backfill_fills_the_chain_with_a_progress_bar(tmp_path: Path, database_url: str, clean_env: None) -> None:
    sim = SimConfig(chains=(ChainSpec(25, "rpc_logs"),), history_days=400 / 86400, block_time=1.0, rate_limit=0,
                    seed=3)
    url, stop = start_in_thread(sim)
    try:
        info = requests.get(f"{url}/_sim/chains", timeout=5).json()["chains"][0]
        chains = (f'[[chains]]\nid = 25\nname = "cronos"\nkind = "rpc_logs"\nrpc_url = "{url}/rpc/25"\n'
                  f'contracts = {json.dumps(info["contracts"])}\nstart_block = {info["firstBlock"]}\n'
                  f"log_window_blocks = 100\nrate_limit_per_sec = 100\nconfirmations = 2\n")
        config = write_config(tmp_path, database_url=database_url, chains=chains)
        code, out = run_cli("backfill", "--config", str(config), "--chain", "cronos")
        assert code == 0, out
        # not a terminal: click prints the bar's label only, then our summary line
        assert out.startswith("backfill cronos") and "backfill cronos: done" in out
        with psycopg.connect(database_url) as conn:
            cursor = store.get_cursor(conn, 25)
            rows = store.chain_stats(conn, 25).rows
        truth = requests.get(f"{url}/_sim/transfers", params={"chainId": 25, "toBlock": cursor.synced_block},
                             timeout=30).json()
        assert cursor.backfill_done and cursor.backfilled_block <= info["firstBlock"]
        assert rows == len(truth) > 0
    finally:
        stop()
