"""Pure ingest decisions: sync and backfill windows, reorg ranges, fork points, progress.

Every function is a function of cursors, heads, hashes and `now` handed in (the idea of
ethereum-etl's `_calculate_target_block`); the jobs do the I/O around them, so tests need
neither a network nor a clock.

Cursor invariant (model.Cursor): every block in [backfilled_block, synced_block] is stored
whole. A chain starts *anchored*: synced_block = anchor, backfilled_block = anchor + 1 (an
empty range); sync grows it upward, backfill downward. Above the cursor the store may hold rows
of unsettled blocks (explorer kinds, see `sync_plan`), which every sync reads again.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from transfer_daemon.model import Cursor, Quarantined, Transfer

SECONDS_PER_DAY = 86400
#: Used to place the backfill target until the stored rows give a measured block time.
DEFAULT_BLOCK_TIME_S = 12.0

TransferKey = tuple[bytes, int, bytes]


@dataclass(frozen=True, slots=True)
class Window:
    """An inclusive block range."""

    lo: int
    hi: int

    @property
    def size(self) -> int:
        return self.hi - self.lo + 1


@dataclass(frozen=True, slots=True)
class ReorgPlan:
    """What to do after a block-hash mismatch: repair from `fork`, or halt when too deep."""

    fork: int
    depth: int
    halt: bool


def transfer_key(transfer: Transfer) -> TransferKey:
    """The store's dedup key within a chain."""
    return (transfer.tx_hash, transfer.log_index, transfer.contract_address)


# --- start and sync -----------------------------------------------------------------------


def anchor_cursor(chain_id: int, head: int, confirmations: int, start_block: int | None) -> Cursor:
    """The first cursor of a chain.

    The anchor sits `confirmations` below the head so backfill never writes unsettled blocks;
    sync covers everything above it. A `start_block` above the anchor wins (nothing to fill).
    """
    anchor = max(head - confirmations, -1)
    if start_block is not None:
        anchor = max(anchor, start_block - 1)
    target = start_block
    done = target is not None and anchor + 1 <= target
    return Cursor(chain_id, synced_block=anchor, backfilled_block=anchor + 1,
                  backfill_target_block=target, backfill_done=done)


def sync_window(cursor: Cursor, head: int, max_span: int | None = None) -> Window | None:
    """Blocks the next sync cycle asks for: from just above the cursor up to the head.

    `max_span` bounds block-windowed kinds (rpc_logs: max_pages × log_window_blocks); page-
    windowed explorers are bounded by `max_calls` instead and pass None.
    """
    if cursor.synced_block is None:
        return None
    lo = cursor.synced_block + 1
    hi = head if max_span is None else min(head, lo + max_span - 1)
    return Window(lo, hi) if lo <= hi else None


@dataclass(frozen=True, slots=True)
class SyncPlan:
    """One sync cycle: the blocks it reads, and how far the cursor may move."""

    window: Window
    target: int  # the highest block the cursor may cover this cycle
    settled_head: int  # head - settle_blocks: a cycle whose cursor reaches it is synced to the head


def sync_plan(cursor: Cursor, head: int, max_span: int | None = None, settle_blocks: int = 0) -> SyncPlan | None:
    """The sync window, and a cursor that never passes `head - settle_blocks`.

    An explorer's index trails its own node: `tokentx`/`getLogs` serve a block's rows some time
    after `module=proxy` reports the block, so a short page proves nothing about the newest blocks.
    Their rows are stored as they come, but the cursor covers a block only once it is
    `settle_blocks` deep; until then every cycle reads it again. JSON-RPC serves logs and head from
    one node and passes 0.
    """
    window = sync_window(cursor, head, max_span)
    if window is None:
        return None
    assert cursor.synced_block is not None  # sync_window gives a window above the cursor only
    settled = head - settle_blocks
    return SyncPlan(window, max(cursor.synced_block, min(window.hi, settled)), settled)


def synced_to(plan: SyncPlan, synced_block: int, covered_to: int) -> int:
    """The cursor after a read that covered up to `covered_to`: never past the target, never back."""
    return max(synced_block, min(covered_to, plan.target))


