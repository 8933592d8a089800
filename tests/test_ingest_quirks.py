"""Ingest against real upstreams' quirks (simulate/quirks.py), over loopback HTTP into a real Postgres:
an explorer index that trails its own node, `null` block headers near the head, rows out of every
valid range (and NUL characters). Whatever the upstream does, the store ends equal to the truth, the
poisoned rows quarantined, each once, and nothing else."""

from __future__ import annotations

import json

import pytest
import requests
from ingest_support import Sim, differences, get_cursor

from transfer_daemon import store
from transfer_daemon.ingest import backfill as backfill_job
from transfer_daemon.ingest import context
from transfer_daemon.ingest import sync as sync_job

#: a frozen head (blocks of an hour, advanced by hand) over some 40 blocks of history
FROZEN = {"block_time": 3600.0, "history_days": 40 * 3600 / 86400, "transfers_per_block": 3.0}


def _advance(sim: Sim, blocks: int = 1) -> None:
    requests.post(sim.url + "/_sim/control", json={"advance_blocks": blocks}, timeout=5).raise_for_status()


def _head(sim: Sim) -> int:
    return int(sim.stats()["heads"][str(sim.chain_id)])


def _events(ctx: context.IngestContext, status: str) -> list[dict]:
    with ctx.pool.connection() as conn:
        return store.recent_events(conn, ctx.chain_id, limit=10_000, statuses=[status])


def _quarantined_rows(ctx: context.IngestContext) -> list[tuple[int, str]]:
    """(block, transaction hash) of every quarantined row, one entry per quarantine event. The row
    is `detail.raw`, or `detail.raw_json` (its JSON text) when it holds what jsonb cannot (NUL)."""
    rows = []
    for event in _events(ctx, "quarantined"):
        detail = event["detail"]
        raw = detail["raw"] if "raw" in detail else json.loads(detail["raw_json"])
        rows.append((detail["block"], raw.get("hash") or raw.get("transactionHash")))
    return rows


def _poisoned(sim: Sim, to_block: int) -> list[dict]:
    answer = requests.get(sim.url + "/_sim/poisoned", params={"chainId": sim.chain_id, "toBlock": to_block},
                          timeout=10)
    answer.raise_for_status()
    return answer.json()


def _assert_store_equals_truth(sim: Sim, ctx: context.IngestContext) -> int:
    synced, missing, extra, duplicates = differences(sim, ctx.pool, ctx.chain_id)
    assert (missing, extra, duplicates) == (0, 0, 0), (synced, missing, extra, duplicates)
    return synced


def _assert_poison_quarantined_once(sim: Sim, ctx: context.IngestContext, synced: int) -> None:
    """Every poisoned row up to the cursor quarantined exactly once; no other row quarantined (a
    poisoned row of a block a reorg replaced may stay quarantined: it was served)."""
    poisoned = _poisoned(sim, synced)
    expected = {(entry["blockNumber"], entry["hash"]) for entry in poisoned}
    canonical = {entry["blockNumber"]: entry["blockHash"] for entry in poisoned}
    seen = [row for row in _quarantined_rows(ctx) if row[0] <= synced]
    assert expected and expected <= set(seen)
    assert sorted(row for row in seen if row in expected) == sorted(expected), "each quarantined once"
    orphans = [row for row in seen if row not in expected]
    assert all(block in canonical for block, _ in orphans), orphans


@pytest.mark.parametrize("kind", ["etherscan", "etherscan_logs"])
def test_sync_never_moves_past_blocks_the_explorer_index_has_not_filled(run, kind):
    sim, ctx = run(kind, {**FROZEN, "index_lag_blocks": 3}, confirmations=3)
    assert backfill_job.backfill(ctx)
    for _ in range(12):
        _advance(sim)
        sync_job.sync(ctx)
    synced = _assert_store_equals_truth(sim, ctx)
    head = _head(sim)
    assert synced == head - 3, "the cursor follows the settled head"
    served = [item for item in sim.truth(head - 3) if item["blockNumber"] > synced]
    assert sim.stats()["indexLagWithheldRows"][str(sim.chain_id)] > 0
    assert served == [], "nothing the index serves lies above the settled head here"
    last = _events(ctx, "ingested")[0]["detail"]
    assert last["job"] == "sync" and last["reached_head"] is True and last["synced_block"] == synced


