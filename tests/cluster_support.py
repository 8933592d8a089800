"""Real `transfer-daemon start` processes against an in-thread simulator, for the multi-host and
security tests: config writing, the process tree, kill -9 of a whole "host", the advisory-lock
holders as Postgres sees them."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import psycopg
import requests
from net_support import free_port

from transfer_daemon.simulate import ChainSpec, SimConfig, start_in_thread

NAMES = {1: "ethereum", 25: "cronos"}
_LOCK_HOLDER = re.compile(r"^transfer-daemon lock (\S+) pid (\d+)$")


class Sim:
    """The simulator in a thread: chain 1 behind an explorer API, chain 25 behind JSON-RPC."""

    def __init__(self, history_blocks: int, **options) -> None:
        config = SimConfig(chains=(ChainSpec(1, "etherscan"), ChainSpec(25, "rpc_logs", False)),
                           history_days=history_blocks / 86400, block_time=1.0, seed=5, **{"rate_limit": 0, **options})
        self.url, self.stop = start_in_thread(config)
        self.chains = requests.get(f"{self.url}/_sim/chains", timeout=5).json()["chains"]

    def stats(self) -> dict:
        return requests.get(f"{self.url}/_sim/stats", timeout=5).json()


def chain_toml(chain: dict, sim_url: str, key_env: str, poll_interval_s: int, rpc_path: str = "",
               **extra: object) -> str:
    fields = {"id": chain["id"], "name": NAMES[chain["id"]], "kind": chain["kind"], "contracts": chain["contracts"],
              "start_block": chain["firstBlock"], "poll_interval_s": poll_interval_s, "confirmations": 3,
              "rate_limit_per_sec": 50, "request_timeout_s": 5}
    if chain["kind"] == "rpc_logs":
        fields.update(rpc_url=f"{sim_url}/rpc/{chain['id']}{rpc_path}", log_window_blocks=200)
    else:
        fields.update(base_url=f"{sim_url}/v2/api", api_key_env=key_env, page_size=200)
    fields.update(extra)
    return "[[chains]]\n" + "".join(f"{key} = {json.dumps(value)}\n" for key, value in fields.items())


class Host:
    """One `transfer-daemon start` with a data_dir and an API port of its own."""

    def __init__(self, root: Path, database_url: str, sim: Sim, *, env: dict[str, str], key_env: str,
                 poll_interval_s: int = 2, extra_toml: str = "", rpc_path: str = "",
                 chain_fields: dict | None = None) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.data_dir = root / "data"
        self.log_path = self.data_dir / "td.log"
        self.api_port = free_port()
        self.config_path = root / "td.toml"
        self.config_path.write_text(
            f'[daemon]\ndata_dir = "{self.data_dir}"\nlog_file = "{self.log_path}"\n'
            f"shutdown_timeout = 8\nheartbeat_timeout = 30\n\n"
            f'[database]\nurl = "{database_url}"\npool_max = 4\n\n'
            f"[api]\nport = {self.api_port}\nworkers = 2\nthreads = 2\n\n{extra_toml}\n"
            + "\n".join(chain_toml(chain, sim.url, key_env, poll_interval_s, rpc_path, **(chain_fields or {}))
                        for chain in sim.chains))
        self.env = {**os.environ, **env}
        self.env.pop("TRANSFERS_DATABASE_URL", None)
        self.stderr = root / "stderr.txt"
        self.process: subprocess.Popen | None = None
        self.seen: set[int] = set()

    def start(self) -> Host:
        with open(self.stderr, "ab") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "transfer_daemon.cli", "start", "--config", str(self.config_path)],
                env=self.env, stdout=err, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.seen.add(self.process.pid)
        return self

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "transfer_daemon.cli", *args, "--config", str(self.config_path)],
                              env=self.env, capture_output=True, text=True, timeout=60)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def tail(self) -> str:
        return self.stderr.read_text(errors="replace")[-3000:] if self.stderr.exists() else ""

    def tree(self) -> list[psutil.Process]:
        """The supervisor and every process below it (workers, the API, gunicorn's workers)."""
        try:
            top = psutil.Process(self.process.pid)
            processes = [top, *top.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
        self.seen.update(p.pid for p in processes)
        return processes

    def children(self) -> dict[str, dict]:
        try:
            state = json.loads((self.data_dir / "supervisor-state.json").read_text())
        except (OSError, ValueError):
            return {}
        self.tree()
        return state["children"]

    def worker_pids(self) -> set[int]:
        return {c["pid"] for name, c in self.children().items() if name.startswith("worker[") and c["pid"]}

    def get(self, path: str, **params: object) -> requests.Response | None:
        try:
            return requests.get(f"http://127.0.0.1:{self.api_port}{path}", params=params, timeout=5)
        except requests.RequestException:
            return None

    def kill_host(self) -> None:
        """kill -9 the supervisor and everything below it at once: the machine died."""
        for process in self.tree():
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        self.process.wait(10)

    def stop(self, timeout: float = 20) -> int:
        self.tree()
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def cleanup(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.tree()
            self.process.kill()
            self.process.wait(10)
        for pid in self.seen:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def lock_holders(database_url: str) -> dict[str, list[int]]:
    """Chain name -> pids of the workers whose sessions hold a granted advisory lock (pg_locks)."""
    holders: dict[str, list[int]] = {}
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.granted AND l.database ="
            " (SELECT oid FROM pg_database WHERE datname = current_database())").fetchall()
    for (name,) in rows:
        match = _LOCK_HOLDER.match(name or "")
        if match:
            holders.setdefault(match[1], []).append(int(match[2]))
    return holders