def reached_head(plan: SyncPlan, synced_block: int) -> bool:
    """Whether the cycle's cursor reached the (settled) head: the cycle is "synced to the head"."""
    return synced_block >= plan.settled_head


def readable_target(plan: SyncPlan, synced_block: int, hashes: Mapping[int, bytes], probed_from: int) -> SyncPlan:
    """The plan with its target lowered to the highest block above the cursor whose hash the node
    gave (`hashes`, answers for the blocks `probed_from`..target): the cursor's new head must carry
    a hash read before its rows. A node may answer `null` for a header its peers have served logs
    of; the newest header it serves is then the head this cycle can reach (`settled_head`), and
    when it serves none above the cursor (all of them probed), the cursor is at that head."""
    best = max((block for block in hashes if synced_block < block <= plan.target), default=None)
    if best == plan.target:
        return plan
    if best is not None:
        return replace(plan, target=best, settled_head=min(plan.settled_head, best))
    if probed_from <= synced_block + 1:
        return replace(plan, target=synced_block, settled_head=min(plan.settled_head, synced_block))
    return replace(plan, target=synced_block)


def stop_at_known(transfers: Sequence[Transfer], known: Collection[TransferKey]) -> int:
    """Index of the first transfer already stored (len() when none): where a sync window meets
    what an earlier write covered. Dedup is by key in the store, so this only informs."""
    for index, transfer in enumerate(transfers):
        if transfer_key(transfer) in known:
            return index
    return len(transfers)


def stale_from(stored: Mapping[int, bytes], known: Collection[TransferKey], read: Sequence[Transfer],
               lo: int) -> int | None:
    """The first block of a read range [lo, …] whose stored rows the read contradicts, or None.

    Rows stored above the cursor (unsettled blocks) were read before; a reorg may have replaced
    their block since. A stored block whose rows now carry another hash, or that now has no rows,
    is stale from there on; a stored key the read lacks (rows without a block hash) makes the
    whole range stale. The read is whole blocks, so it replaces what the store holds from there.
    """
    now = {transfer.block_number: transfer.block_hash for transfer in read}
    changed = [block for block, digest in stored.items() if block not in now or now[block] not in (None, digest)]
    if changed:
        return min(changed)
    if not set(known) <= {transfer_key(transfer) for transfer in read}:
        return lo
    return None


def newly_covered(quarantined: Sequence[Quarantined], synced_before: int, synced_after: int) -> int:
    """How many quarantined rows lie in the blocks a cycle newly covers, so that a row read again
    every cycle until its block settles is counted once (the store keeps its event once, by
    digest). A row whose block is unknown counts each time it is read."""
    return sum(1 for row in quarantined
               if row.block_number is None or synced_before < row.block_number <= synced_after)


# --- reorgs -------------------------------------------------------------------------------


def reorg_check_range(cursor: Cursor, confirmations: int) -> Window | None:
    """The last `confirmations` synced blocks, re-checked by hash every cycle."""
    if cursor.synced_block is None or confirmations <= 0 or cursor.synced_block < 0:
        return None
    return Window(max(0, cursor.synced_block - confirmations + 1), cursor.synced_block)


def fork_search_range(cursor: Cursor, max_reorg_depth: int, settle_blocks: int = 0) -> Window:
    """Where to look for the fork after a mismatch: one block deeper than the allowed depth,
    so a mismatch there proves the reorg too deep. Depth counts from the head the cursor settled
    below (`synced_block + settle_blocks`); when that leaves no allowed block under the cursor,
    the range is the cursor's block alone."""
    synced = cursor.synced_block if cursor.synced_block is not None else 0
    return Window(max(0, min(synced, synced + settle_blocks - max_reorg_depth)), synced)


def mismatched_blocks(stored: Mapping[int, bytes], upstream: Mapping[int, bytes]) -> list[int]:
    """Stored blocks whose hash upstream differs or is gone (a shorter chain), ascending."""
    return sorted(block for block, digest in stored.items() if upstream.get(block) != digest)


