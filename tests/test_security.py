"""Security pass, the fast part: loopback bind by default, SQL injection through every /api/transfers
filter (always a 400, the table untouched), the simulator's statistics never show a raw key, a
world-readable .env is warned about at start (naming the file, never its content)."""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path
from urllib.parse import urlencode

import psycopg
import pytest
from supervisor_support import Daemon, chain_toml, wait_for

from tests.api_support import make_config, migrated, transfer, write
from transfer_daemon.api import create_app
from transfer_daemon.api.params import PARAMETERS
from transfer_daemon.api.server import ApiServer
from transfer_daemon.config import ConfigError, parse_config
from transfer_daemon.daemon.logs import RedactingFilter, secrets_from_config
from transfer_daemon.redact import redact_url
from transfer_daemon.simulate.stats import SimStats, redact_key
from transfer_daemon.store.cursor import CursorPosition, encode_cursor

INJECTIONS = [
    "' OR 1=1 --", "0x00'; DROP TABLE transfers; --", "1; DROP TABLE transfers", "1 OR 1=1",
    "desc; DELETE FROM transfers", "0x" + "a" * 38 + "' --", "1) UNION SELECT * FROM pg_user --",
    "'; SELECT pg_sleep(5); --", "$$; DROP TABLE transfers; $$", "2024-01-01' OR '1'='1",
]


def test_the_api_binds_to_loopback_unless_configured():
    minimal = {"chains": [{"id": 1, "name": "eth", "kind": "rpc_logs", "rpc_url": "http://127.0.0.1:9",
                           "contracts": ["0x" + "11" * 20]}]}
    default = parse_config(minimal, {})
    assert default.api.host == "127.0.0.1"
    assert ApiServer(default, "postgresql://x").options["bind"] == f"127.0.0.1:{default.api.port}"
    public = parse_config({**minimal, "api": {"host": "0.0.0.0"}}, {})
    assert ApiServer(public, "postgresql://x").options["bind"].startswith("0.0.0.0:")


@pytest.fixture
def seeded(make_database, tmp_path):
    url = migrated(make_database())
    write(url, 1, [transfer(1, n) for n in range(10)])
    write(url, 25, [transfer(25, n) for n in range(10)])
    app = create_app(make_config(tmp_path), url)
    yield url, app
    app.extensions["transfer_daemon"].close()


def table_facts(url: str) -> tuple[str | None, int, int]:
    with psycopg.connect(url, autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass('transfers')::text").fetchone()[0]
        rows = conn.execute("SELECT count(*) FROM transfers").fetchone()[0]
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0]
    return exists, rows, tables


def test_injection_through_every_filter_is_a_400_and_changes_nothing(seeded):
    url, app = seeded
    before = table_facts(url)
    assert before[0] == "transfers" and before[1] == 20
    client = app.test_client()
    assert set(PARAMETERS) == {"address", "from", "to", "contract", "fromBlock", "toBlock", "since", "until",
                               "cursor", "sort", "chainId", "page", "pageSize"}
    for name in PARAMETERS:
        for payload in INJECTIONS:
            for query in ({name: payload}, {"chainId": "1", name: payload} if name != "chainId" else {name: payload}):
                response = client.get("/api/transfers?" + urlencode(query))
                assert response.status_code == 400, (query, response.status_code, response.get_data()[:200])
                error = response.get_json()["error"]
                assert error["code"] == "invalid_parameter" and error["parameter"] == name
    for payload in INJECTIONS:  # as a parameter name
        response = client.get("/api/transfers?" + urlencode({payload: "1"}))
        assert response.status_code == 400
    assert table_facts(url) == before


def test_a_forged_cursor_carrying_sql_is_only_a_position(seeded):
    """The cursor's check is integrity, not secrecy: anyone can forge one. Its fields are fixed-width
    integers that reach SQL only as bound parameters, so a forged one is only a position."""
    url, app = seeded
    before = table_facts(url)
    cursor = encode_cursor(CursorPosition("desc", 2**31 - 1, 10**9, 0, -(2**31)))
    response = app.test_client().get("/api/transfers?" + urlencode({"chainId": 1, "cursor": cursor}))
    assert response.status_code == 200 and len(response.get_json()["items"]) == 10
    assert table_facts(url) == before


def test_simulator_stats_never_show_a_raw_key():
    secret = f"SECRETKEY-{uuid.uuid4()}"
    stats = SimStats()
    stats.count("requests", redact_key(secret))
    stats.count("rate_limited", redact_key(secret))
    shown = repr(stats.snapshot())
    assert secret not in shown and secret[:8] not in shown
    assert redact_key(secret) == redact_key(secret) != redact_key(secret + "x")
    assert redact_key(secret).startswith("key-") and len(redact_key(secret)) == len("key-") + 8


