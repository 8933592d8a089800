"""Ingest jobs against a real Postgres and the simulator over loopback."""

from __future__ import annotations

import dataclasses

import pytest
import requests
from ingest_support import Sim, differences, get_cursor, poll

from transfer_daemon import store
from transfer_daemon.errors import InvalidApiKey
from transfer_daemon.ingest import backfill as backfill_job
from transfer_daemon.ingest import context, planning, upkeep
from transfer_daemon.ingest import sync as sync_job


def _cycle(ctx: context.IngestContext) -> None:
    context.run_guarded(ctx, "sync", sync_job.sync)
    context.run_guarded(ctx, "backfill", lambda c: backfill_job.backfill(c, budget_s=2))


def _converged(sim: Sim, ctx: context.IngestContext):
    cursor = get_cursor(ctx.pool, ctx.chain_id)
    if not cursor.backfill_done:
        return False
    synced, missing, extra, duplicates = differences(sim, ctx.pool, ctx.chain_id)
    return (synced, missing, extra, duplicates) if missing == extra == duplicates == 0 else False


@pytest.mark.parametrize("kind", ["etherscan", "etherscan_logs", "rpc_logs"])
def test_backfill_then_sync_equals_the_truth(run, kind):
    sim, ctx = run(kind)
    progress = []
    assert backfill_job.backfill(ctx, progress=progress.append)
    cursor = get_cursor(ctx.pool, ctx.chain_id)
    assert cursor.backfill_done and cursor.backfilled_block == sim.chain_info["firstBlock"]
    assert [planning.backfill_share(c) for c in progress][-1] == 1.0
    assert len(progress) >= 2  # several windows: the walk is resumable window by window
    head_before = cursor.synced_block
    result = poll(lambda: _converged(sim, ctx) if get_cursor(ctx.pool, ctx.chain_id).synced_block
                  > head_before + 5 else False, 20, step=lambda: sync_job.sync(ctx))
    assert result, differences(sim, ctx.pool, ctx.chain_id)
    synced, _, _, _ = result
    assert len(sim.truth(synced)) > 300


def test_backfill_resumes_from_its_cursor_after_a_partial_run(run):
    sim, ctx = run("etherscan_logs")
    context.ensure_anchor(ctx)
    windows = []
    assert not backfill_job.backfill(ctx, budget_s=0.01, progress=windows.append)  # one window, then out of budget
    partial = get_cursor(ctx.pool, ctx.chain_id)
    assert len(windows) == 1 and not partial.backfill_done
    ctx2 = dataclasses.replace(ctx, backfill_span=0)  # a fresh process: nothing but the database
    assert backfill_job.backfill(ctx2)
    assert _converged(sim, ctx2)


def test_sync_stops_at_max_pages_and_catches_up_over_cycles(run):
    sim, ctx = run("etherscan", page_size=20, max_pages_per_cycle=2)
    context.ensure_anchor(ctx, head=sim.chain_info["firstBlock"] + 5)  # far behind the head
    before = get_cursor(ctx.pool, ctx.chain_id).synced_block
    sync_job.sync(ctx)
    after = get_cursor(ctx.pool, ctx.chain_id).synced_block
    head = ctx.source.head_block()
    assert before < after < head - 50  # two pages of 20 rows cover some 20 blocks, not all
    assert poll(lambda: get_cursor(ctx.pool, ctx.chain_id).synced_block >= head, 30, step=lambda: sync_job.sync(ctx),
                interval_s=0)


def test_reorgs_and_faults_converge_to_the_truth(run):
    knobs = {"reorg_every": 6, "reorg_depth": 3, "fault_rate": 0.2, "fault_timeout_s": 0.6}
    sim, ctx = run("rpc_logs", knobs, request_timeout_s=0.4, confirmations=4)

    def repaired_and_converged():
        with ctx.pool.connection() as conn:
            repaired = store.recent_events(conn, ctx.chain_id, statuses=["reorg"])
        return _converged(sim, ctx) if repaired else False

    result = poll(repaired_and_converged, 50, step=lambda: _cycle(ctx), interval_s=0.3)
    assert result, differences(sim, ctx.pool, ctx.chain_id)
    assert sim.stats()["reorgsTotal"] >= 1 and sum(sim.stats()["faults"].values()) > 0