def plan_reorg(stored: Mapping[int, bytes], upstream: Mapping[int, bytes], synced_block: int,
               max_reorg_depth: int, settle_blocks: int = 0) -> ReorgPlan | None:
    """Fork point and halt decision from stored vs upstream hashes over the fork search range.

    The fork is just above the highest stored block that still matches below the first
    mismatch. Blocks without stored rows carry no hash; when none below the mismatch is known,
    the repair starts at the deepest allowed block, which is right for every reorg within the
    limit. A mismatch deeper than the limit halts: the chain is not repaired by guessing. Depth
    counts from the head the cursor settled below (`synced_block + settle_blocks`), so a reorg is
    as deep for an explorer kind, whose cursor trails the head, as for rpc_logs.
    """
    mismatched = mismatched_blocks(stored, upstream)
    if not mismatched:
        return None
    top = synced_block + settle_blocks
    first = mismatched[0]
    deepest_allowed = max(0, top - max_reorg_depth + 1)
    if first < deepest_allowed:
        return ReorgPlan(fork=first, depth=top - first + 1, halt=True)
    matched_below = [block for block in stored if block < first]
    fork = max(max(matched_below) + 1, deepest_allowed) if matched_below else deepest_allowed
    return ReorgPlan(fork=fork, depth=top - fork + 1, halt=False)


# --- backfill -----------------------------------------------------------------------------


def estimate_block_time(newest: tuple[int, int] | None, oldest: tuple[int, int] | None) -> float:
    """Seconds per block from two (block, unix time) samples; the default when they can't tell."""
    if newest is None or oldest is None or newest[0] <= oldest[0] or newest[1] <= oldest[1]:
        return DEFAULT_BLOCK_TIME_S
    return (newest[1] - oldest[1]) / (newest[0] - oldest[0])


def backfill_target(start_block: int | None, backfill_days: int, now: float,
                    newest: tuple[int, int] | None, oldest: tuple[int, int] | None,
                    head: int) -> int:
    """The oldest block backfill must reach: `start_block`, else the block `backfill_days` ago
    estimated from the newest known (block, time) and the block time measured so far."""
    if start_block is not None:
        return start_block
    block_time = estimate_block_time(newest, oldest)
    reference_block, reference_time = newest if newest is not None else (head, now)
    seconds_back = reference_time - (now - backfill_days * SECONDS_PER_DAY)
    return max(0, reference_block - math.ceil(seconds_back / block_time))


def backfill_window(cursor: Cursor, span: int) -> Window | None:
    """The next window below the oldest block reached, at most `span` blocks, not below the
    target; None when backfill is done or nothing is anchored yet."""
    if cursor.backfill_done or cursor.backfilled_block is None:
        return None
    hi = cursor.backfilled_block - 1
    floor = cursor.backfill_target_block if cursor.backfill_target_block is not None else 0
    if hi < floor:
        return None
    return Window(max(floor, hi - span + 1), hi)


def split_window(window: Window, parts: int) -> list[Window]:
    """`window` cut into at most `parts` contiguous windows of near-equal size, ascending."""
    parts = max(1, min(parts, window.size))
    size, extra = divmod(window.size, parts)
    out, lo = [], window.lo
    for index in range(parts):
        hi = lo + size - 1 + (1 if index < extra else 0)
        out.append(Window(lo, hi))
        lo = hi + 1
    return out


def backfill_reached(window_lo: int, target: int, oldest_time: int | None, cutoff: float) -> bool:
    """Done when the window reached the target block, or when rows older than the cutoff time
    showed up (the time is exact where the block estimate is not)."""
    return window_lo <= target or (oldest_time is not None and oldest_time < cutoff)


def next_span(span: int, rows: int, rows_goal: int, min_span: int, max_span: int) -> int:
    """Adapt the backfill window to the density seen, so a window holds about `rows_goal`
    rows: wide over quiet history, narrow over busy history. Grows at most 4× at a time."""
    if rows <= 0:
        wanted = span * 4
    else:
        wanted = min(span * 4, max(1, int(span * rows_goal / rows)))
    return max(min_span, min(max_span, wanted))


