"""The sync job: from the cursor toward the head, stopping at the first stored transfer, after
checking the newest stored block for a reorg (and repairing it from the fork, in one transaction).

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


def sync(ctx: IngestContext) -> int:
    """One sync cycle: repair a reorg if the last blocks changed, else fetch from the cursor
    toward the head within `max_pages_per_cycle` calls. Returns rows newly stored."""
    if not ctx.may_call_upstream:
        return 0
    head = ctx.source.head_block()
    cursor = ensure_anchor(ctx, head)
    window = planning.sync_window(cursor, head, sync_span(ctx.chain))
    # The next head's hash is read first, then the current head's for the reorg check, then the
    # rows: a reorg after the first read leaves a stale next-head hash that the next cycle
    # catches; one before it changes the current head too and is caught now. Never stale rows
    # under a fresh hash.
    wanted = list(dict.fromkeys(b for b in (window.hi if window else None, cursor.synced_block) if b is not None))
    upstream = ctx.source.block_hashes(wanted)
    plan = _check_reorg(ctx, cursor, upstream)
    if plan is not None:
        return _repair(ctx, cursor, plan, head)
    if window is None:  # already at the head: fresh, with nothing to fetch
        with ctx.pool.connection() as conn:
            store.record_synced(conn, ctx.chain_id)
        return 0
    result = ctx.source.fetch_blocks(window.lo, window.hi, max_calls=ctx.chain.max_pages_per_cycle)
    if result.covered_to < window.lo:
        return 0
    with ctx.pool.connection() as conn:
        known = store.known_transfer_keys(conn, ctx.chain_id, window.lo, result.covered_to)
    first_known = planning.stop_at_known(result.transfers, known)
    new = _commit_sync(ctx, result, window.lo, first_known, _head_hash(ctx, result.covered_to, window.hi, upstream),
                       at_head=result.covered_to == window.hi == head)
    if new:
        ctx.on_changed()
    return new


def _head_hash(ctx: IngestContext, covered_to: int, planned: int, read_before: dict[int, bytes]) -> bytes | None:
    """The hash the cursor's new head carries. When the fetch stopped short of the planned block
    (call budget spent) the hash can only be read afterwards: a reorg inside that fetch is then
    caught only if it also changed a block with stored rows in the check range."""
    if covered_to == planned:
        return read_before.get(planned)
    return ctx.source.block_hashes([covered_to]).get(covered_to)


def sync_span(chain: ChainConfig) -> int | None:
    # Explorers page through any block range within max_calls; JSON-RPC is windowed by blocks.
    return chain.max_pages_per_cycle * chain.log_window_blocks if chain.kind == "rpc_logs" else None


def _commit_sync(ctx: IngestContext, result: Any, lo: int, first_known: int, head_hash: bytes | None, *,
                 at_head: bool) -> int:
    quarantined = len(result.quarantined)
    detail = {"job": "sync", "from_block": lo, "to_block": result.covered_to, "quarantined": quarantined,
              "skipped": result.skipped, "already_stored": len(result.transfers) - first_known}
    with ctx.cursor_lock, ctx.pool.connection() as conn:
        cursor = replace(store.get_cursor(conn, ctx.chain_id), synced_block=result.covered_to,
                         synced_hash=head_hash)
        event = IngestEvent(ctx.chain_id, "ingested", f"sync blocks {lo}..{result.covered_to}",
                            rows=len(result.transfers), detail=detail)
        new = store.write_batch(conn, ctx.chain_id, result.transfers, cursor=cursor, event=event,
                                quarantined=result.quarantined, synced_to_head=at_head)
    count_rows(ctx, new, quarantined)
    log.debug("ingested chain=%s job=sync blocks=%d..%d rows=%d new=%d quarantined=%d",
              ctx.chain.name, lo, result.covered_to, len(result.transfers), new, quarantined)
    summary = ctx.activity.note(ctx.clock(), lo, result.covered_to, new, quarantined)
    if summary is not None:
        log.info("ingested chain=%s job=sync rows=%d quarantined=%d blocks=%d..%d cycles=%d in %.0fs",
                 ctx.chain.name, summary["rows"], summary["quarantined"], summary["first_block"],
                 summary["last_block"], summary["cycles"], summary["seconds"])
    return new


def _check_reorg(ctx: IngestContext, cursor: Cursor, upstream_now: dict[int, bytes]) -> planning.ReorgPlan | None:
    """Compare the newest known block of the check range — the cursor's own head, whose hash is
    kept even without transfers — with upstream; only on a mismatch look for the fork. Every
    cycle verifies its head before extending past it, so one matching block vouches for every
    stored block below it: one hash per cycle instead of `confirmations`."""
    check = planning.reorg_check_range(cursor, ctx.chain.confirmations)
    if check is None:
        return None
    with ctx.pool.connection() as conn:
        stored = _known_hashes(conn, ctx.chain_id, cursor, check)
    if not stored:
        return None
    top = max(stored)
    current = upstream_now[top] if top in upstream_now else ctx.source.block_hashes([top]).get(top)
    if current == stored[top]:
        return None
    search = planning.fork_search_range(cursor, ctx.chain.max_reorg_depth)
    with ctx.pool.connection() as conn:
        stored = _known_hashes(conn, ctx.chain_id, cursor, search)
    upstream = ctx.source.block_hashes(sorted(stored))
    return planning.plan_reorg(stored, upstream, cursor.synced_block, ctx.chain.max_reorg_depth)


def _known_hashes(conn: Any, chain_id: int, cursor: Cursor, window: planning.Window) -> dict[int, bytes]:
    """Stored block hashes in the window, plus the cursor head's own."""
    stored = store.stored_block_hashes(conn, chain_id, window.lo, window.hi)
    if cursor.synced_hash is not None and window.lo <= cursor.synced_block <= window.hi:
        stored[cursor.synced_block] = cursor.synced_hash
    return stored


