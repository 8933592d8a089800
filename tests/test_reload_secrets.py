"""The real daemon (`transfer-daemon start`: supervisor, workers, API) against the simulator behind a
key check: a refused key pauses its chain; fixing the key in the `.env` and reloading (SIGHUP)
restarts that chain's worker only, which ingests again within a poll interval; `transfer-daemon
resume` clears a recorded halt and the running worker picks it up without a restart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs

import psutil
import psycopg
import pytest
import requests
from net_support import free_port
from supervisor_support import wait_for
from werkzeug.serving import make_server

from transfer_daemon.simulate import ChainSpec, SimConfig
from transfer_daemon.simulate.routes import build_app

pytestmark = pytest.mark.slow

KEY_ENV = "RELOAD_TEST_ETHERSCAN_KEY"
REVOKED, FIXED = "revoked-key-0001", "fixed-key-0002"
POLL_INTERVAL_S = 5
NAMES = {1: "ethereum", 25: "cronos"}
INVALID_KEY = json.dumps({"status": "0", "message": "NOTOK", "result": "Invalid API Key"}).encode()


class KeyGate:
    """The simulator behind a key check: the revoked key gets Etherscan's answer to an invalid key."""

    def __init__(self, app: Callable) -> None:
        self.app = app

    def __call__(self, environ: dict, start_response: Callable) -> list[bytes]:
        if parse_qs(environ.get("QUERY_STRING", "")).get("apikey") == [REVOKED]:
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(INVALID_KEY)))])
            return [INVALID_KEY]
        return self.app(environ, start_response)


@pytest.fixture
def upstream() -> Iterator[tuple[str, list[dict]]]:
    config = SimConfig(chains=(ChainSpec(1, "etherscan"), ChainSpec(25, "rpc_logs", False)), history_days=600 / 86400,
                       block_time=1.0, rate_limit=0, seed=5)
    server = make_server("127.0.0.1", 0, KeyGate(build_app(config)), threaded=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}"
    yield url, requests.get(url + "/_sim/chains", timeout=5).json()["chains"]
    server.shutdown()
    server.server_close()


def _chain_toml(chain: dict, url: str) -> str:
    fields = {"id": chain["id"], "name": NAMES[chain["id"]], "kind": chain["kind"], "contracts": chain["contracts"],
              "start_block": chain["startHead"] - 50, "poll_interval_s": POLL_INTERVAL_S, "confirmations": 2,
              "rate_limit_per_sec": 50, "request_timeout_s": 5}
    if chain["kind"] == "rpc_logs":
        fields.update(rpc_url=f"{url}/rpc/{chain['id']}", log_window_blocks=100)
    else:
        fields.update(base_url=f"{url}/v2/api", api_key_env=KEY_ENV, page_size=100)
    return "[[chains]]\n" + "".join(f"{key} = {json.dumps(value)}\n" for key, value in fields.items())