def backfill_share(cursor: Cursor) -> float:
    """Share of [target, synced] stored so far, 0..1 (block-proportional ≈ time-proportional)."""
    if cursor.backfill_done:
        return 1.0
    if cursor.synced_block is None or cursor.backfilled_block is None:
        return 0.0
    target = cursor.backfill_target_block if cursor.backfill_target_block is not None else 0
    total = cursor.synced_block - target + 1
    if total <= 0:
        return 1.0
    covered = cursor.synced_block - cursor.backfilled_block + 1
    return max(0.0, min(1.0, covered / total))


def backfilled_cursor(cursor: Cursor, window: Window, target: int, done: bool) -> Cursor:
    """The cursor that commits together with a completed backfill window."""
    return replace(cursor, backfilled_block=window.lo, backfill_target_block=target, backfill_done=done)


# --- verify -------------------------------------------------------------------------------


# --- verify: a settled window of the last hours, compared transfer by transfer ------------

#: What verify compares per transfer: its key — block, contract, log index, transaction (the
#: chain is the caller's) — and what it says: sender, recipient, value.
VerifyRow = tuple[int, bytes, int, bytes, bytes, bytes, int]


def verify_row(transfer: Transfer) -> VerifyRow:
    t = transfer
    return (t.block_number, t.contract_address, t.log_index, t.tx_hash, t.from_address, t.to_address, t.value)


def block_at_time(before: tuple[int, int], after: tuple[int, int], at: float) -> int:
    """The first block at or after unix time `at`, interpolated between two (block, time) samples
    around it (`before` older than `at`, `after` not): no stored block lies between them."""
    (low_block, low_time), (high_block, high_time) = before, after
    if high_block <= low_block + 1 or high_time <= low_time:
        return low_block + 1
    estimate = low_block + (at - low_time) * (high_block - low_block) / (high_time - low_time)
    return max(low_block + 1, min(high_block, math.ceil(estimate)))


def settled_window(cursor: Cursor, head: int, confirmations: int, oldest_stored: int | None,
                   before: tuple[int, int] | None, after: tuple[int, int] | None,
                   cutoff: float, now: float) -> Window | None:
    """The blocks verify compares: from the block at time `cutoff` up to `confirmations` below the
    head, inside what the store holds whole ([backfilled_block, synced_block]).

    `before`/`after` are the stored (block, time) samples around the cutoff; with none after it,
    the head at `now` stands in. With none before it, the store is younger than the window, which
    then starts where the store does — never below its oldest stored block: retention drops old
    months, and what it dropped would all read as missing.
    """
    if cursor.synced_block is None or cursor.backfilled_block is None:
        return None
    hi = min(head - confirmations, cursor.synced_block)
    lo = max(cursor.backfilled_block, oldest_stored if oldest_stored is not None else 0)
    if before is not None:
        lo = max(lo, block_at_time(before, after or (head, int(now)), cutoff))
    return Window(lo, hi) if lo <= hi else None


@dataclass(frozen=True, slots=True)
class Difference:
    """Upstream against the store over one range: rows on each side, and per block how many rows
    the store lacks (`missing`) or holds that the upstream does not (`extra`)."""

    upstream: int
    stored: int
    missing: Mapping[int, int]
    extra: Mapping[int, int]

    @property
    def missing_rows(self) -> int:
        return sum(self.missing.values())

    @property
    def extra_rows(self) -> int:
        return sum(self.extra.values())

    @property
    def blocks(self) -> list[int]:
        return sorted(set(self.missing) | set(self.extra))


def compare_transfers(upstream: Iterable[Transfer], stored: Iterable[Transfer]) -> Difference:
    """Transfer by transfer (`verify_row`): a stored row whose key matches but whose sender,
    recipient or value differs counts once missing and once extra."""
    theirs = {verify_row(t) for t in upstream}
    ours = {verify_row(t) for t in stored}
    missing = Counter(row[0] for row in theirs - ours)
    extra = Counter(row[0] for row in ours - theirs)
    return Difference(len(theirs), len(ours), dict(missing), dict(extra))


def blocks_to_repair(difference: Difference, delete_extra: bool) -> list[int]:
    """Blocks to re-ingest, ascending: every block that differs; or, where the store must not
    lose rows on the upstream's word alone (an explorer's index can miss rows for a while),
    only the blocks where the upstream has rows the store lacks."""
    return difference.blocks if delete_extra else sorted(difference.missing)