@pytest.mark.slow
@pytest.mark.parametrize("mode, warned", [(0o644, True), (0o600, False)])
def test_start_warns_about_a_world_readable_dotenv(tmp_path: Path, mode: int, warned: bool):
    secret = f"SECRETKEY-{uuid.uuid4()}"
    env_file = tmp_path / ".env"
    env_file.write_text(f"TD_DOTENV_KEY={secret}\n")
    os.chmod(env_file, mode)
    daemon = Daemon(tmp_path)
    try:
        daemon.start(chain_toml(1, "ok-a", api_key_env="TD_DOTENV_KEY"), running=("worker[ok-a]", "api"))
        wait_for(lambda: daemon.log_lines("started supervisor"), 10, "supervisor started")
        text = daemon.log() + daemon.stderr_path.read_text()
        lines = daemon.log_lines("insecure permissions")
        if warned:
            assert len(lines) == 1 and " WARNING supervisor " in lines[0] and str(env_file) in lines[0]
        else:
            assert lines == []
        assert secret not in text
    finally:
        daemon.cleanup()
    wait_for(lambda: daemon.process.poll() is not None, 10, "launcher exited")


ALCHEMY = "Xy7kPq2LmN9vB3cD5fG8hJ1kL4mN6pQ0"
INFURA = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(("text", "shown"), [
    (f"https://eth-mainnet.g.alchemy.com/v2/{ALCHEMY}", "https://eth-mainnet.g.alchemy.com/v2/***"),
    (f"POST https://mainnet.infura.io/v3/{INFURA} failed: 503", "POST https://mainnet.infura.io/v3/*** failed: 503"),
    (f"https://rpc.ankr.com/eth/{INFURA}?x=1", "https://rpc.ankr.com/eth/***?x=1"),
    (f"(https://name.quiknode.pro/{ALCHEMY}/)", "(https://name.quiknode.pro/***/)"),
    ("https://eth-mainnet.g.alchemy.com/v2/short", "https://eth-mainnet.g.alchemy.com/v2/short"),
    # what is not a key stays readable
    ("https://api.etherscan.io/v2/api?chainid=1", "https://api.etherscan.io/v2/api?chainid=1"),
    ("http://127.0.0.1:8545/rpc/25", "http://127.0.0.1:8545/rpc/25"),
    ("https://docs.example/transfers-and-approvals/intro", "https://docs.example/transfers-and-approvals/intro"),
    ("pgdata=/var/lib/td/pgdata-2024-05-01-abcdef", "pgdata=/var/lib/td/pgdata-2024-05-01-abcdef"),
    ("postgresql://td@db/td_test_0123456789ab", "postgresql://td@db/td_test_0123456789ab"),
    (f"wss://eth-mainnet.g.alchemy.com/v2/{ALCHEMY}", "wss://eth-mainnet.g.alchemy.com/v2/***"),
])
def test_a_provider_key_in_a_url_path_is_redacted(text: str, shown: str):
    assert redact_url(text) == shown


def test_keys_pasted_into_urls_join_the_log_pipelines_secrets(tmp_path):
    config = parse_config({"chains": [
        {"id": 1, "name": "eth", "kind": "rpc_logs", "rpc_url": f"https://eth-mainnet.g.alchemy.com/v2/{ALCHEMY}",
         "contracts": ["0x" + "11" * 20]},
        {"id": 25, "name": "cro", "kind": "rpc_logs", "rpc_url": "https://evm.cronos.org",
         "contracts": ["0x" + "11" * 20]}]}, {})
    secrets = secrets_from_config(config, {})
    assert secrets == {ALCHEMY}
    record = logging.LogRecord("t", logging.WARNING, __file__, 1, "Max retries exceeded with url: /v2/%s", (ALCHEMY,),
                               None)
    RedactingFilter(secrets).filter(record)
    assert ALCHEMY not in record.getMessage()


def test_a_bad_rpc_url_is_refused_without_showing_its_key():
    with pytest.raises(ConfigError) as info:
        parse_config({"chains": [{"id": 1, "name": "eth", "kind": "rpc_logs", "contracts": ["0x" + "11" * 20],
                                  "rpc_url": f"wss://eth-mainnet.g.alchemy.com/v2/{ALCHEMY}"}]}, {})
    assert ALCHEMY not in str(info.value) and info.value.key == "chains[0].rpc_url"
