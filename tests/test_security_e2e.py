"""A real daemon with a distinctive explorer API key (and upstream faults, so error paths run): the
key appears in no log line, API body, `status --json`, `logs` output, stored event, file under
data_dir, nor the simulator's statistics; the API listens on loopback only. The same holds for a
provider key pasted into an rpc_url's path (`…/v2/<key>`)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest
from cluster_support import Host, Sim
from supervisor_support import wait_for

from transfer_daemon.simulate.stats import redact_key

pytestmark = pytest.mark.slow

KEY_ENV = "SECURITY_E2E_EXPLORER_KEY"
ENDPOINTS = ("/api/transfers", "/api/transfers?chainId=1&pageSize=100", "/api/transfers?chainId=1&address=bad",
             "/api/cache-health", "/metrics", "/status", "/api/openapi.json", "/healthz", "/readyz")


@pytest.fixture
def secret() -> str:
    return f"SECRETKEY-{uuid.uuid4()}"


@pytest.fixture
def host(tmp_path: Path, database_url: str, secret: str) -> Iterator[tuple[Sim, Host]]:
    # faults and a tight rate limit: retries, classified errors and rate-limit answers get logged
    sim = Sim(history_blocks=1200, fault_rate=0.1, rate_limit=20, fault_timeout_s=0.5)
    running = Host(tmp_path / "host", database_url, sim, env={KEY_ENV: secret}, key_env=KEY_ENV)
    yield sim, running
    running.cleanup()
    sim.stop()


def stored_text(database_url: str) -> str:
    """Every row of every table but the transfers themselves, as text."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        tables = [name for (name,) in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename NOT LIKE 'transfers%'")]
        return "\n".join(str(conn.execute(f'SELECT * FROM "{name}"').fetchall()) for name in tables)


def files_text(directory: Path) -> bytes:
    return b"\n".join(path.read_bytes() for path in directory.rglob("*") if path.is_file())


def listening_addresses(host: Host) -> set[str]:
    pids = {p.pid for p in host.tree()}
    return {c.laddr.ip for c in psutil.net_connections("inet")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == host.api_port and c.pid in pids}


def everything_shown(sim: Sim, daemon: Host, database_url: str) -> dict[str, str]:
    """Every output an operator or a client sees, by where it was seen; stops the daemon."""
    seen: dict[str, str] = {}
    for path in ENDPOINTS:
        answer = daemon.get(path)
        assert answer is not None and (answer.status_code < 500 or path == "/readyz"), path
        seen[f"GET {path}"] = answer.text
    status = daemon.cli("status", "--json")
    assert status.returncode == 0, status.stderr
    assert '"chains"' in status.stdout or '"ethereum"' in status.stdout
    seen["status --json"] = status.stdout + status.stderr
    logs = daemon.cli("logs")
    assert logs.returncode == 0 and "ingested chain=" in logs.stdout
    seen["logs"] = logs.stdout + logs.stderr
    seen["/_sim/stats"] = str(sim.stats())
    seen["stored rows"] = stored_text(database_url)
    assert daemon.stop() == 0
    seen["log file"] = daemon.log()
    seen["supervisor stderr"] = daemon.stderr.read_text(errors="replace")
    seen["files under data_dir"] = files_text(daemon.data_dir).decode("latin-1")
    return seen


def test_the_api_key_appears_nowhere(host, secret: str, database_url: str) -> None:
    sim, daemon = host
    daemon.start()
    wait_for(lambda: sim.stats()["requests"].get(redact_key(secret), 0) >= 5, 60,
             f"the daemon calling the explorer with its key\n{daemon.tail()}", 0.3)
    wait_for(lambda: "ingested chain=ethereum" in daemon.log(), 60, f"ethereum ingested\n{daemon.tail()}", 0.3)
    wait_for(lambda: (r := daemon.get("/readyz")) is not None and r.status_code == 200, 60,
             f"api ready\n{daemon.tail()}", 0.3)
    assert listening_addresses(daemon) == {"127.0.0.1"}
    assert sim.stats()["faultsTotal"] > 0, "no fault was injected: the error paths did not run"
    seen = everything_shown(sim, daemon, database_url)
    leaks = [where for where, text in seen.items() if secret in text]
    assert leaks == [], f"the API key leaked into: {leaks}"
    assert "apikey=***" in seen["log file"] or "apikey" not in seen["log file"]


@pytest.fixture
def rpc_key_host(tmp_path: Path, database_url: str) -> Iterator[tuple[Sim, Host, str]]:
    # Alchemy-style: the key is the last segment of the URL; the simulator answers that path 404, so
    # every call of the cronos worker fails and the URL runs through every error path
    key = "Al" + uuid.uuid4().hex
    sim = Sim(history_blocks=600)
    running = Host(tmp_path / "host", database_url, sim, env={KEY_ENV: "explorer-key-not-the-point"},
                   key_env=KEY_ENV, rpc_path=f"/v2/{key}")
    yield sim, running, key
    running.cleanup()
    sim.stop()


def cronos_errors(database_url: str) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM ingest_events WHERE chain_id = 25 AND status = 'error'").fetchone()[0]


def test_a_key_pasted_into_rpc_url_appears_nowhere(rpc_key_host, database_url: str) -> None:
    sim, daemon, key = rpc_key_host
    daemon.start()
    wait_for(lambda: "ingested chain=ethereum" in daemon.log(), 60, f"ethereum ingested\n{daemon.tail()}", 0.3)
    wait_for(lambda: cronos_errors(database_url) >= 2, 60, f"cronos failing on its URL\n{daemon.tail()}", 0.3)
    wait_for(lambda: (r := daemon.get("/api/cache-health")) is not None and r.status_code == 200
             and "/rpc/25/v2/" in r.text, 30, "the failing URL shown in cache-health", 0.3)
    seen = everything_shown(sim, daemon, database_url)
    leaks = [where for where, text in seen.items() if key in text]
    assert leaks == [], f"the rpc_url key leaked into: {leaks}"
    assert "/rpc/25/v2/***" in seen["log file"], "the URL never reached the log: the test proves nothing"