def _repair(ctx: IngestContext, cursor: Cursor, plan: planning.ReorgPlan, head: int) -> int:
    """Replace everything from the fork with the upstream's current blocks, in one transaction;
    or halt the chain when the reorg is deeper than the limit."""
    chain = ctx.chain
    if plan.halt:
        ctx.halted = True
        log.error("halted chain=%s reorg depth=%d beyond max_reorg_depth=%d fork=%d",
                  chain.name, plan.depth, chain.max_reorg_depth, plan.fork)
        record(ctx, IngestEvent(chain.id, "halted", f"reorg of depth {plan.depth} exceeds max_reorg_depth "
                                 f"{chain.max_reorg_depth}; ingestion stopped",
                                 detail={"depth": plan.depth, "fork_block": plan.fork, "level": "alert"}))
        return 0
    hi = max(plan.fork, head if sync_span(chain) is None else min(head, plan.fork + sync_span(chain) - 1))
    read_before = ctx.source.block_hashes([hi])
    result = ctx.source.fetch_blocks(plan.fork, hi, max_calls=chain.max_pages_per_cycle)
    covered_to = max(result.covered_to, plan.fork - 1)
    head_hash = _head_hash(ctx, covered_to, hi, read_before) if covered_to >= plan.fork else None
    detail = {"depth": plan.depth, "fork_block": plan.fork, "to_block": covered_to}
    with ctx.cursor_lock, ctx.pool.connection() as conn:
        current = replace(store.get_cursor(conn, chain.id), synced_block=covered_to, synced_hash=head_hash)
        event = IngestEvent(chain.id, "reorg", f"reorg of depth {plan.depth} from block {plan.fork}",
                            rows=len(result.transfers), detail=detail)
        deleted, inserted = store.replace_from_block(conn, chain.id, plan.fork, result.transfers,
                                                     cursor=current, event=event, synced_to_head=covered_to == head)
    log.warning("reorg chain=%s depth=%d fork=%d deleted=%d inserted=%d",
                chain.name, plan.depth, plan.fork, deleted, inserted)
    metrics.REORGS.labels(chain.name).inc()
    count_rows(ctx, inserted, 0)
    ctx.on_changed()
    return inserted