def test_a_reorg_deeper_than_the_limit_halts_the_chain(run):
    knobs = {"reorg_every": 8, "reorg_depth": 7, "transfers_per_block": 6.0}
    sim, ctx = run("etherscan_logs", knobs, confirmations=5, max_reorg_depth=3, page_size=500)
    assert poll(lambda: ctx.halted, 30, step=lambda: sync_job.sync(ctx), interval_s=0.3)
    with ctx.pool.connection() as conn:
        events = store.recent_events(conn, ctx.chain_id, limit=50, statuses=["halted"])
    assert events and "max_reorg_depth" in events[0]["message"]
    before = sim.stats()["requests"]
    assert sync_job.sync(ctx) == 0 and sim.stats()["requests"] == before  # halted: no more upstream calls


class _RefusingSource:
    """An upstream whose key was revoked; counts the calls it was asked for."""

    def __init__(self) -> None:
        self.calls = 0

    def head_block(self) -> int:
        self.calls += 1
        raise InvalidApiKey("Invalid API Key", chain="sim")


def test_invalid_api_key_raises_an_alert_and_stops_calling(run):
    _, ctx = run("etherscan")
    ctx.source = _RefusingSource()
    context.run_guarded(ctx, "sync", sync_job.sync, gate=True)
    context.run_guarded(ctx, "sync", sync_job.sync, gate=True)
    context.run_guarded(ctx, "backfill", backfill_job.backfill)
    assert ctx.pause.reason == "invalid_key" and ctx.source.calls == 1
    with ctx.pool.connection() as conn:
        events = store.recent_events(conn, ctx.chain_id, statuses=["alert"])
        assert store.get_stops(conn, ctx.chain_id)[1].reason == "invalid_key"
    assert len(events) == 1 and "Invalid API Key" in events[0]["message"]


def test_retention_records_what_it_dropped(run):
    _, ctx = run("etherscan")
    assert upkeep.retention(ctx) == []
    with ctx.pool.connection() as conn:
        assert store.recent_events(conn, ctx.chain_id, statuses=["retention"])


def test_rate_limit_answers_stay_within_tolerance(run):
    sim, ctx = run("etherscan", {"rate_limit": 10.0}, rate_limit_per_sec=9, page_size=50)
    assert backfill_job.backfill(ctx)
    stats = sim.stats()
    calls = sum(stats["requests"].values())
    limited = stats["rateLimitedTotal"]
    assert calls >= 10 and limited <= max(1, calls // 100), stats  # tolerance: 1 %


@pytest.mark.parametrize("kind", ["rpc_logs", "etherscan"])
def test_reorgs_below_a_head_without_transfers_are_not_missed(run, kind):
    """Sparse chain: the cursor's head is usually a block without transfers, and reorgs rewrite
    the last blocks — turning empty blocks into blocks with transfers and back. The head's own
    hash must be checked, or those rows are missed (or kept after they were reorged away)."""
    knobs = {"reorg_every": 3, "reorg_depth": 3, "transfers_per_block": 0.4, "block_time": 3600}
    sim, ctx = run(kind, knobs, confirmations=6)
    assert backfill_job.backfill(ctx)
    diverged = []
    for _ in range(40):
        requests.post(sim.url + "/_sim/control", json={"advance_blocks": 1}, timeout=5).raise_for_status()
        sync_job.sync(ctx)
        synced, missing, extra, duplicates = differences(sim, ctx.pool, ctx.chain_id)
        if missing or extra or duplicates:  # each cycle repairs before it extends: never behind the truth
            diverged.append((synced, missing, extra, duplicates))
    assert diverged == []
    assert sim.stats()["reorgsTotal"] >= 10
    with ctx.pool.connection() as conn:  # explorer kinds: the reorgs land above the settled cursor
        events = store.recent_events(conn, ctx.chain_id, limit=500, statuses=["reorg", "ingested"])
    assert any(e["status"] == "reorg" or "replaced_from" in e["detail"] for e in events)