def test_rows_above_the_settled_head_are_stored_once_and_follow_a_reorg(run):
    """The blocks between the settled head and the head are read every cycle: what the index has
    filled is stored at once, and what a reorg there replaced is replaced in the store too."""
    knobs = {**FROZEN, "index_lag_blocks": 1, "reorg_every": 4, "reorg_depth": 2}
    sim, ctx = run("etherscan_logs", knobs, confirmations=4)
    assert backfill_job.backfill(ctx)
    for _ in range(20):
        _advance(sim)
        sync_job.sync(ctx)
        head = _head(sim)
        top = sim.truth(head - 1)
        synced, missing, extra, duplicates = differences(sim, ctx.pool, ctx.chain_id)
        assert (missing, extra, duplicates) == (0, 0, 0)
        with ctx.pool.connection() as conn:
            page = store.query_transfers(conn, store.TransferQuery(chain_ids=(ctx.chain_id,), page_size=100,
                                                                  sort="asc", from_block=synced + 1))
        assert sorted(t.to_api()["hash"] + str(t.log_index) for t in page.items) == sorted(
            item["hash"] + str(item["logIndex"]) for item in top if item["blockNumber"] > synced)
    assert sim.stats()["reorgsTotal"] >= 3


def test_null_headers_are_read_again_never_quarantined_nor_skipped(run):
    sim, ctx = run("rpc_logs", {**FROZEN, "null_headers_blocks": 2}, log_timestamps=False, confirmations=3)
    assert backfill_job.backfill(ctx)
    for _ in range(12):
        _advance(sim)
        sync_job.sync(ctx)
    synced = _assert_store_equals_truth(sim, ctx)
    assert synced == _head(sim) - 2, "up to the newest header the node serves"
    assert _events(ctx, "quarantined") == []
    assert sim.stats()["nullHeaders"][str(sim.chain_id)] > 0
    assert _events(ctx, "ingested")[0]["detail"]["reached_head"] is True
    sync_job.sync(ctx)  # the head stands still: nothing to read, and still at the head
    latest = _events(ctx, "ingested")[0]
    assert latest["message"].startswith("sync at head") and latest["detail"]["reached_head"] is True


@pytest.mark.parametrize("kind", ["etherscan", "etherscan_logs", "rpc_logs"])
def test_poisoned_rows_are_quarantined_alone_and_nul_names_stored(run, kind):
    sim, ctx = run(kind, {"poison_every": 7, "transfers_per_block": 3.0}, confirmations=3)
    assert backfill_job.backfill(ctx)
    for _ in range(3):
        sync_job.sync(ctx)
    synced = _assert_store_equals_truth(sim, ctx)
    _assert_poison_quarantined_once(sim, ctx, synced)
    if kind == "etherscan":
        nul_rows = [entry["nulTransfer"] for entry in _poisoned(sim, synced) if entry["nulTransfer"]]
        assert nul_rows and sim.stats()["nulNameRowsServed"][str(sim.chain_id)] > 0
        assert all(item in sim.truth(synced) for item in nul_rows[:3])


def _converge(sim: Sim, ctx: context.IngestContext, cycles: int) -> int:
    """Cycles of a block, a sync and a bounded backfill, then quiet cycles until every retried
    failure has been read again; returns the cursor."""
    for _ in range(cycles):
        _advance(sim)
        context.run_guarded(ctx, "sync", sync_job.sync)
        context.run_guarded(ctx, "backfill", lambda c: backfill_job.backfill(c, budget_s=2))
    requests.post(sim.url + "/_sim/control", json={"fault_rate": 0}, timeout=5).raise_for_status()
    for _ in range(4):
        context.run_guarded(ctx, "sync", sync_job.sync)
        context.run_guarded(ctx, "backfill", backfill_job.backfill)
    assert get_cursor(ctx.pool, ctx.chain_id).backfill_done
    return ctx.chain.id


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["etherscan", "etherscan_logs", "rpc_logs"])
def test_every_quirk_with_faults_and_reorgs_ends_equal_to_the_truth(run, kind):
    knobs = {**FROZEN, "index_lag_blocks": 3, "null_headers_blocks": 2, "poison_every": 5,
             "fault_rate": 0.2, "fault_timeout_s": 0.5, "reorg_every": 5, "reorg_depth": 3}
    sim, ctx = run(kind, knobs, log_timestamps=False, confirmations=4, request_timeout_s=0.3)
    _converge(sim, ctx, 18)
    synced = _assert_store_equals_truth(sim, ctx)
    assert synced >= _head(sim) - 4 - 1
    _assert_poison_quarantined_once(sim, ctx, synced)
    stats = sim.stats()
    assert stats["reorgsTotal"] >= 3 and stats["faultsTotal"] > 0 and stats["poisonRowsServed"]
