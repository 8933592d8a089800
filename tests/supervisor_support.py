"""A real supervisor in a subprocess (tests/supervisor_launcher.py), its config, state and log."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transfer_daemon.state import pid_alive

LAUNCHER = Path(__file__).with_name("supervisor_launcher.py")
CONTRACT = "0x" + "11" * 20


def chain_toml(chain_id: int, name: str, **extra: Any) -> str:
    lines = ["[[chains]]", f"id = {chain_id}", f'name = "{name}"', 'kind = "rpc_logs"',
             'rpc_url = "http://127.0.0.1:9"', f'contracts = ["{CONTRACT}"]']
    lines += [f"{key} = {json.dumps(value)}" for key, value in extra.items()]
    return "\n".join(lines) + "\n"


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Daemon:
    def __init__(self, root: Path, *, policy: dict | None = None, env: dict | None = None,
                 log_format: str = "text", shutdown_timeout: float = 2.0, heartbeat_timeout: float = 5.0) -> None:
        self.root = root
        self.data_dir = root / "data"
        self.config_path = root / "td.toml"
        self.log_path = self.data_dir / "log" / "td.log"
        self.stderr_path = root / "stderr.txt"
        self.daemon_section = (
            f'[daemon]\ndata_dir = "{self.data_dir}"\nlog_file = "{self.log_path}"\nlog_format = "{log_format}"\n'
            f"shutdown_timeout = {shutdown_timeout}\nheartbeat_timeout = {heartbeat_timeout}\n"
        )
        self.env = {**os.environ, "TD_POLICY": json.dumps(policy or {}), **(env or {})}
        self.process: subprocess.Popen | None = None
        self.seen_pids: set[int] = set()

    def write_config(self, *chains: str) -> None:
        self.config_path.write_text(self.daemon_section + "\n" + "\n".join(chains))

    def launch(self) -> subprocess.Popen:
        with open(self.stderr_path, "ab") as stderr:
            return subprocess.Popen([sys.executable, str(LAUNCHER), str(self.config_path)], env=self.env,
                                    stdout=subprocess.DEVNULL, stderr=stderr, stdin=subprocess.DEVNULL)

    def start(self, *chains: str, running: tuple[str, ...] = ()) -> Daemon:
        if chains:
            self.write_config(*chains)
        self.process = self.launch()
        for name in running:
            self.wait_state(name, "RUNNING")
        return self

    def cli(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "transfer_daemon.cli", *args, "--config", str(self.config_path)],
                              env=self.env, capture_output=True, text=True, timeout=timeout)

    def state(self) -> dict | None:
        try:
            document = json.loads((self.data_dir / "supervisor-state.json").read_text())
        except (OSError, ValueError):
            return None
        self.seen_pids.update(c["pid"] for c in document["children"].values() if c["pid"])
        return document

    def child(self, name: str) -> dict | None:
        document = self.state()
        return document["children"].get(name) if document else None

    def wait_child(self, name: str, predicate: Callable[[dict], bool], what: str, timeout: float = 10) -> dict:
        return wait_for(lambda: (c := self.child(name)) is not None and predicate(c) and c, timeout, what)

    def wait_state(self, name: str, state: str, timeout: float = 10) -> dict:
        return self.wait_child(name, lambda c: c["state"] == state, f"{name} {state}", timeout)

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def log_lines(self, needle: str) -> list[str]:
        return [line for line in self.log().splitlines() if needle in line]

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def cleanup(self) -> None:
        """Never leave a process behind, whatever the test did."""
        self.state()
        if self.process and self.process.poll() is None:
            self.process.terminate()  # graceful, so the supervisor reaps its children itself
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        for pid in self.seen_pids:
            if pid_alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