class Daemon:
    def __init__(self, root: Path, database_url: str, upstream: tuple[str, list[dict]]) -> None:
        url, chains = upstream
        self.root, self.database_url = root, database_url
        self.config_path = root / "td.toml"
        self.config_path.write_text(
            f'[daemon]\ndata_dir = "{root / "data"}"\nlog_file = "{root / "data" / "td.log"}"\n'
            "shutdown_timeout = 5\nheartbeat_timeout = 60\n\n"
            f'[database]\nurl = "{database_url}"\npool_max = 3\n\n[api]\nport = {free_port()}\nworkers = 1\n\n'
            + "\n".join(_chain_toml(chain, url) for chain in chains))
        self.write_dotenv(REVOKED)
        self.env = {k: v for k, v in os.environ.items() if k not in (KEY_ENV, "TRANSFERS_DATABASE_URL")}
        self.stderr = root / "stderr.txt"
        with open(self.stderr, "wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "transfer_daemon.cli", "start", "--config", str(self.config_path)],
                env=self.env, stdout=err, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def write_dotenv(self, key: str) -> None:
        dotenv = self.root / ".env"
        dotenv.write_text(f"{KEY_ENV}={key}\n")
        dotenv.chmod(0o600)

    def pids(self) -> dict[str, int | None]:
        try:
            state = json.loads((self.root / "data" / "supervisor-state.json").read_text())
        except (OSError, ValueError):
            return {}
        return {name: child["pid"] for name, child in state["children"].items() if child["state"] == "RUNNING"}

    def log(self) -> str:
        return self.stderr.read_text(errors="replace")

    def sql(self, query: str, *params: object) -> list[tuple]:
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            cursor = conn.execute(query, params)
            return cursor.fetchall() if cursor.description else []

    def ingested_since(self, chain_id: int, since: float) -> bool:
        return bool(self.sql("SELECT 1 FROM ingest_events WHERE chain_id = %s AND status = 'ingested'"
                             " AND occurred_at > to_timestamp(%s)", chain_id, since))

    def stop(self) -> None:
        tree = []
        try:
            tree = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            pass
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for child in tree:
            if child.is_running():
                child.kill()


@pytest.fixture
def daemon(tmp_path: Path, database_url: str, upstream) -> Iterator[Daemon]:
    running = Daemon(tmp_path, database_url, upstream)
    yield running
    running.stop()


def test_a_fixed_key_reloaded_resumes_its_chain_within_a_poll_interval_and_resume_clears_a_halt(daemon: Daemon):
    wait_for(lambda: daemon.sql("SELECT 1 FROM ingest_events WHERE chain_id = 1 AND status = 'alert'"),
             60, f"an alert for the refused key\n{daemon.log()[-3000:]}", interval=0.3)
    wait_for(lambda: {"worker[ethereum]", "worker[cronos]", "api"} <= set(daemon.pids())
             and daemon.ingested_since(25, 0), 60, "cronos ingesting", interval=0.3)
    assert len(daemon.sql("SELECT 1 FROM ingest_events WHERE chain_id = 1 AND status = 'alert'")) == 1
    assert REVOKED not in daemon.log()
    before = daemon.pids()

    daemon.write_dotenv(FIXED)
    reloaded_at = time.time()
    daemon.process.send_signal(signal.SIGHUP)
    wait_for(lambda: daemon.ingested_since(1, reloaded_at), POLL_INTERVAL_S, f"ethereum ingesting after the reload\n"
             f"{daemon.log()[-3000:]}", interval=0.1)
    assert daemon.sql("SELECT paused_reason FROM ingest_cursors WHERE chain_id = 1") == [(None,)]
    assert daemon.sql("SELECT message FROM ingest_events WHERE chain_id = 1 AND status = 'resumed'")
    after = wait_for(lambda: (pids := daemon.pids()).get("worker[ethereum]") not in (None, before["worker[ethereum]"])
                     and pids, 10, "worker[ethereum] running again")
    assert after["worker[cronos]"] == before["worker[cronos]"] and after["api"] == before["api"]
    assert "restarting worker[ethereum]: its secrets changed" in daemon.log()
    assert FIXED not in daemon.log()

    daemon.sql("UPDATE ingest_cursors SET halted_at = now(), halted_reason = 'reorg of depth 99' WHERE chain_id = 25")
    wait_for(lambda: "halted chain=cronos as recorded" in daemon.log(), POLL_INTERVAL_S + 2, "cronos halted")
    halted_at = time.time()
    time.sleep(POLL_INTERVAL_S + 1)
    assert not daemon.ingested_since(25, halted_at), "a halted chain kept ingesting"

    result = subprocess.run([sys.executable, "-m", "transfer_daemon.cli", "resume", "--config", str(daemon.config_path),
                             "--chain", "cronos"], env=daemon.env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "was halted (reorg of depth 99)" in result.stdout
    resumed_at = time.time()
    wait_for(lambda: daemon.ingested_since(25, resumed_at), POLL_INTERVAL_S + 1, "cronos ingesting after resume",
             interval=0.1)
    assert daemon.pids() == after, "resume restarted a child"
