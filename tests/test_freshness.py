"""Freshness that means complete (DESIGN "Contract: freshness"): only a sync that reached the
upstream's head moves `lastIngestedAt`; backfill windows, the first anchor and a sync stopped
short do not; an empty or never-synced chain is stale; the envelope is the worst chain's; the
history says how far back the store is complete."""

from __future__ import annotations

import time

import psycopg
import pytest
from ingest_support import get_cursor

from tests.api_support import make_config as api_config
from tests.api_support import migrated, transfer, write
from transfer_daemon import report, store
from transfer_daemon.api import create_app
from transfer_daemon.ingest import backfill as backfill_job
from transfer_daemon.ingest import context
from transfer_daemon.ingest import sync as sync_job
from transfer_daemon.model import Cursor, IngestEvent, iso_utc

#: a head that stands still for the test (one block an hour), 300 blocks of history
FROZEN = {"block_time": 3600.0, "history_days": 300 * 3600 / 86400}


def synced_at(ctx: context.IngestContext) -> float | None:
    with ctx.pool.connection() as conn:
        return store.freshness(conn, [ctx.chain_id])[ctx.chain_id].last_ingested_at


def test_the_anchor_and_backfill_windows_do_not_move_it_a_sync_to_the_head_does(run):
    sim, ctx = run("etherscan_logs", FROZEN, page_size=50)
    context.ensure_anchor(ctx)
    assert synced_at(ctx) is None
    windows = []
    assert backfill_job.backfill(ctx, progress=windows.append)
    assert len(windows) >= 2 and synced_at(ctx) is None  # rows stored, but never up to the head
    with ctx.pool.connection() as conn:
        fresh = store.freshness(conn, [ctx.chain_id])[ctx.chain_id]
    assert fresh.lag_seconds is None and fresh.history_complete
    truth = sim.truth(get_cursor(ctx.pool, ctx.chain_id).synced_block)
    assert iso_utc(fresh.complete_from) == min(t["timeStamp"] for t in truth)
    before = time.time()
    sync_job.sync(ctx)
    settled_head = ctx.source.head_block() - sync_job.settle_blocks(ctx.chain)
    assert get_cursor(ctx.pool, ctx.chain_id).synced_block == settled_head
    assert synced_at(ctx) is not None and synced_at(ctx) >= before - 1


def test_a_sync_at_the_head_with_nothing_to_fetch_moves_it(run):
    _, ctx = run("etherscan", FROZEN)
    sync_job.sync(ctx)  # anchors, then fetches the few blocks above the anchor
    first = synced_at(ctx)
    assert first is not None
    time.sleep(0.05)
    assert sync_job.sync(ctx) == 0  # the head has not moved: nothing to fetch, no rows
    assert synced_at(ctx) > first


@pytest.mark.parametrize(("kind", "limits"), [
    ("etherscan", {"page_size": 20, "max_pages_per_cycle": 2}),  # the call budget ends the cycle
    ("rpc_logs", {"log_window_blocks": 10, "max_pages_per_cycle": 2}),  # so does the window span
])
def test_a_sync_stopped_short_of_the_head_does_not_move_it(run, kind, limits):
    sim, ctx = run(kind, FROZEN, **limits)
    context.ensure_anchor(ctx, head=sim.chain_info["firstBlock"] + 5)  # far behind the head
    before = get_cursor(ctx.pool, ctx.chain_id).synced_block
    sync_job.sync(ctx)
    after = get_cursor(ctx.pool, ctx.chain_id).synced_block
    assert before < after < ctx.source.head_block() - 50
    assert synced_at(ctx) is None


def test_freshness_reads_the_synced_time_and_the_complete_history(database_url):
    rows = [transfer(1, n) for n in range(10)]  # blocks 100..109, a minute apart
    with psycopg.connect(database_url, autocommit=True) as conn:
        store.write_batch(conn, 1, rows[5:], cursor=Cursor(1, synced_block=109, backfilled_block=105,
                                                           backfill_target_block=100), event=None)
        fresh = store.freshness(conn, [1, 2])
        assert fresh[1].last_ingested_at is None and fresh[1].lag_seconds is None
        assert (fresh[1].complete_from, fresh[1].history_complete) == (rows[5].time_stamp, False)
        assert (fresh[2].last_ingested_at, fresh[2].complete_from, fresh[2].history_complete) == (None, None, False)
        # a window whose lowest blocks hold no transfer: complete from its first stored block (errs late)
        store.write_batch(conn, 1, rows[2:5], cursor=Cursor(1, synced_block=109, backfilled_block=100,
                                                            backfill_target_block=100, backfill_done=True),
                          event=IngestEvent(1, "ingested", "backfill"))
        fresh = store.freshness(conn, [1])[1]
        assert (fresh.complete_from, fresh.history_complete, fresh.last_ingested_at) == (rows[2].time_stamp, True, None)
        store.record_synced(conn, 1)
        moved = store.freshness(conn, [1], now=time.time() + 10)[1]
        assert moved.last_ingested_at is not None and 9 <= moved.lag_seconds <= 11


def test_the_view_is_stale_before_the_first_sync_and_beyond_the_limit():
    assert report.freshness_view(None, None, False, 1000.0, 300) == {
        "lastIngestedAt": None, "ingestLagSeconds": None, "stale": True,
        "history": {"completeFrom": None, "complete": False}}
    view = report.freshness_view(700.0, 100.0, True, 1000.0, 300)
    assert (view["ingestLagSeconds"], view["stale"]) == (300, False)
    assert view["history"] == {"completeFrom": iso_utc(100), "complete": True}
    assert report.freshness_view(699.0, None, False, 1000.0, 300)["stale"] is True


@pytest.fixture
def api(make_database, tmp_path):
    url = migrated(make_database())
    app = create_app(api_config(tmp_path), url)
    yield url, app.test_client()
    app.extensions["transfer_daemon"].close()


def test_an_empty_store_is_stale_everywhere(api):
    _, client = api
    body = client.get("/api/transfers").get_json()
    assert (body["lastIngestedAt"], body["ingestLagSeconds"], body["stale"]) == (None, None, True)
    for chain in body["chains"].values():
        assert chain == {"lastIngestedAt": None, "ingestLagSeconds": None, "stale": True,
                         "history": {"completeFrom": None, "complete": False}}
    health = client.get("/api/cache-health").get_json()
    assert all(c["stale"] and c["ingestLagSeconds"] is None for c in health["chains"].values())


def test_the_envelope_is_the_worst_chains(api):
    url, client = api
    write(url, 1, [transfer(1, n) for n in range(3)])
    write(url, 25, [transfer(25, n) for n in range(3)])
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE ingest_cursors SET synced_at = now() - interval '400 seconds',"
                     " backfilled_block = 101, backfill_done = true WHERE chain_id = 25")
    body = client.get("/api/transfers").get_json()
    eth, cro = body["chains"]["1"], body["chains"]["25"]
    assert eth["stale"] is False and eth["ingestLagSeconds"] < 5
    assert cro["stale"] is True and 399 <= cro["ingestLagSeconds"] < 410
    assert (body["lastIngestedAt"], body["ingestLagSeconds"], body["stale"]) == (
        cro["lastIngestedAt"], cro["ingestLagSeconds"], True)
    assert eth["history"] == {"completeFrom": None, "complete": False}  # write() anchors no backfill
    assert cro["history"] == {"completeFrom": iso_utc(transfer(25, 1).time_stamp), "complete": True}
    single = client.get("/api/transfers?chainId=1").get_json()
    assert single["stale"] is False and single["chains"]["1"] == eth
