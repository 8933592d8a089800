"""`transfer-daemon verify` and the nightly verify job against a real Postgres and the simulator
over loopback: a store filled by backfill, then rows deleted or added by hand."""

from __future__ import annotations

import itertools
import json
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from ingest_support import ENVIRON, KEY_ENV, Sim, differences, get_cursor, make_context, sim_config

from transfer_daemon import store
from transfer_daemon.cli import main
from transfer_daemon.config import load_config
from transfer_daemon.ingest import backfill as backfill_job
from transfer_daemon.ingest import context, upkeep
from transfer_daemon.ingest.worker import VERIFY_RESUME_S, JobRunner


class Filled:
    """A simulator, a store filled from it by backfill, and a config file naming both."""

    def __init__(self, sim: Sim, config_path: Path, ctx: context.IngestContext) -> None:
        self.sim, self.config_path, self.ctx = sim, config_path, ctx

    def verify(self, *args: str) -> tuple[int, str]:
        result = CliRunner().invoke(main, ["verify", "--config", str(self.config_path), *args],
                                    catch_exceptions=False)
        return result.exit_code, result.stdout

    def window_block(self, share: float) -> int:
        """The first block holding transfers from `share` of the way up the stored range."""
        cursor = get_cursor(self.ctx.pool, self.ctx.chain_id)
        block = int(cursor.backfilled_block + (cursor.synced_block - cursor.backfilled_block) * share)
        while not self.stored_in(block):
            block += 1
        return block

    def stored_in(self, block: int) -> list:
        contracts = [bytes.fromhex(a[2:]) for a in self.ctx.chain.contracts]
        with self.ctx.pool.connection() as conn:
            return store.stored_transfers(conn, self.ctx.chain_id, contracts, block, block)

    def delete_one(self, block: int):
        """Delete one stored transfer of `block` by hand; returns it."""
        victim = next(t for t in self.stored_in(block))
        with self.ctx.pool.connection() as conn:
            conn.execute("DELETE FROM transfers WHERE block_number = %s AND log_index = %s AND tx_hash = %s"
                         " AND stream_id = (SELECT stream_id FROM streams WHERE chain_id = %s AND contract = %s)",
                         (block, victim.log_index, victim.tx_hash, victim.chain_id, victim.contract_address))
        return victim

    def insert_extra(self, block: int) -> None:
        """Copy a stored row of `block` by hand under another log index and transaction."""
        with self.ctx.pool.connection() as conn:
            conn.execute("INSERT INTO transfers SELECT time_stamp, block_number, 999, method_id, stream_id, %s,"
                         " from_address, to_address, value, gas_used, gas_price FROM transfers"
                         " WHERE block_number = %s LIMIT 1", (b"\x99" * 32, block))

    def events(self, status: str) -> list[dict]:
        with self.ctx.pool.connection() as conn:
            return store.recent_events(conn, self.ctx.chain_id, statuses=[status])


