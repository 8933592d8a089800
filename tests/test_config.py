"""Configuration: the shipped file loads; every bad value is refused naming its key (exit 2)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from transfer_daemon.config import ConfigError, dotenv_world_readable, load_config, parse_config
from transfer_daemon.redact import redact_url

REPO = Path(__file__).resolve().parent.parent
GOOD_CHAIN = {
    "id": 1,
    "name": "ethereum",
    "kind": "etherscan",
    "base_url": "https://api.etherscan.io/v2/api",
    "api_key_env": "ETHERSCAN_API_KEY",
    "contracts": ["0xdac17f958d2ee523a2206206994597c13d831ec7"],
}


def _doc(**chain_overrides) -> dict:
    return {"chains": [{**GOOD_CHAIN, **chain_overrides}]}


def test_shipped_config_loads() -> None:
    config = load_config(REPO / "etc" / "transfer-daemon.toml", environ={})
    assert [c.name for c in config.chains] == ["ethereum", "cronos"]
    assert config.api.host == "127.0.0.1"
    assert config.ingest.retention_days >= 90
    assert config.chains[1].log_window_blocks == 2000


def test_defaults_and_environment_override() -> None:
    config = parse_config(_doc(), {"TRANSFERS_DATA_SOURCE": "upstream", "TRANSFERS_INGEST_CONCURRENCY": "3"})
    assert config.api.data_source == "upstream"
    assert config.ingest.concurrency == 3
    assert config.database.url == ""
    assert config.chains[0].contracts == ("0xdac17f958d2ee523a2206206994597c13d831ec7",)


def test_dotenv_beside_config_is_read_but_environment_wins(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text(
        '[[chains]]\nid = 1\nname = "a"\nkind = "rpc_logs"\nrpc_url = "http://x"\n'
        'contracts = ["0xdac17f958d2ee523a2206206994597c13d831ec7"]\n'
    )
    (tmp_path / ".env").write_text("TRANSFERS_DATA_SOURCE=upstream\nTRANSFERS_API_PORT=9000\n")
    config = load_config(tmp_path / "c.toml", environ={"TRANSFERS_API_PORT": "9100"})
    assert config.api.data_source == "upstream"
    assert config.api.port == 9100


BAD = [
    ({"daemon": {"colour": "blue"}}, "daemon.colour"),
    ({"nonsense": {}}, "nonsense"),
    ({"api": {"port": "eighty"}}, "api.port"),
    ({"api": {"port": 70000}}, "api.port"),
    ({"api": {"data_source": "redis"}}, "api.data_source"),
    ({"ingest": {"retention_days": 30}}, "ingest.retention_days"),
    ({"database": {"url": "mysql://x"}}, "database.url"),
    ({"database": {"pool_min": 5, "pool_max": 2}}, "database.pool_min"),
    ({"cache": {"backend": "redis"}}, "cache.url"),
    ({"daemon": {"log_format": "xml"}}, "daemon.log_format"),
]
BAD_CHAIN = [
    ({"rate_limit_per_sec": 0}, "chains[0].rate_limit_per_sec"),
    ({"rate_limit_per_sec": -1}, "chains[0].rate_limit_per_sec"),
    ({"contracts": ["0x1234"]}, "chains[0].contracts[0]"),
    ({"contracts": []}, "chains[0].contracts"),
    ({"kind": "graphql"}, "chains[0].kind"),
    ({"id": "one"}, "chains[0].id"),
    ({"name": "Has Spaces"}, "chains[0].name"),
    ({"page_size": 20000}, "chains[0].page_size"),
    ({"base_url": ""}, "chains[0].base_url"),
    ({"api_key_env": "abc-123 secret"}, "chains[0].api_key_env"),
    ({"confirmations": -1}, "chains[0].confirmations"),
    ({"poll_interval_s": True}, "chains[0].poll_interval_s"),
    ({"speed": 3}, "chains[0].speed"),
]


@pytest.mark.parametrize(("section", "key"), BAD)
def test_bad_section_values_name_the_key(section: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({**_doc(), **section}, {})
    assert info.value.key.startswith(key)
    assert key in str(info.value)


@pytest.mark.parametrize(("override", "key"), BAD_CHAIN)
def test_bad_chain_values_name_the_key(override: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_doc(**override), {})
    assert info.value.key == key


def test_missing_required_and_duplicates() -> None:
    chain = {k: v for k, v in GOOD_CHAIN.items() if k != "name"}
    with pytest.raises(ConfigError, match=r"chains\[0\]\.name"):
        parse_config({"chains": [chain]}, {})
    with pytest.raises(ConfigError, match=r"chains\[1\]\.id.*duplicate"):
        parse_config({"chains": [GOOD_CHAIN, {**GOOD_CHAIN, "name": "other"}]}, {})
    with pytest.raises(ConfigError, match=r"chains\[1\]\.name.*duplicate"):
        parse_config({"chains": [GOOD_CHAIN, {**GOOD_CHAIN, "id": 2}]}, {})
    with pytest.raises(ConfigError, match="chains"):
        parse_config({}, {})


def test_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="TRANSFERS_INGEST_CONCURRENCY"):
        parse_config(_doc(), {"TRANSFERS_INGEST_CONCURRENCY": "many"})


def test_database_url_error_never_shows_the_password() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({**_doc(), "database": {"url": "mysql://admin:hunter2@db/x"}}, {})
    assert "hunter2" not in str(info.value)


def test_redact_url() -> None:
    assert redact_url("postgresql://u:pw@h:5432/d") == "postgresql://u:***@h:5432/d"
    assert "SECRETKEY" not in redact_url("https://x/api?module=a&apikey=SECRETKEY&page=1")


def test_world_readable_dotenv_is_reported(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text(
        '[[chains]]\nid = 1\nname = "a"\nkind = "rpc_logs"\nrpc_url = "http://x"\n'
        'contracts = ["0xdac17f958d2ee523a2206206994597c13d831ec7"]\n'
    )
    env_file = tmp_path / ".env"
    env_file.write_text("X=1\n")
    env_file.chmod(0o600)
    assert dotenv_world_readable(load_config(tmp_path / "c.toml", environ={})) is None
    env_file.chmod(0o644)
    assert dotenv_world_readable(load_config(tmp_path / "c.toml", environ={})) == env_file
    assert env_file.stat().st_mode & stat.S_IROTH


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("[ingest]\nretention_days = 10\n", "ingest.retention_days"),
        ("[api]\nport = -5\n", "api.port"),
        ("this is = not toml [", "--config"),
    ],
)
def test_cli_exits_2_naming_the_key(tmp_path: Path, toml: str, key: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml + '[[chains]]\nid = 1\nname = "a"\nkind = "rpc_logs"\nrpc_url = "http://x"\n'
                    'contracts = ["0xdac17f958d2ee523a2206206994597c13d831ec7"]\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRANSFERS_")}
    result = subprocess.run(
        [sys.executable, "-m", "transfer_daemon.cli", "migrate", "--config", str(path)],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert key in result.stderr
    assert "Traceback" not in result.stderr


RELOAD_SCRIPT = """
import json, os, sys
from pathlib import Path
from transfer_daemon.config import load_config
config, dotenv = sys.argv[1], Path(sys.argv[1]).parent / ".env"
dotenv.write_text("FIXED_KEY=revoked\\nSHADOWED_KEY=from-dotenv\\nDROPPED_KEY=old\\n")
load_config(config)
first = [os.environ.get(name) for name in ("FIXED_KEY", "SHADOWED_KEY", "DROPPED_KEY")]
dotenv.write_text("FIXED_KEY=fixed\\nSHADOWED_KEY=from-dotenv-2\\n")
load_config(config)
second = [os.environ.get(name) for name in ("FIXED_KEY", "SHADOWED_KEY", "DROPPED_KEY")]
print(json.dumps([first, second]))
"""


def test_a_reload_reads_the_dotenv_again_but_never_over_the_process_environment(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text(
        '[[chains]]\nid = 1\nname = "a"\nkind = "etherscan"\nbase_url = "http://x"\napi_key_env = "FIXED_KEY"\n'
        'contracts = ["0xdac17f958d2ee523a2206206994597c13d831ec7"]\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.endswith("_KEY")}
    env["SHADOWED_KEY"] = "from-the-process"
    result = subprocess.run([sys.executable, "-c", RELOAD_SCRIPT, str(tmp_path / "c.toml")], capture_output=True,
                            text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    first, second = json.loads(result.stdout)
    assert first == ["revoked", "from-the-process", "old"]
    assert second == ["fixed", "from-the-process", None]  # replaced, still shadowed, gone with its line
