"""`transfer-daemon resume` clears a chain's recorded stops; the supervisor restarts a child whose
secret values changed (a digest of them; the values never leave the environment)."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
from click.testing import CliRunner

from transfer_daemon import store
from transfer_daemon.cli import main
from transfer_daemon.config import parse_config
from transfer_daemon.daemon.child import ChildSpec
from transfer_daemon.daemon.children import secrets_fingerprint
from transfer_daemon.model import Halt, Pause

CONTRACT = "0x" + "22" * 20


def _write_config(root: Path, database_url: str) -> Path:
    path = root / "td.toml"
    path.write_text(f'[daemon]\ndata_dir = "{root / "data"}"\nlog_file = ""\n\n[database]\nurl = "{database_url}"\n\n'
                    f'[[chains]]\nid = 1\nname = "eth"\nkind = "etherscan"\nbase_url = "http://127.0.0.1:9/v2/api"\n'
                    f'contracts = ["{CONTRACT}"]\n')
    return path


def test_resume_clears_the_halt_and_the_pause_and_records_it(tmp_path: Path, database_url: str, monkeypatch) -> None:
    monkeypatch.delenv("TRANSFERS_DATABASE_URL", raising=False)
    path = _write_config(tmp_path, database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        store.save_halt(conn, 1, Halt("reorg of depth 80 exceeds max_reorg_depth 64", 1_700_000_000.0))
        store.save_pause(conn, 1, Pause("daily_cap", 1_700_000_000.0, 1_700_050_000.0, "Max daily rate limit"))
    result = CliRunner().invoke(main, ["resume", "--config", str(path), "--chain", "1"])
    assert result.exit_code == 0, result.output
    assert "resumed eth: was halted (reorg of depth 80" in result.output
    assert "paused (daily_cap); no supervisor is running" in result.output
    with psycopg.connect(database_url, autocommit=True) as conn:
        assert store.get_stops(conn, 1) == (None, None)
        assert "by operator" in store.last_event(conn, 1, ("resumed",))["message"]
    again = CliRunner().invoke(main, ["resume", "--config", str(path), "--chain", "eth"])
    assert again.exit_code == 0 and "was neither halted nor paused" in again.output


def test_resume_of_an_unknown_chain_exits_2_naming_the_option(tmp_path: Path, database_url: str) -> None:
    result = CliRunner().invoke(main, ["resume", "--config", str(_write_config(tmp_path, database_url)),
                                       "--chain", "nope"])
    assert result.exit_code == 2 and "--chain" in result.output and "eth" in result.output


def test_each_child_is_fingerprinted_by_the_secret_values_it_reads(monkeypatch) -> None:
    def chain(chain_id: int, name: str, key_env: str, **extra) -> dict:
        return {"id": chain_id, "name": name, "kind": "etherscan", "base_url": "http://x/v2/api",
                "api_key_env": key_env, "contracts": [CONTRACT], **extra}

    config = parse_config({"chains": [chain(1, "a", "A_KEY"), chain(2, "b", "B_KEY", data_source="upstream")]}, {})
    worker_a, worker_b = (ChildSpec(f"worker[{n}]", print, chain=n) for n in ("a", "b"))
    api = ChildSpec("api", print)
    monkeypatch.setenv("A_KEY", "a-1")
    monkeypatch.setenv("B_KEY", "b-1")
    before = {spec.name: secrets_fingerprint(config, spec) for spec in (worker_a, worker_b, api)}
    monkeypatch.setenv("A_KEY", "a-2")
    after = {spec.name: secrets_fingerprint(config, spec) for spec in (worker_a, worker_b, api)}
    assert after["worker[a]"] != before["worker[a]"]
    assert after["worker[b]"] == before["worker[b]"]
    assert after["api"] == before["api"], "the API asks upstream for chain b only"
    monkeypatch.setenv("B_KEY", "b-2")
    assert secrets_fingerprint(config, api) != before["api"]
    assert "a-2" not in json.dumps(after) and "b-1" not in json.dumps(before)