def _document(sim: Sim, kind: str, data_dir: Path, database_url: str, **overrides) -> str:
    chain = {"id": sim.chain_id, "name": "sim", "kind": kind, "contracts": sim.chain_info["contracts"],
             "start_block": sim.chain_info["firstBlock"], "confirmations": 3, "page_size": 100,
             "rate_limit_per_sec": 50, "request_timeout_s": 2, "log_window_blocks": 100, **overrides}
    if kind == "rpc_logs":
        chain["rpc_url"] = f"{sim.url}/rpc/{sim.chain_id}"
    else:
        chain.update(base_url=f"{sim.url}/v2/api", api_key_env=KEY_ENV)
    lines = ["[daemon]", f"data_dir = {json.dumps(str(data_dir))}", 'log_file = ""', "",
             "[database]", f"url = {json.dumps(database_url)}", "", "[[chains]]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in chain.items()]  # JSON scalars and lists are TOML
    return "\n".join(lines) + "\n"


@pytest.fixture
def filled(tmp_path, database_url, monkeypatch):
    """Factory: a filled store for a kind; everything is closed after the test."""
    monkeypatch.setenv(KEY_ENV, ENVIRON[KEY_ENV])
    opened = []

    def fill(kind: str, sim_knobs: dict | None = None, **chain_overrides) -> Filled:
        sim = Sim(sim_config(kind, **(sim_knobs or {})))
        path = tmp_path / f"verify-{len(opened)}.toml"
        path.write_text(_document(sim, kind, tmp_path / "data", database_url, **chain_overrides))
        ctx = make_context(load_config(path), database_url)
        opened.append((sim, ctx))
        assert backfill_job.backfill(ctx)
        return Filled(sim, path, ctx)

    yield fill
    for sim, ctx in opened:
        ctx.pool.close()
        sim.stop()


# --- the command ---


@pytest.mark.parametrize("kind", ["etherscan", "rpc_logs"])
def test_verify_finds_a_deleted_row_and_repair_puts_it_back(filled, kind):
    chain = filled(kind)
    code, out = chain.verify()
    assert code == 0 and "MATCH" in out, out
    victim = chain.delete_one(chain.window_block(0.5))

    code, out = chain.verify()
    print(out)
    assert code == 1
    assert "verify: chain sim differs: 1 missing, 0 extra in blocks" in out
    assert f"(differing blocks: {victim.block_number})" in out
    code, out = chain.verify("--json")
    print(out)
    doc = json.loads(out)
    assert code == 1 and doc["ok"] is False
    assert {k: doc["chains"][0][k] for k in ("chain", "verdict", "missing", "extra", "differingBlocks")} == {
        "chain": "sim", "verdict": "differs", "missing": 1, "extra": 0, "differingBlocks": [victim.block_number]}
    assert doc["chains"][0]["upstream"] == doc["chains"][0]["stored"] + 1

    code, out = chain.verify("--repair")
    assert code == 1 and "REPAIRED" in out and "repaired 1 rows in 1 blocks" in out, out
    assert victim in chain.stored_in(victim.block_number)
    code, out = chain.verify()
    assert code == 0 and "MATCH" in out, out
    assert differences(chain.sim, chain.ctx.pool, chain.ctx.chain_id)[1:] == (0, 0, 0)
    drift = chain.events("drift")
    assert [e["detail"]["repaired"] for e in drift] == [1, 0, 0]  # newest first: the repair, the two reads
    assert drift[0]["detail"]["missing"] == 1 and drift[0]["detail"]["trigger"] == "command"
    assert chain.events("repair")[0]["detail"]["block"] == victim.block_number


def test_an_extra_row_is_reported_and_removed_by_repair(filled):
    chain = filled("etherscan_logs")
    block = chain.window_block(0.3)
    chain.insert_extra(block)
    code, out = chain.verify()
    assert code == 1 and "verify: chain sim differs: 0 missing, 1 extra" in out, out
    code, out = chain.verify("--repair")
    assert code == 1 and "REPAIRED" in out
    assert 999 not in {t.log_index for t in chain.stored_in(block)}
    code, out = chain.verify("--json")
    assert code == 0 and json.loads(out)["chains"][0]["verdict"] == "match"


def test_hours_map_to_blocks_through_the_stored_block_times(filled):
    chain = filled("rpc_logs", {"block_time": 3600.0, "history_days": 3.0, "transfers_per_block": 3.0})
    head = chain.ctx.source.head_block()
    synced = get_cursor(chain.ctx.pool, chain.ctx.chain_id).synced_block
    for hours in (5, 30):
        doc = json.loads(chain.verify("--json", "--hours", str(hours))[1])["chains"][0]
        assert abs(doc["fromBlock"] - (head - hours)) <= 1 and doc["toBlock"] == synced, (hours, head, doc)
        assert doc["verdict"] == "match" and doc["upstream"] > 0


def test_an_unknown_chain_is_bad_usage(filled):
    chain = filled("rpc_logs")
    result = CliRunner().invoke(main, ["verify", "--config", str(chain.config_path), "--chain", "nope"])
    assert result.exit_code == 2 and "unknown chain 'nope'" in result.output
    assert chain.verify("--chain", "sim")[0] == 0
    assert chain.verify("--chain", str(chain.ctx.chain_id), "--hours", "1")[0] == 0


# --- the nightly job ---


def test_the_nightly_job_records_nothing_on_a_converged_store(filled):
    chain = filled("etherscan")
    assert upkeep.verify(chain.ctx) is True
    assert chain.events("drift") == [] and chain.ctx.verify_pass is None


def test_the_nightly_job_puts_back_what_is_missing_and_records_the_drift(filled):
    chain = filled("rpc_logs")
    victim = chain.delete_one(chain.window_block(0.6))
    stray_block = chain.window_block(0.2)
    chain.insert_extra(stray_block)
    assert upkeep.verify(chain.ctx) is True
    (event,) = chain.events("drift")
    detail = event["detail"]
    assert (detail["missing"], detail["extra"], detail["repaired"]) == (1, 1, 1)
    assert detail["from_block"] <= stray_block < victim.block_number <= detail["to_block"]
    assert detail["blocks"] == [stray_block, victim.block_number] and detail["trigger"] == "nightly"
    assert event["rows"] == 2 and "1 missing, 1 extra, 1 repaired" in event["message"]
    assert victim in chain.stored_in(victim.block_number)
    # the extra row stays: the nightly job never deletes on the upstream's word alone
    assert 999 in {t.log_index for t in chain.stored_in(stray_block)}


def test_the_nightly_pass_is_spread_over_runs_within_a_budget(filled):
    chain = filled("etherscan", page_size=10)
    victim = chain.delete_one(chain.window_block(0.9))
    runs = 0
    while not upkeep.verify(chain.ctx, budget_s=0):  # one chunk per run
        runs += 1
        assert chain.ctx.verify_pass is not None and not chain.ctx.verify_pass.done
    assert runs >= 2 and chain.ctx.verify_pass is None
    drift = chain.events("drift")
    assert len(drift) == 1 and drift[0]["detail"]["repaired"] == 1  # only the run that met the difference
    assert victim in chain.stored_in(victim.block_number)


def test_verify_beside_a_running_job_shares_the_keys_rate_limit(filled):
    """The command and the worker's job use one limiter file per key under data_dir: together
    they stay under the rate the explorer enforces."""
    chain = filled("etherscan", {"rate_limit": 10.0}, rate_limit_per_sec=9, page_size=30)
    before = chain.sim.stats()
    nightly = threading.Thread(target=upkeep.verify, args=(chain.ctx,))
    nightly.start()
    code, _ = chain.verify()
    nightly.join(60)
    stats = chain.sim.stats()
    calls = sum(stats["requests"].values()) - sum(before["requests"].values())
    limited = stats["rateLimitedTotal"] - before["rateLimitedTotal"]
    assert code == 0 and calls >= 30 and limited <= max(1, calls // 100), stats


def test_the_worker_resumes_an_unfinished_pass_a_minute_later(filled):
    chain = filled("etherscan", page_size=10)
    ticks = itertools.count()
    chain.ctx.clock = lambda: time.time() + 10 * next(ticks)  # every chunk outlasts the budget
    runner = JobRunner(chain.ctx, chain.ctx.config)
    runner.scheduler.add_job(lambda: None, "cron", hour=3, id="verify")
    runner.scheduler.start(paused=True)
    try:
        runner._verify(chain.ctx)
        assert chain.ctx.verify_pass is not None and not chain.ctx.verify_pass.done
        delay = runner.scheduler.get_job("verify").next_run_time - datetime.now().astimezone()
        assert VERIFY_RESUME_S - 10 < delay.total_seconds() <= VERIFY_RESUME_S
    finally:
        runner.scheduler.shutdown(wait=False)


def test_an_unreachable_store_is_one_line_and_exit_1(tmp_path):
    path = tmp_path / "unreachable.toml"
    path.write_text(f'[daemon]\ndata_dir = {json.dumps(str(tmp_path))}\nlog_file = ""\n'
                    '[database]\nurl = "postgresql://verify:hunter2@127.0.0.1:9/none"\n'
                    '[[chains]]\nid = 25\nname = "cronos"\nkind = "rpc_logs"\nrpc_url = "http://127.0.0.1:9/rpc"\n'
                    'contracts = ["0x1111111111111111111111111111111111111111"]\n')
    result = CliRunner().invoke(main, ["verify", "--config", str(path)])
    assert result.exit_code == 1 and result.stderr.startswith("transfer-daemon: cannot reach postgresql://verify:")
    assert "hunter2" not in result.output and "Traceback" not in result.output
