"""A real daemon with a distinctive explorer API key (and upstream faults, so error paths run): the
key appears in no log line, API body, `status --json`, `logs` output, stored event, file under
data_dir, nor the simulator's statistics; the API listens on loopback only."""

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


def test_the_api_key_appears_nowhere(host, secret: str, database_url: str) -> None:
    sim, daemon = host
    daemon.start()
    wait_for(lambda: sim.stats()["requests"].get(redact_key(secret), 0) >= 5, 60,
             f"the daemon calling the explorer with its key\n{daemon.tail()}", 0.3)
    wait_for(lambda: "ingested chain=ethereum" in daemon.log(), 60, f"ethereum ingested\n{daemon.tail()}", 0.3)
    wait_for(lambda: (r := daemon.get("/readyz")) is not None and r.status_code == 200, 60,
             f"api ready\n{daemon.tail()}", 0.3)
    assert listening_addresses(daemon) == {"127.0.0.1"}

    seen: dict[str, str] = {}
    for path in ENDPOINTS:
        answer = daemon.get(path)
        assert answer is not None and answer.status_code < 500, path
        seen[f"GET {path}"] = answer.text
    status = daemon.cli("status", "--json")
    assert status.returncode == 0, status.stderr
    assert '"chains"' in status.stdout or '"ethereum"' in status.stdout
    seen["status --json"] = status.stdout + status.stderr
    logs = daemon.cli("logs")
    assert logs.returncode == 0 and "ingested chain=" in logs.stdout
    seen["logs"] = logs.stdout + logs.stderr
    stats = sim.stats()
    assert stats["faultsTotal"] > 0, "no fault was injected: the error paths did not run"
    seen["/_sim/stats"] = str(stats)
    seen["stored rows"] = stored_text(database_url)
    assert daemon.stop() == 0
    seen["log file"] = daemon.log()
    seen["supervisor stderr"] = daemon.stderr.read_text(errors="replace")
    seen["files under data_dir"] = files_text(daemon.data_dir).decode("latin-1")

    leaks = [where for where, text in seen.items() if secret in text]
    assert leaks == [], f"the API key leaked into: {leaks}"
    assert "apikey=***" in seen["log file"] or "apikey" not in seen["log file"]
