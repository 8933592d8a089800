"""`transfer-daemon demo` as an operator runs it: a real subprocess with its simulator, embedded
Postgres and the whole daemon; fresh data within a minute; SIGTERM leaves nothing behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests
from click.testing import CliRunner
from net_support import free_port
from supervisor_support import wait_for

from transfer_daemon.cli import main
from transfer_daemon.config import load_config
from transfer_daemon.demo import HISTORY_DAYS, KEY_ENV, POLL_INTERVAL_S, write_config

STOP_WITHIN_S = 30  # the demo's shutdown_timeout (10 s) + simulator and Postgres stop


class Demo:
    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.data_dir = root / "demo"
        self.output = root / "demo-output.txt"
        env = {k: v for k, v in os.environ.items() if k != "TRANSFERS_DATABASE_URL"}
        with open(self.output, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "transfer_daemon.cli", "demo", "--port", str(self.port),
                 "--data-dir", str(self.data_dir)], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env)
        self.seen: set[int] = {self.process.pid}

    def tail(self) -> str:
        return self.output.read_text(errors="replace")[-4000:]

    def remember(self) -> None:
        """The demo's process tree plus the embedded Postgres (pg_ctl detaches it from the tree)."""
        try:
            self.seen.update(p.pid for p in psutil.Process(self.process.pid).children(recursive=True))
            pid_file = self.data_dir / "pgdata" / "postmaster.pid"
            postmaster = psutil.Process(int(pid_file.read_text().split()[0]))
            self.seen.update([postmaster.pid, *(p.pid for p in postmaster.children(recursive=True))])
        except (psutil.NoSuchProcess, OSError, ValueError, IndexError):
            pass

    def get(self, path: str, **params: object) -> requests.Response | None:
        try:
            return requests.get(f"http://127.0.0.1:{self.port}{path}", params=params, timeout=5)
        except requests.RequestException:
            return None

    def alive(self) -> list[int]:
        left = []
        for pid in self.seen:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    left.append(pid)
            except psutil.NoSuchProcess:
                pass
        return left


@pytest.fixture
def demo() -> Iterator[Demo]:
    # Not under tmp_path: every pytest session started meanwhile (other checkouts, other users of the
    # machine) chmods /tmp/pytest-of-<user> to 0700, which locks out the embedded server's `pgserver` user.
    root = Path(tempfile.mkdtemp(prefix="td-demo-test-"))
    running = Demo(root)
    yield running
    if running.process.poll() is None:
        running.process.kill()
        running.process.wait()
    for pid in running.alive():
        os.kill(pid, signal.SIGKILL)
    shutil.rmtree(root, ignore_errors=True)


def fresh_page(demo: Demo) -> dict | None:
    answer = demo.get("/api/transfers", chainId=0)
    if answer is None or answer.status_code != 200:
        return None
    body = answer.json()
    fresh = body["items"] and body["ingestLagSeconds"] is not None and body["ingestLagSeconds"] <= 30
    return body if fresh else None


@pytest.mark.slow
def test_demo_serves_fresh_data_and_stops_cleanly(demo: Demo) -> None:
    page = wait_for(lambda: fresh_page(demo), 120, f"fresh transfers from the demo\n{demo.tail()}", interval=0.5)
    assert {item["chainId"] for item in page["items"]} <= {1, 25} and set(page["chains"]) == {"1", "25"}
    health = demo.get("/api/cache-health")
    assert health is not None and health.status_code == 200, health and health.text
    assert set(health.json()["chains"]) == {"1", "25"} and health.json()["store"]["ready"]

    config = demo.data_dir / "transfer-daemon.toml"

    def status() -> dict | None:
        done = subprocess.run([sys.executable, "-m", "transfer_daemon.cli", "status", "--json", "--config",
                               str(config)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        ready = all((c.get("rows") or 0) > 0 and c["worker"]["state"] == "RUNNING" for c in report["chains"])
        return report if ready else None

    # a worker is RUNNING once it has stayed up a few seconds (STARTING before)
    report = wait_for(status, 60, "running workers and rows on both chains in `status --json`", interval=1)
    assert [c["name"] for c in report["chains"]] == ["ethereum", "cronos"]
    assert report["store"]["reachable"] and report["supervisor"]["running"]
    assert all(isinstance(c["worker"]["pid"], int) for c in report["chains"])
    assert "demo-key" not in json.dumps(report)

    demo.remember()
    assert len(demo.seen) >= 7  # demo/supervisor, simulator, 2 workers, api, postgres (+ its workers)
    started = time.monotonic()
    demo.process.send_signal(signal.SIGTERM)
    assert demo.process.wait(STOP_WITHIN_S) == 0, demo.tail()
    assert time.monotonic() - started < STOP_WITHIN_S
    wait_for(lambda: not demo.alive(), 10, "no process of the demo left")


def test_demo_config_points_every_chain_at_the_simulator(tmp_path: Path) -> None:
    listing = [{"id": 1, "kind": "etherscan", "contracts": ["0x" + "ab" * 20]},
               {"id": 25, "kind": "rpc_logs", "contracts": ["0x" + "cd" * 20, "0x" + "ef" * 20]}]
    config = load_config(write_config(tmp_path, 8181, "http://127.0.0.1:5555", listing), environ={})
    assert config.database.url == "" and config.daemon.data_dir == str(tmp_path) and config.api.port == 8181
    ethereum, cronos = config.chains
    assert (ethereum.name, ethereum.base_url, ethereum.api_key_env) == (
        "ethereum", "http://127.0.0.1:5555/v2/api", KEY_ENV)
    assert (cronos.name, cronos.rpc_url, cronos.contracts) == (
        "cronos", "http://127.0.0.1:5555/rpc/25", tuple(listing[1]["contracts"]))
    assert all(c.backfill_days > HISTORY_DAYS and c.poll_interval_s == POLL_INTERVAL_S for c in config.chains)


def test_demo_refuses_a_busy_api_port(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(main, ["demo", "--port", str(port), "--data-dir", str(tmp_path / "d")])
    assert result.exit_code == 1
    assert f"API port {port} is not free" in result.output and not (tmp_path / "d").exists()
