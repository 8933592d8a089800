"""End to end: `transfer-daemon start` against the simulator with every alert receiver configured
(a webhook and an Alertmanager on loopback HTTP, an aiosmtpd mail server). The upstream goes down
for longer than `alerts.lag_threshold_s`: each receiver gets exactly one IngestLag firing and one
resolved, within the threshold + 30 s of the outage's start and 30 s of its end, and the lag in
/api/transfers climbs meanwhile."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from alert_receivers import HttpReceiver, MailReceiver
from net_support import free_port

from transfer_daemon.simulate import ChainSpec, SimConfig, start_in_thread

pytestmark = pytest.mark.slow

LAG_THRESHOLD_S = 15
OUTAGE_S = 35
HOOK_ENV, SMTP_ENV = "E2E_ALERT_HOOK", "E2E_ALERT_SMTP"


def _config(root: Path, database_url: str, sim_url: str, chain: dict, api_port: int, am_url: str) -> Path:
    path = root / "td.toml"
    path.write_text(
        f'[daemon]\ndata_dir = "{root / "data"}"\nlog_file = "{root / "data" / "td.log"}"\nshutdown_timeout = 8\n\n'
        f'[database]\nurl = "{database_url}"\npool_max = 4\n\n[api]\nport = {api_port}\nstale_after_s = 10\n\n'
        f"[alerts]\nlag_threshold_s = {LAG_THRESHOLD_S}\nevaluate_interval_s = 2\n"
        f'webhook_url_env = "{HOOK_ENV}"\nalertmanager_url = "{am_url}"\nsmtp_url_env = "{SMTP_ENV}"\n'
        'email_to = ["ops@example.com"]\nemail_from = "daemon@example.com"\n\n'
        f'[[chains]]\nid = 25\nname = "cronos"\nkind = "rpc_logs"\nrpc_url = "{sim_url}/rpc/25"\n'
        f'contracts = {json.dumps(chain["contracts"])}\nstart_block = {chain["head"] - 200}\n'
        "poll_interval_s = 1\nconfirmations = 3\nrate_limit_per_sec = 50\nrequest_timeout_s = 2\n")
    return path


class Receivers:
    def __init__(self) -> None:
        self.http = HttpReceiver().start()
        self.mail = MailReceiver().start()
        self.seen: dict[tuple[str, str], float] = {}  # (receiver, state) -> first seen, monotonic

    def alerts(self) -> dict[str, list[str]]:
        """IngestLag states each receiver got, in order of arrival."""
        hook = [a["state"] for b in self.http.bodies("/hook") for a in b["alerts"] if a["name"] == "IngestLag"]
        manager = []
        for body in self.http.bodies("/api/v2/alerts"):
            for alert in body:
                if alert["labels"]["alertname"] == "IngestLag":
                    manager.append("resolved" if alert.get("endsAt") else "firing")
        mail = [m["content"].split("Subject: [transfer-daemon] ", 1)[1].split(" ", 1)[0].lower()
                for m in self.mail.messages if "IngestLag" in m["content"]]
        return {"webhook": hook, "alertmanager": _squeeze(manager), "email": mail}

    def note(self, now: float) -> None:
        for receiver, states in self.alerts().items():
            for state in states:
                self.seen.setdefault((receiver, state), now)

    def stop(self) -> None:
        self.http.stop()
        self.mail.stop()


def _squeeze(states: list[str]) -> list[str]:
    """Alertmanager gets what still fires again every minute: one firing, however often re-sent."""
    out: list[str] = []
    for state in states:
        if not out or out[-1] != state:
            out.append(state)
    return out


@pytest.fixture
def receivers() -> Iterator[Receivers]:
    running = Receivers()
    yield running
    running.stop()


def _lag(api_port: int) -> float | None:
    try:
        body = requests.get(f"http://127.0.0.1:{api_port}/api/transfers", params={"chainId": 25}, timeout=5).json()
    except (requests.RequestException, ValueError):
        return None
    return body.get("ingestLagSeconds")


def _until(condition, timeout_s: float, tick, what: str) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        tick(time.monotonic())
        if condition():
            return time.monotonic()
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def test_an_outage_fires_and_resolves_ingest_lag_once_at_every_receiver(tmp_path, database_url, receivers) -> None:
    sim_url, stop_sim = start_in_thread(SimConfig(chains=(ChainSpec(25, "rpc_logs", False),), history_days=0.02,
                                                  block_time=1.0, rate_limit=0, seed=5))
    chain = requests.get(f"{sim_url}/_sim/chains", timeout=5).json()["chains"][0]
    api_port = free_port()
    config = _config(tmp_path, database_url, sim_url, chain, api_port, receivers.http.url)
    env = {**os.environ, HOOK_ENV: receivers.http.url + "/hook",
           SMTP_ENV: f"smtp://127.0.0.1:{receivers.mail.port}"}
    env.pop("TRANSFERS_DATABASE_URL", None)
    daemon = subprocess.Popen([sys.executable, "-m", "transfer_daemon.cli", "start", "--config", str(config)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _until(lambda: (_lag(api_port) or 99) < 5, 90, receivers.note, "the first syncs")
        requests.post(f"{sim_url}/_sim/control", json={"outage": True}, timeout=5)
        outage_start = time.monotonic()
        lags = []
        fired = _until(lambda: all(receivers.alerts().values()), LAG_THRESHOLD_S + 40,
                       lambda now: (receivers.note(now), lags.append(_lag(api_port))), "IngestLag firing everywhere")
        while time.monotonic() < outage_start + OUTAGE_S:
            receivers.note(time.monotonic())
            lags.append(_lag(api_port))
            time.sleep(1)
        requests.post(f"{sim_url}/_sim/control", json={"outage": False}, timeout=5)
        outage_end = time.monotonic()
        _until(lambda: all(s[-1:] == ["resolved"] for s in receivers.alerts().values()), 45, receivers.note,
               "IngestLag resolved everywhere")
        time.sleep(5)  # nothing more may come
        receivers.note(time.monotonic())
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
        stop_sim()
    assert receivers.alerts() == {"webhook": ["firing", "resolved"], "alertmanager": ["firing", "resolved"],
                                  "email": ["firing", "resolved"]}
    for receiver in ("webhook", "alertmanager", "email"):
        print(f"{receiver}: firing {receivers.seen[(receiver, 'firing')] - outage_start:.1f}s after the outage began,"
              f" resolved {receivers.seen[(receiver, 'resolved')] - outage_end:.1f}s after it ended")
        assert receivers.seen[(receiver, "firing")] - outage_start <= LAG_THRESHOLD_S + 30, receiver
        assert receivers.seen[(receiver, "resolved")] - outage_end <= 30, receiver
    climbing = [lag for lag in lags if lag is not None]
    assert climbing and max(climbing) >= LAG_THRESHOLD_S and fired - outage_start > LAG_THRESHOLD_S - 2
