"""`transfer-daemon demo`: the simulated upstream in a subprocess, a config aimed at it, the daemon.

The history is kept small (two days, a block every 6 s) so that the API answers with fresh data
within a minute and the backfill finishes within a few. The config is self-contained: environment
overrides of declared settings are dropped, so a TRANSFERS_DATABASE_URL in the shell can never point
the demo at a real database.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import requests

from transfer_daemon.config import load_config, settings_reference
from transfer_daemon.errors import TransferDaemonError

SIM_CHAINS = "1:etherscan,25:rpc_logs"
HISTORY_DAYS = 2
BLOCK_TIME_S = 6
SIM_RATE_LIMIT = 10  # calls/s per key (explorer) or per URL (rpc) before the simulator refuses
POLL_INTERVAL_S = 5
KEY_ENV = "DEMO_EXPLORER_KEY"
CONFIG_NAME = "transfer-daemon.toml"
NAMES = {1: "ethereum", 25: "cronos"}
SIM_START_TIMEOUT_S = 30
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the simulator child: a demo killed with -9 must not leave its simulator behind."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class SimulatorProcess:
    """`transfer-daemon simulate --port 0` in its own process group (so a terminal's Ctrl-C reaches
    only the supervisor, which stops the daemon first); output goes to `log_path`."""

    def __init__(self, log_path: Path, *, history_days: float = HISTORY_DAYS, block_time_s: float = BLOCK_TIME_S,
                 extra_args: Sequence[str] = ()) -> None:
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        self.url = ""
        self.args = ["--history-days", str(history_days), "--block-time", str(block_time_s),
                     "--rate-limit", str(SIM_RATE_LIMIT), *extra_args]

    def start(self) -> str:
        args = [sys.executable, "-m", "transfer_daemon.cli", "simulate", "--port", "0", "--chains", SIM_CHAINS,
                *self.args]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as output:
            self.process = subprocess.Popen(args, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True, preexec_fn=_die_with_parent,
                                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.url = self._wait_for_url(time.monotonic() + SIM_START_TIMEOUT_S)
        return self.url

    def _wait_for_url(self, deadline: float) -> str:
        prefix = "simulator listening on "
        while time.monotonic() < deadline:
            for line in self.log_path.read_text(errors="replace").splitlines():
                if line.startswith(prefix):
                    return line[len(prefix):].strip()
            if self.process is not None and self.process.poll() is not None:
                break
            time.sleep(0.1)
        raise TransferDaemonError(f"the simulator did not start; see {self.log_path}")

    def chains(self) -> list[dict]:
        answer = requests.get(f"{self.url}/_sim/chains", timeout=10)
        answer.raise_for_status()
        return answer.json()["chains"]

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _toml(value: object) -> str:
    """JSON strings, numbers, booleans and lists of them are valid TOML values."""
    return json.dumps(value)


def _chain_table(chain: dict, sim_url: str, overrides: Mapping[str, object]) -> list[str]:
    fields: dict[str, object] = {
        "id": chain["id"], "name": NAMES.get(chain["id"], f"chain-{chain['id']}"), "kind": chain["kind"],
        "contracts": chain["contracts"], "poll_interval_s": POLL_INTERVAL_S,
        "backfill_days": HISTORY_DAYS + 1, "confirmations": 3, "request_timeout_s": 10,
    }
    if chain["kind"] == "rpc_logs":
        fields.update(rpc_url=f"{sim_url}/rpc/{chain['id']}", rate_limit_per_sec=8, log_window_blocks=2000)
    else:
        fields.update(base_url=f"{sim_url}/v2/api", api_key_env=KEY_ENV, rate_limit_per_sec=4, page_size=1000)
    fields.update(overrides)
    return ["[[chains]]", *(f"{key} = {_toml(value)}" for key, value in fields.items()), ""]


def write_config(data_dir: Path, port: int, sim_url: str, chains: list[dict],
                 overrides: Mapping[str, Mapping[str, object]] | None = None) -> Path:
    """The demo's TOML: embedded Postgres in data_dir, the API on `port`, every chain on the simulator.

    `overrides` replaces or adds keys per section (`daemon`, `database`, `api`; `chains` applies to
    every chain): the soak run reuses this config with a short `stale_after_s` or a server URL.
    """
    overrides = overrides or {}
    sections: dict[str, dict[str, object]] = {
        "daemon": {"data_dir": str(data_dir), "log_file": str(data_dir / "log" / "transfer-daemon.log"),
                   "shutdown_timeout": 10},
        "database": {"url": "", "pool_max": 4},
        "api": {"host": "127.0.0.1", "port": port, "workers": 2, "threads": 4},
    }
    lines = ["# Written by `transfer-daemon demo`; rewritten on every demo start."]
    for name, fields in sections.items():
        fields.update(overrides.get(name, {}))
        lines += [f"[{name}]", *(f"{key} = {_toml(value)}" for key, value in fields.items()), ""]
    for chain in chains:
        lines += _chain_table(chain, sim_url, overrides.get("chains", {}))
    path = data_dir / CONFIG_NAME
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as config_file:
        config_file.write("\n".join(lines))
    os.chmod(path, 0o600)  # one an earlier demo wrote open
    return path


def _check_port_free(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise TransferDaemonError(f"API port {port} is not free ({exc.strerror}); pass --port") from None


def isolated_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` without the overrides of declared settings, plus the explorer's dummy key: the
    demo's file is the whole config."""
    dropped = {env for _key, _type, _default, env, _help in settings_reference() if env} | {"TRANSFERS_CONFIG"}
    return {**{k: v for k, v in environ.items() if k not in dropped}, KEY_ENV: "demo-key-not-secret"}


def _isolate_environment() -> None:
    clean = isolated_environ(os.environ)
    for key in set(os.environ) - set(clean):
        del os.environ[key]
    os.environ.update(clean)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_demo(port: int, data_dir: str, *, echo: Callable[[str], None] = print) -> int:
    """Simulator + config + `run_start` in the foreground; the simulator stops when the daemon does."""
    from transfer_daemon.daemon.private import make_private
    from transfer_daemon.daemon.start import run_start

    if port:
        _check_port_free(port)
    root = Path(data_dir).expanduser().resolve()
    make_private(root)
    _isolate_environment()
    # Until the supervisor installs its own handlers, SIGTERM unwinds like Ctrl-C (the finally below).
    signal.signal(signal.SIGTERM, _raise_interrupt)
    simulator = SimulatorProcess(root / "log" / "simulator.log")
    try:
        sim_url = simulator.start()
        chains = simulator.chains()
        config_path = write_config(root, port, sim_url, chains)
        config = load_config(config_path)
        _announce(echo, sim_url, chains, config_path, port)
        return run_start(config, foreground=True, announce=echo)
    except KeyboardInterrupt:
        echo("demo: interrupted before the daemon started")
        return 0
    finally:
        simulator.stop()


def _announce(echo: Callable[[str], None], sim_url: str, chains: list[dict], config_path: Path, port: int) -> None:
    listed = ", ".join(f"{NAMES.get(c['id'], c['id'])} ({c['id']}, {c['kind']})" for c in chains)
    api = f"http://127.0.0.1:{port}"
    echo(f"demo: simulator at {sim_url}: {listed}; {HISTORY_DAYS} days of history, a block every {BLOCK_TIME_S} s")
    echo(f"demo: config {config_path}")
    echo(f"demo: API {api}/api/transfers   status page {api}/status   health {api}/api/cache-health")
    echo(f"demo: see `transfer-daemon status --config {config_path}`; Ctrl-C stops everything")
