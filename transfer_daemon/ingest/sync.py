"""The sync job: from the cursor toward the head, stopping at the first stored transfer, after
checking the newest stored block for a reorg (and repairing it from the fork, in one transaction).

Explorer kinds never move the cursor over blocks the explorer may still be filling: it stops
`confirmations` below the head, and the blocks above it are read again every cycle, their new
rows stored and what a reorg replaced there replaced (planning.sync_plan, planning.stale_from).
A cycle that reached that settled head (the head itself for rpc_logs) says so in its event's
detail (`reached_head`), with or without new rows: that is what freshness counts.

Every commit of rows goes through the store together with the cursor that covers them and the
event that reports them, in one transaction, so a kill at any instant loses and duplicates nothing.
Cursor fields are owned per job (sync: `synced_block`; backfill: the `backfill_*` fields). Jobs
may run at once in one worker, so each re-reads the cursor under `cursor_lock` just before it
commits and replaces only its own fields.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from transfer_daemon import metrics, store
from transfer_daemon.config import ChainConfig
from transfer_daemon.ingest import planning
from transfer_daemon.ingest.context import IngestContext, count_rows, ensure_anchor, record
from transfer_daemon.model import Cursor, IngestEvent

log = logging.getLogger(__name__)


#: Blocks below an unreadable target probed for the highest one whose header the node serves.
TARGET_PROBE_BLOCKS = 8


def sync(ctx: IngestContext) -> int:
    """One sync cycle: repair a reorg if the last blocks changed, else fetch from the cursor
    toward the head within `max_pages_per_cycle` calls. Returns rows newly stored."""
    if not ctx.may_call_upstream:
        return 0
    head = ctx.source.head_block()
    cursor = ensure_anchor(ctx, head)
    plan = planning.sync_plan(cursor, head, sync_span(ctx.chain), settle_blocks(ctx.chain))
    # The target's hash is read first, then the current head's for the reorg check, then the
    # rows: a reorg after the first read leaves a stale target hash that the next cycle catches;
    # one before it changes the current head too and is caught now. Never stale rows under a
    # fresh hash.
    wanted = list(dict.fromkeys(b for b in (plan.target if plan else None, cursor.synced_block) if b is not None))
    upstream = ctx.source.block_hashes(wanted)
    verdict = _check_reorg(ctx, cursor, upstream)
    if isinstance(verdict, planning.ReorgPlan):
        return _repair(ctx, cursor, verdict, head)
    if verdict is _UNREADABLE:
        log.info("waiting chain=%s block=%d header not served yet", ctx.chain.name, cursor.synced_block)
        return 0
    if plan is None:
        return _at_head(ctx, cursor, head)
    plan = _readable(ctx, plan, cursor.synced_block, upstream)
    result = ctx.source.fetch_blocks(plan.window.lo, plan.window.hi, max_calls=ctx.chain.max_pages_per_cycle)
    if result.covered_to < plan.window.lo:  # e.g. a null header at the window's first block with logs
        return _at_head(ctx, cursor, head) if planning.reached_head(plan, cursor.synced_block) else 0
    new = _commit_sync(ctx, plan, cursor, result, upstream)
    if new:
        ctx.on_changed()
    return new


def _at_head(ctx: IngestContext, cursor: Cursor, head: int) -> int:
    """Nothing to store, and the cursor is at the (readable) head: the cycle reached it, so the
    chain is fresh as of now."""
    record(ctx, IngestEvent(ctx.chain_id, "ingested", f"sync at head {head}",
                            detail={"job": "sync", "synced_block": cursor.synced_block, "reached_head": True}))
    with ctx.pool.connection() as conn:
        store.record_synced(conn, ctx.chain_id)
    return 0


def settle_blocks(chain: ChainConfig) -> int:
    """How deep a block must be before sync covers it: `confirmations` for explorer kinds, whose
    index trails the node; 0 for rpc_logs, whose logs and head come from the node itself."""
    return 0 if chain.kind == "rpc_logs" else chain.confirmations


def sync_span(chain: ChainConfig) -> int | None:
    # Explorers page through any block range within max_calls; JSON-RPC is windowed by blocks.
    return chain.max_pages_per_cycle * chain.log_window_blocks if chain.kind == "rpc_logs" else None


def _readable(ctx: IngestContext, plan: planning.SyncPlan, synced_block: int,
              upstream: dict[int, bytes]) -> planning.SyncPlan:
    """The plan, its target lowered below blocks whose header the node answers `null` (the hashes
    of a few blocks under it are read, before the rows, as the target's own was)."""
    if plan.target in upstream or plan.target <= synced_block:
        return plan
    lowest = max(synced_block + 1, plan.target - TARGET_PROBE_BLOCKS)
    upstream.update(ctx.source.block_hashes(list(range(plan.target - 1, lowest - 1, -1))))
    return planning.readable_target(plan, synced_block, upstream, lowest)


def _head_hash(ctx: IngestContext, block: int, read_before: dict[int, bytes]) -> bytes | None:
    """The hash the cursor's new head carries. When the fetch stopped short of the planned target
    (call budget spent) the hash can only be read afterwards: a reorg inside that fetch is then
    caught only if it also changed a block with stored rows in the check range."""
    if block in read_before:
        return read_before[block]
    return ctx.source.block_hashes([block]).get(block)


def _commit_sync(ctx: IngestContext, plan: planning.SyncPlan, before: Cursor, result: Any,
                 read_before: dict[int, bytes]) -> int:
    """Store what the read covered with the cursor and the event, in one transaction. Rows above
    the new cursor are stored too; where the read contradicts rows stored above the cursor
    earlier (a reorg among unsettled blocks), the store is replaced from that block."""
    lo, covered_to = plan.window.lo, result.covered_to
    synced = planning.synced_to(plan, before.synced_block, covered_to)
    head_hash = before.synced_hash if synced == before.synced_block else _head_hash(ctx, synced, read_before)
    with ctx.pool.connection() as conn:
        known = store.known_transfer_keys(conn, ctx.chain_id, lo, covered_to)
        stale = planning.stale_from(store.stored_block_hashes(conn, ctx.chain_id, lo, covered_to), known,
                                    result.transfers, lo)
    detail = {"job": "sync", "from_block": lo, "to_block": covered_to, "synced_block": synced,
              "reached_head": planning.reached_head(plan, synced), "quarantined": len(result.quarantined),
              "skipped": result.skipped,
              "already_stored": len(result.transfers) - planning.stop_at_known(result.transfers, known)}
    if stale is not None:
        detail["replaced_from"] = stale
    event = IngestEvent(ctx.chain_id, "ingested", f"sync blocks {lo}..{covered_to}", rows=len(result.transfers),
                        detail=detail)
    with ctx.cursor_lock, ctx.pool.connection() as conn:
        cursor = replace(store.get_cursor(conn, ctx.chain_id), synced_block=synced, synced_hash=head_hash)
        at_head = detail["reached_head"]
        if stale is None:
            new = store.write_batch(conn, ctx.chain_id, result.transfers, cursor=cursor, event=event,
                                    quarantined=result.quarantined, synced_to_head=at_head)
        else:
            deleted, new = store.replace_from_block(conn, ctx.chain_id, stale, result.transfers, cursor=cursor,
                                                    event=event, quarantined=result.quarantined,
                                                    synced_to_head=at_head)
            log.warning("reorg chain=%s unsettled blocks replaced from=%d deleted=%d", ctx.chain.name, stale, deleted)
            metrics.REORGS.labels(ctx.chain.name).inc()
    quarantined = planning.newly_covered(result.quarantined, before.synced_block, synced)
    count_rows(ctx, new, quarantined)
    log.debug("ingested chain=%s job=sync blocks=%d..%d synced=%d rows=%d new=%d quarantined=%d",
              ctx.chain.name, lo, covered_to, synced, len(result.transfers), new, len(result.quarantined))
    _summarize(ctx, lo, covered_to, new, quarantined)
    return new


def _summarize(ctx: IngestContext, lo: int, hi: int, new: int, quarantined: int) -> None:
    """The once-a-minute INFO line of what the cycles since the last one stored."""
    summary = ctx.activity.note(ctx.clock(), lo, hi, new, quarantined)
    if summary is not None:
        log.info("ingested chain=%s job=sync rows=%d quarantined=%d blocks=%d..%d cycles=%d in %.0fs",
                 ctx.chain.name, summary["rows"], summary["quarantined"], summary["first_block"],
                 summary["last_block"], summary["cycles"], summary["seconds"])


class _Unreadable:
    """The node did not serve the header of the cursor's head: nothing can be verified this cycle."""


_UNREADABLE = _Unreadable()


def _check_reorg(ctx: IngestContext, cursor: Cursor,
                 upstream_now: dict[int, bytes]) -> planning.ReorgPlan | _Unreadable | None:
    """Compare the newest known block of the check range — the cursor's own head, whose hash is
    kept even without transfers — with upstream; only on a mismatch look for the fork. Every
    cycle verifies its head before extending past it, so one matching block vouches for every
    stored block below it: one hash per cycle instead of `confirmations`. A header the node
    answers `null` is not a mismatch (a lagging node behind a load balancer): wait for it."""
    check = planning.reorg_check_range(cursor, ctx.chain.confirmations)
    if check is None:
        return None
    with ctx.pool.connection() as conn:
        stored = _known_hashes(conn, ctx.chain_id, cursor, check)
    if not stored:
        return None
    top = max(stored)
    current = upstream_now[top] if top in upstream_now else ctx.source.block_hashes([top]).get(top)
    if current is None:
        return _UNREADABLE
    if current == stored[top]:
        return None
    settle = settle_blocks(ctx.chain)
    search = planning.fork_search_range(cursor, ctx.chain.max_reorg_depth, settle)
    with ctx.pool.connection() as conn:
        stored = _known_hashes(conn, ctx.chain_id, cursor, search)
    upstream = ctx.source.block_hashes(sorted(stored))
    return planning.plan_reorg(stored, upstream, cursor.synced_block, ctx.chain.max_reorg_depth, settle)


def _known_hashes(conn: Any, chain_id: int, cursor: Cursor, window: planning.Window) -> dict[int, bytes]:
    """Stored block hashes in the window, plus the cursor head's own."""
    stored = store.stored_block_hashes(conn, chain_id, window.lo, window.hi)
    if cursor.synced_hash is not None and window.lo <= cursor.synced_block <= window.hi:
        stored[cursor.synced_block] = cursor.synced_hash
    return stored


def _halt(ctx: IngestContext, plan: planning.ReorgPlan) -> int:
    chain = ctx.chain
    ctx.halted = True
    log.error("halted chain=%s reorg depth=%d beyond max_reorg_depth=%d fork=%d",
              chain.name, plan.depth, chain.max_reorg_depth, plan.fork)
    record(ctx, IngestEvent(chain.id, "halted", f"reorg of depth {plan.depth} exceeds max_reorg_depth "
                             f"{chain.max_reorg_depth}; ingestion stopped",
                             detail={"depth": plan.depth, "fork_block": plan.fork, "level": "alert"}))
    return 0


def _repair(ctx: IngestContext, cursor: Cursor, plan: planning.ReorgPlan, head: int) -> int:
    """Replace everything from the fork with the upstream's current blocks, in one transaction;
    or halt the chain when the reorg is deeper than the limit. The cursor moves as sync's does:
    never past the settled head, whatever the repair read above it."""
    chain = ctx.chain
    if plan.halt:
        return _halt(ctx, plan)
    read = planning.sync_plan(replace(cursor, synced_block=plan.fork - 1), head, sync_span(chain),
                              settle_blocks(chain))
    assert read is not None  # the fork is at or below the cursor, so at or below the head
    read_before = ctx.source.block_hashes([read.target]) if read.target >= plan.fork else {}
    read = _readable(ctx, read, plan.fork - 1, read_before)
    result = ctx.source.fetch_blocks(plan.fork, read.window.hi, max_calls=chain.max_pages_per_cycle)
    synced = planning.synced_to(read, plan.fork - 1, result.covered_to)
    head_hash = _head_hash(ctx, synced, read_before) if synced >= plan.fork else None
    detail = {"depth": plan.depth, "fork_block": plan.fork, "to_block": max(result.covered_to, plan.fork - 1),
              "synced_block": synced, "reached_head": planning.reached_head(read, synced),
              "quarantined": len(result.quarantined)}
    with ctx.cursor_lock, ctx.pool.connection() as conn:
        current = replace(store.get_cursor(conn, chain.id), synced_block=synced, synced_hash=head_hash)
        event = IngestEvent(chain.id, "reorg", f"reorg of depth {plan.depth} from block {plan.fork}",
                            rows=len(result.transfers), detail=detail)
        deleted, inserted = store.replace_from_block(conn, chain.id, plan.fork, result.transfers, cursor=current,
                                                     event=event, quarantined=result.quarantined,
                                                     synced_to_head=detail["reached_head"])
    log.warning("reorg chain=%s depth=%d fork=%d deleted=%d inserted=%d",
                chain.name, plan.depth, plan.fork, deleted, inserted)
    metrics.REORGS.labels(chain.name).inc()
    count_rows(ctx, inserted, planning.newly_covered(result.quarantined, plan.fork - 1, synced))
    ctx.on_changed()
    return inserted
