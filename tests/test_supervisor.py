"""The supervisor with real processes and real signals (launcher in a subprocess, small targets)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from supervisor_support import LAUNCHER, Daemon, chain_toml, wait_for

from transfer_daemon.state import pid_alive

pytestmark = pytest.mark.slow

OK_A = chain_toml(1, "ok-a")
OK_B = chain_toml(2, "ok-b")


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator:
    made: list[Daemon] = []

    def make(name: str = "d", **options) -> Daemon:
        root = tmp_path / name
        root.mkdir()
        daemon = Daemon(root, **options)
        made.append(daemon)
        return daemon

    yield make
    for daemon in made:
        daemon.cleanup()


def _stamp(line: str) -> float:
    return datetime.fromisoformat(line.split(" ", 1)[0].replace("Z", "+00:00")).timestamp()


def test_crashing_child_is_restarted_with_growing_delays(daemons):
    daemon = daemons(policy={"initial": 0.1, "maximum": 1.6, "max_failures": 10})
    daemon.start(OK_A, chain_toml(2, "crash-b"))
    daemon.wait_child("worker[crash-b]", lambda c: c["restarts"] >= 5, "five restarts")
    announced = [float(m) for m in re.findall(r"exited worker\[crash-b\].*restarting in ([\d.]+)s", daemon.log())]
    assert announced[:5] == [0.1, 0.2, 0.4, 0.8, 1.6]
    spawns = [_stamp(line) for line in daemon.log_lines("spawned worker[crash-b]")]
    gaps = [later - earlier for earlier, later in zip(spawns, spawns[1:], strict=False)]
    for gap, delay in zip(gaps, announced, strict=False):
        assert gap >= delay - 0.01
    assert all(later > earlier for earlier, later in zip(gaps, gaps[1:], strict=False)), gaps
    assert gaps[3] - gaps[0] >= 0.6, gaps
    assert daemon.child("worker[ok-a]")["restarts"] == 0


def test_repeated_failures_go_fatal_visible_in_state_and_not_hot_looped(daemons):
    daemon = daemons(policy={"max_failures": 3, "fatal_retry": 30.0})
    daemon.start(OK_A, chain_toml(2, "crash-b"))
    fatal = daemon.wait_state("worker[crash-b]", "FATAL")
    assert fatal["failures"] == 3 and fatal["last_exit"]["status"] == 3 and fatal["pid"] is None
    assert fatal["next_start_at"] >= time.time() + 25
    gave_up = daemon.log_lines("gave up on worker[crash-b]")
    assert len(gave_up) == 1 and " ERROR " in gave_up[0]
    time.sleep(1.0)
    assert daemon.child("worker[crash-b]")["restarts"] == 3, "a FATAL child waits for its slow retry"
    assert daemon.child("worker[ok-a]")["state"] == "RUNNING"


def test_a_workers_published_backlog_reaches_the_state_file(daemons):
    daemon = daemons()
    daemon.start(OK_A, chain_toml(2, "busy-b"))
    busy = daemon.wait_child("worker[busy-b]", lambda c: c["state"] == "RUNNING" and "queued_jobs" in c, "a backlog")
    assert (busy["queued_jobs"], busy["backfill_span"]) == (2, 500)
    assert "queued_jobs" not in daemon.wait_state("worker[ok-a]", "RUNNING"), "nothing published, nothing shown"


def test_hung_child_is_killed_by_heartbeat_timeout_and_restarted(daemons):
    daemon = daemons(heartbeat_timeout=1.0)
    daemon.start(OK_A, chain_toml(3, "hang-c"))
    first = daemon.wait_child("worker[hang-c]", lambda c: c["pid"], "hang-c spawned")["pid"]
    restarted = daemon.wait_child("worker[hang-c]", lambda c: c["restarts"] >= 1 and c["pid"], "hang-c restarted")
    assert restarted["pid"] != first
    assert restarted["last_exit"]["status"] == -signal.SIGKILL
    assert "heartbeat timeout" in restarted["last_exit"]["reason"]
    assert daemon.log_lines("killing worker[hang-c]") and daemon.log_lines("no heartbeat for")
    assert daemon.child("worker[ok-a]")["restarts"] == 0, "a beating worker is left alone"


def test_sigterm_stops_children_and_exits_zero_within_the_grace(daemons):
    daemon = daemons(shutdown_timeout=3.0)
    daemon.start(OK_A, OK_B, running=("worker[ok-a]", "worker[ok-b]", "api"))
    pids = [c["pid"] for c in daemon.state()["children"].values()]
    began = time.monotonic()
    daemon.signal(signal.SIGTERM)
    assert daemon.process.wait(timeout=3.0 + 2) == 0
    assert time.monotonic() - began < 3.0
    assert not any(pid_alive(pid) for pid in pids)
    assert not (daemon.data_dir / "transfer-daemon.pid").exists()
    final = daemon.state()
    assert final["state"] == "stopped"
    assert {c["state"] for c in final["children"].values()} == {"STOPPED"}
    assert daemon.log_lines("stopped worker[ok-a]") and daemon.log_lines("down ok-a")


def test_child_ignoring_sigterm_is_killed_after_the_grace(daemons):
    daemon = daemons(shutdown_timeout=1.0)
    daemon.start(OK_A, chain_toml(4, "stubborn-d"), running=("worker[stubborn-d]",))
    stubborn = daemon.child("worker[stubborn-d]")["pid"]
    began = time.monotonic()
    daemon.signal(signal.SIGTERM)
    assert daemon.process.wait(timeout=5) == 0
    assert 1.0 <= time.monotonic() - began < 3.0
    assert not pid_alive(stubborn)
    assert daemon.log_lines("killing worker[stubborn-d]")
    assert "after the stop grace" in daemon.state()["children"]["worker[stubborn-d]"]["last_exit"]["reason"]


def test_second_sigterm_kills_children_at_once(daemons):
    daemon = daemons(shutdown_timeout=30.0)
    daemon.start(chain_toml(4, "stubborn-d"), running=("worker[stubborn-d]",))
    daemon.signal(signal.SIGTERM)
    wait_for(lambda: daemon.state()["state"] == "stopping", 5, "stopping")
    began = time.monotonic()
    daemon.signal(signal.SIGINT)
    assert daemon.process.wait(timeout=5) == 0
    assert time.monotonic() - began < 2.0
    assert daemon.log_lines("killing every child: SIGINT received again")


def test_sighup_restarts_only_the_changed_child(daemons):
    daemon = daemons()
    daemon.start(OK_A, OK_B, running=("worker[ok-a]", "worker[ok-b]", "api"))
    before = {name: c["pid"] for name, c in daemon.state()["children"].items()}
    daemon.write_config(OK_A, chain_toml(2, "ok-b", poll_interval_s=5), chain_toml(5, "ok-e"))
    daemon.signal(signal.SIGHUP)
    changed = daemon.wait_child("worker[ok-b]", lambda c: c["pid"] not in (None, before["worker[ok-b]"]),
                                "ok-b restarted")
    assert changed["restarts"] == 0, "a reload is not a failure"
    daemon.wait_state("worker[ok-e]", "RUNNING")
    after = {name: c["pid"] for name, c in daemon.state()["children"].items()}
    assert after["worker[ok-a]"] == before["worker[ok-a]"] and after["api"] == before["api"]
    assert daemon.log_lines("reloaded config: 1 started, 1 restarted, 0 stopped")

    daemon.write_config(OK_A, chain_toml(5, "ok-e"))
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: "worker[ok-b]" not in daemon.state()["children"], 10, "ok-b removed")
    assert not pid_alive(after["worker[ok-b]"]) and pid_alive(after["worker[ok-a]"])

    daemon.config_path.write_text(daemon.config_path.read_text() + '\n[api]\nport = "not a port"\n')
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: daemon.log_lines("reload failed"), 10, "reload failure logged")
    assert "api.port" in daemon.log_lines("reload failed")[0]
    current = {name: c["pid"] for name, c in daemon.state()["children"].items()}
    assert current == {"worker[ok-a]": after["worker[ok-a]"], "worker[ok-e]": after["worker[ok-e]"],
                       "api": after["api"]}
    assert daemon.process.poll() is None


def test_second_start_on_the_same_data_dir_is_refused(daemons):
    daemon = daemons()
    daemon.start(OK_A, running=("worker[ok-a]",))
    second = daemon.launch()
    assert second.wait(timeout=10) == 1
    by_cli = daemon.cli("start")
    assert by_cli.returncode == 1
    assert f"already running (pid {daemon.process.pid}" in by_cli.stderr
    assert daemon.process.poll() is None and (daemon.data_dir / "transfer-daemon.pid").exists()


def test_stale_pidfile_is_recovered(daemons):
    daemon = daemons()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    daemon.data_dir.mkdir(parents=True)
    (daemon.data_dir / "transfer-daemon.pid").write_text(f"{dead.pid}\n")
    daemon.start(OK_A, running=("worker[ok-a]",))
    assert (daemon.data_dir / "transfer-daemon.pid").read_text().strip() == str(daemon.process.pid)
    assert daemon.log_lines(f"recovered stale pidfile {daemon.data_dir / 'transfer-daemon.pid'} (pid {dead.pid}")


def test_kill_9_of_a_child_restarts_it(daemons):
    daemon = daemons()
    daemon.start(OK_A, running=("worker[ok-a]",))
    victim = daemon.child("worker[ok-a]")["pid"]
    os.kill(victim, signal.SIGKILL)
    back = daemon.wait_child("worker[ok-a]", lambda c: c["pid"] not in (None, victim), "ok-a restarted")
    assert back["restarts"] == 1 and back["last_exit"]["reason"] == "killed by SIGKILL"


def test_stop_command_stops_a_running_daemon_and_reports_not_running(daemons):
    daemon = daemons()
    daemon.start(OK_A, running=("worker[ok-a]", "api"))
    child = daemon.child("worker[ok-a]")["pid"]
    stopped = daemon.cli("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped" in stopped.stdout
    assert daemon.process.wait(timeout=5) == 0 and not pid_alive(child)
    again = daemon.cli("stop")
    assert again.returncode == 1 and "not running" in again.stderr


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_child_lines_are_tagged_and_secrets_redacted(daemons, log_format):
    secret = "sekrit-key-0123456789"
    daemon = daemons(log_format=log_format, env={"TD_TEST_KEY": secret})
    daemon.start(OK_A, chain_toml(6, "leaky-f", api_key_env="TD_TEST_KEY"),
                 running=("worker[leaky-f]", "worker[ok-a]", "api"))
    wait_for(lambda: daemon.log_lines("stray print"), 5, "stray output captured")
    text = daemon.log() + daemon.stderr_path.read_text()
    assert secret not in text and "hunter2pass" not in text
    assert "apikey=***" in text and "postgresql://ingest:***@db.internal" in text
    if log_format == "json":
        records = [json.loads(line) for line in daemon.log().splitlines()]
        tags = {r["process"] for r in records}
        assert {"supervisor", "worker[ok-a]", "worker[leaky-f]", "api"} <= tags
        stray = next(r for r in records if "stray print" in r["message"])
        assert stray["process"] == "worker[leaky-f]" and stray["level"] == "WARNING"
        assert stray["message"] == "stray print with key ***"
        assert all(r["chain"] == "leaky-f" for r in records if r["process"] == "worker[leaky-f]")
    else:
        assert re.search(r"Z INFO worker\[ok-a\] tests\.launcher: up ok-a pid \d+$", text, re.M)
        assert re.search(r"Z INFO api tests\.launcher: up api pid", text, re.M)
        assert re.search(r"Z INFO supervisor chain=ok-a transfer_daemon\.daemon\.supervisor: spawned worker\[ok-a\]",
                         text, re.M)
        assert re.search(r"Z WARNING worker\[leaky-f\] stderr: stray print with key \*\*\*$", text, re.M)


def test_detach_returns_at_once_and_logs_to_the_file_only(daemons):
    daemon = daemons()
    daemon.write_config(OK_A)
    detached = subprocess.run([sys.executable, str(LAUNCHER), str(daemon.config_path)], capture_output=True,
                              text=True, timeout=20, env={**daemon.env, "TD_DETACH": "1"})
    assert detached.returncode == 0, detached.stderr
    pid = int(re.search(r"started \(pid (\d+)\)", detached.stdout)[1])
    try:
        assert (daemon.data_dir / "transfer-daemon.pid").read_text().strip() == str(pid)
        daemon.wait_state("worker[ok-a]", "RUNNING")
        assert daemon.log_lines("up ok-a") and detached.stderr == ""
        stopped = daemon.cli("stop")
        assert stopped.returncode == 0, stopped.stderr
        assert not pid_alive(pid)
    finally:
        if pid_alive(pid):
            os.kill(pid, signal.SIGTERM)


def test_a_slow_database_revive_never_stalls_the_loop(daemons):
    daemon = daemons(env={"TD_SLOW_REVIVE": "60"}, shutdown_timeout=5.0)
    daemon.start(OK_A, running=("worker[ok-a]",))
    wait_for(lambda: daemon.log_lines("slow revive started"), 15, "the first database check")
    victim = daemon.child("worker[ok-a]")["pid"]
    os.kill(victim, signal.SIGKILL)
    daemon.wait_child("worker[ok-a]", lambda c: c["pid"] not in (None, victim) and c["state"] == "RUNNING",
                      "the killed worker reaped and restarted while the check runs", timeout=5)
    daemon.signal(signal.SIGTERM)
    assert daemon.process.wait(10) == 0
    assert daemon.log_lines("stopped: every child has exited") and not daemon.log_lines("slow revive ended")
