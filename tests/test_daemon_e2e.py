"""End to end: `transfer-daemon start` (real supervisor, workers, gunicorn API) against the simulator
(an explorer chain and a JSON-RPC chain), until the store equals the simulator's truth; kill -9 of a
worker mid-backfill and of the API; SIGTERM ends it all with exit 0 and no process left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests
from ingest_support import comparable
from net_support import free_port
from supervisor_support import wait_for

from transfer_daemon import store
from transfer_daemon.db.pool import open_pool
from transfer_daemon.simulate import ChainSpec, SimConfig, start_in_thread
from transfer_daemon.store.queries import TransferQuery

pytestmark = pytest.mark.slow

KEY_ENV = "E2E_EXPLORER_KEY"
HISTORY_BLOCKS = 10_000
NAMES = {1: "ethereum", 25: "cronos"}
SHUTDOWN_TIMEOUT_S = 8


def chain_toml(chain: dict, sim_url: str) -> str:
    fields = {"id": chain["id"], "name": NAMES[chain["id"]], "kind": chain["kind"], "contracts": chain["contracts"],
              "start_block": chain["firstBlock"], "poll_interval_s": 1, "confirmations": 3, "rate_limit_per_sec": 50,
              "request_timeout_s": 5}
    if chain["kind"] == "rpc_logs":
        fields.update(rpc_url=f"{sim_url}/rpc/{chain['id']}", log_window_blocks=100)
    else:
        fields.update(base_url=f"{sim_url}/v2/api", api_key_env=KEY_ENV, page_size=100)
    return "[[chains]]\n" + "".join(f"{key} = {json.dumps(value)}\n" for key, value in fields.items())


class Sim:
    def __init__(self) -> None:
        config = SimConfig(chains=(ChainSpec(1, "etherscan"), ChainSpec(25, "rpc_logs", False)),
                           history_days=HISTORY_BLOCKS / 86400, block_time=1.0, rate_limit=0, seed=11)
        self.url, self.stop = start_in_thread(config)
        self.chains = requests.get(f"{self.url}/_sim/chains", timeout=5).json()["chains"]

    def truth(self, chain_id: int, to_block: int) -> list[dict]:
        answer = requests.get(f"{self.url}/_sim/transfers", params={"chainId": chain_id, "toBlock": to_block},
                              timeout=60)
        answer.raise_for_status()
        return answer.json()


class Daemon:
    def __init__(self, root: Path, database_url: str, sim: Sim) -> None:
        self.data_dir = root / "data"
        self.api_port = free_port()
        self.config_path = root / "td.toml"
        self.config_path.write_text(
            f'[daemon]\ndata_dir = "{self.data_dir}"\nlog_file = "{self.data_dir / "td.log"}"\n'
            f"shutdown_timeout = {SHUTDOWN_TIMEOUT_S}\nheartbeat_timeout = 30\n\n"
            f'[database]\nurl = "{database_url}"\npool_max = 4\n\n'
            f'[api]\nport = {self.api_port}\nworkers = 2\nthreads = 2\n\n'
            + "\n".join(chain_toml(chain, sim.url) for chain in sim.chains))
        self.stderr = root / "stderr.txt"
        env = {**os.environ, KEY_ENV: "e2e-key"}
        env.pop("TRANSFERS_DATABASE_URL", None)
        with open(self.stderr, "wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "transfer_daemon.cli", "start", "--config", str(self.config_path)],
                env=env, stdout=err, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.seen: set[int] = {self.process.pid}

    def log_tail(self) -> str:
        return self.stderr.read_text(errors="replace")[-4000:]

    def children(self) -> dict[str, dict]:
        try:
            state = json.loads((self.data_dir / "supervisor-state.json").read_text())
        except (OSError, ValueError):
            return {}
        self.remember()
        return state["children"]

    def remember(self) -> None:
        """Every process of the tree ever seen, so that the end can check none is left."""
        try:
            self.seen.update(p.pid for p in psutil.Process(self.process.pid).children(recursive=True))
        except psutil.NoSuchProcess:
            pass

    def running(self, name: str, restarted: int = 0) -> dict | None:
        entry = self.children().get(name)
        ok = entry and entry["state"] == "RUNNING" and entry["restarts"] >= restarted
        return entry if ok else None

    def api(self, path: str, **params: object) -> requests.Response | None:
        try:
            return requests.get(f"http://127.0.0.1:{self.api_port}{path}", params=params, timeout=5)
        except requests.RequestException:
            return None


@pytest.fixture
def sim() -> Iterator[Sim]:
    simulator = Sim()
    yield simulator
    simulator.stop()


@pytest.fixture
def daemon(tmp_path: Path, database_url: str, sim: Sim) -> Iterator[Daemon]:
    running = Daemon(tmp_path, database_url, sim)
    yield running
    if running.process.poll() is None:
        running.process.kill()
        running.process.wait()
    for pid in running.seen:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def stored(pool, chain_id: int, to_block: int) -> list[dict]:
    items: list[dict] = []
    cursor = None
    while True:
        query = TransferQuery(chain_ids=(chain_id,), page_size=100, cursor=cursor, sort="asc", to_block=to_block)
        with pool.connection() as conn:
            page = store.query_transfers(conn, query)
        items.extend(item.to_api() for item in page.items)
        if not page.next_cursor:
            return items
        cursor = page.next_cursor


def cursor(pool, chain_id: int):
    with pool.connection() as conn:
        return store.get_cursor(conn, chain_id)


def assert_store_equals_truth(pool, sim: Sim, daemon: Daemon) -> None:
    """Backfill done on every chain, and every stored row up to the cursor is the truth, once."""
    for chain in sim.chains:
        done = wait_for(lambda c=chain: cursor(pool, c["id"]).backfill_done or None, 120,
                        f"backfill of chain {chain['id']}\n{daemon.log_tail()}", interval=0.5)
        assert done
        synced = cursor(pool, chain["id"]).synced_block
        truth, mine = comparable(sim.truth(chain["id"], synced)), comparable(stored(pool, chain["id"], synced))
        assert len(truth) > HISTORY_BLOCKS  # about two transfers a block
        assert mine == truth, f"chain {chain['id']}: {len(mine)} stored vs {len(truth)} true up to {synced}"


def test_daemon_ingests_survives_kill_9_and_stops_cleanly(daemon: Daemon, sim: Sim, database_url: str) -> None:
    pool = open_pool(database_url, 1, 2, "e2e-test")
    try:
        wait_for(lambda: daemon.running("worker[cronos]"), 60, f"worker[cronos] running\n{daemon.log_tail()}")
        # kill -9 the worker in the middle of its backfill
        wait_for(lambda: cursor(pool, 25).backfilled_block is not None or None, 60, "backfill of cronos started")
        victim = daemon.children()["worker[cronos]"]["pid"]
        assert not cursor(pool, 25).backfill_done, "backfill finished before the kill: make the history longer"
        os.kill(victim, signal.SIGKILL)
        replaced = wait_for(lambda: daemon.running("worker[cronos]", restarted=1), 30,
                            f"worker[cronos] restarted\n{daemon.log_tail()}")
        assert replaced["pid"] != victim
        assert_store_equals_truth(pool, sim, daemon)

        # kill -9 the API (gunicorn's master): restarted, and answering again
        wait_for(lambda: daemon.running("api"), 30, "api running")
        api_pid = daemon.children()["api"]["pid"]
        os.kill(api_pid, signal.SIGKILL)
        wait_for(lambda: daemon.running("api", restarted=1), 30, f"api restarted\n{daemon.log_tail()}")
        answer = wait_for(lambda: (r := daemon.api("/api/transfers", chainId=0)) is not None
                          and r.status_code == 200 and r, 60, f"api answering\n{daemon.log_tail()}", interval=0.3)
        body = answer.json()
        assert body["items"] and set(body["chains"]) == {"1", "25"}
        assert daemon.children()["api"]["pid"] != api_pid
        assert_store_equals_truth(pool, sim, daemon)
    finally:
        pool.close()

    daemon.remember()
    started = time.monotonic()
    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.process.wait(SHUTDOWN_TIMEOUT_S + 5) == 0, daemon.log_tail()
    assert time.monotonic() - started < SHUTDOWN_TIMEOUT_S + 5
    wait_for(lambda: not [pid for pid in daemon.seen if psutil.pid_exists(pid)
                          and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE], 10,
             "every process of the daemon gone")
