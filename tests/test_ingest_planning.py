"""Pure ingest decisions: no database, no network, no clock."""

from __future__ import annotations

import pytest

from transfer_daemon.ingest import planning as p
from transfer_daemon.model import Cursor, Quarantined, Transfer

DAY = 86400


def _transfer(block: int, tx: int, log_index: int = 0, block_hash: bytes | None = None) -> Transfer:
    return Transfer(
        chain_id=1, block_number=block, time_stamp=1_700_000_000 + block, tx_hash=tx.to_bytes(32, "big"),
        log_index=log_index, from_address=b"\1" * 20, to_address=b"\2" * 20, value=1,
        contract_address=b"\3" * 20, block_hash=block_hash,
    )


def _h(n: int) -> bytes:
    return n.to_bytes(32, "big")


# --- anchor and sync ---


def test_anchor_sits_confirmations_below_head_with_an_empty_stored_range():
    cursor = p.anchor_cursor(1, head=1000, confirmations=12, start_block=None)
    assert (cursor.synced_block, cursor.backfilled_block) == (988, 989)
    assert cursor.backfill_target_block is None and not cursor.backfill_done


def test_anchor_with_start_block_above_it_needs_no_backfill():
    cursor = p.anchor_cursor(1, head=1000, confirmations=12, start_block=995)
    assert cursor.synced_block == 994 and cursor.backfill_done


def test_anchor_on_a_young_chain_starts_before_block_zero():
    cursor = p.anchor_cursor(1, head=3, confirmations=12, start_block=0)
    assert (cursor.synced_block, cursor.backfilled_block, cursor.backfill_done) == (-1, 0, True)


def test_sync_window_runs_from_above_the_cursor_to_the_head():
    cursor = Cursor(1, synced_block=100, backfilled_block=50)
    assert p.sync_window(cursor, head=130) == p.Window(101, 130)
    assert p.sync_window(cursor, head=130, max_span=10) == p.Window(101, 110)
    assert p.sync_window(cursor, head=100) is None
    assert p.sync_window(Cursor(1), head=100) is None


def test_anchor_start_block_below_the_anchor_or_at_it_still_needs_a_backfill():
    assert not p.anchor_cursor(1, head=1000, confirmations=12, start_block=500).backfill_done
    at_anchor = p.anchor_cursor(1, head=1000, confirmations=12, start_block=988)
    assert (at_anchor.synced_block, at_anchor.backfilled_block, at_anchor.backfill_done) == (988, 989, False)
    young = p.anchor_cursor(1, head=3, confirmations=12, start_block=None)
    assert (young.synced_block, young.backfilled_block, young.backfill_done) == (-1, 0, False)


def test_sync_window_of_one_block():
    assert p.sync_window(Cursor(1, synced_block=100), head=101) == p.Window(101, 101)


def test_sync_plan_reads_to_the_head_and_covers_to_the_settled_head():
    cursor = Cursor(1, synced_block=100)
    plan = p.sync_plan(cursor, head=130, settle_blocks=12)
    assert plan == p.SyncPlan(p.Window(101, 130), target=118, settled_head=118)
    assert p.sync_plan(cursor, head=130) == p.SyncPlan(p.Window(101, 130), target=130, settled_head=130)
    assert p.sync_plan(cursor, head=130, max_span=10) == p.SyncPlan(p.Window(101, 110), target=110, settled_head=130)
    assert p.sync_plan(cursor, head=100, settle_blocks=12) is None
    assert p.sync_plan(Cursor(1), head=100) is None


def test_sync_plan_never_moves_the_cursor_back():
    """More confirmations after a reload: the cursor stays where it is until the head passes it."""
    plan = p.sync_plan(Cursor(1, synced_block=125), head=130, settle_blocks=12)
    assert plan == p.SyncPlan(p.Window(126, 130), target=125, settled_head=118)
    assert p.synced_to(plan, 125, covered_to=130) == 125 and p.reached_head(plan, 125)


def test_synced_to_stops_at_the_target_or_where_the_read_stopped():
    plan = p.SyncPlan(p.Window(101, 130), target=118, settled_head=118)
    assert p.synced_to(plan, 100, covered_to=130) == 118
    assert p.synced_to(plan, 100, covered_to=110) == 110
    assert p.synced_to(plan, 100, covered_to=99) == 100


def test_reached_head_means_the_settled_head_reached():
    plan = p.SyncPlan(p.Window(101, 130), target=118, settled_head=118)
    assert p.reached_head(plan, 118) and p.reached_head(plan, 119)
    assert not p.reached_head(plan, 117)


def test_readable_target_is_the_highest_block_with_a_hash_above_the_cursor():
    plan = p.SyncPlan(p.Window(101, 130), target=130, settled_head=130)
    hashes = {100: _h(100), 126: _h(126), 127: _h(127), 131: _h(131)}
    assert p.readable_target(plan, 100, hashes, 122) == p.SyncPlan(p.Window(101, 130), target=127, settled_head=127)
    assert p.readable_target(plan, 100, {**hashes, 130: _h(130)}, 122) == plan
    assert p.readable_target(plan, 100, {101: _h(101)}, 101).target == 101


def test_without_a_readable_block_the_cursor_stays_and_is_at_the_head_only_if_all_were_probed():
    plan = p.SyncPlan(p.Window(101, 130), target=130, settled_head=130)
    short = p.readable_target(plan, 100, {100: _h(100), 99: _h(99)}, 122)
    assert short == p.SyncPlan(p.Window(101, 130), target=100, settled_head=130) and not p.reached_head(short, 100)
    close = p.SyncPlan(p.Window(101, 103), target=103, settled_head=103)
    for probed_from in (101, 100):
        at_head = p.readable_target(close, 100, {100: _h(100)}, probed_from)
        assert at_head == p.SyncPlan(p.Window(101, 103), target=100, settled_head=100)
    assert p.readable_target(close, 100, {}, 102).settled_head == 103


def test_a_readable_target_below_the_head_keeps_its_settled_head():
    plan = p.SyncPlan(p.Window(101, 130), target=110, settled_head=118)  # a window cut by its span
    assert p.readable_target(plan, 100, {110: _h(110), 109: _h(109)}, 102) == plan
    assert p.readable_target(plan, 100, {108: _h(108)}, 102) == p.SyncPlan(p.Window(101, 130), 108, 108)
    assert p.readable_target(p.SyncPlan(p.Window(101, 130), 110, 105), 100, {108: _h(108)}, 102).settled_head == 105


def test_stale_from_finds_a_stored_block_the_read_contradicts():
    read = [_transfer(10, 1, block_hash=_h(10)), _transfer(11, 2, block_hash=_h(11)), _transfer(13, 3)]
    known = {p.transfer_key(t) for t in read}
    assert p.stale_from({10: _h(10), 11: _h(11)}, known, read, 10) is None
    assert p.stale_from({10: _h(10), 11: _h(99)}, known, read, 10) == 11, "a new hash"
    assert p.stale_from({10: _h(10), 12: _h(12), 14: _h(14)}, known, read, 10) == 12, "now without rows"
    assert p.stale_from({13: _h(13)}, known, read, 10) is None, "rows without a hash contradict nothing"
    lost = _transfer(13, 4, 1)
    assert p.stale_from({10: _h(10)}, known | {p.transfer_key(lost)}, read, 10) == 10, "a stored key is gone"
    assert p.stale_from({}, set(), [], 10) is None


def test_newly_covered_counts_the_rows_of_blocks_the_cursor_passes_now():
    rows = [Quarantined(1, "bad", {}, block) for block in (100, 101, 110, 111)] + [Quarantined(1, "bad", {})]
    assert p.newly_covered(rows, 100, 110) == 3
    assert p.newly_covered(rows, 99, 111) == 5
    assert p.newly_covered([], 0, 10) == 0


def test_stop_at_known_finds_the_first_stored_key():
    rows = [_transfer(10, 1), _transfer(10, 2), _transfer(11, 3, 1), _transfer(12, 4)]
    known = {p.transfer_key(rows[2]), p.transfer_key(rows[3])}
    assert p.stop_at_known(rows, known) == 2
    assert p.stop_at_known(rows, set()) == 4
    assert p.stop_at_known([], known) == 0


# --- reorgs ---


def test_reorg_check_range_is_the_last_confirmations_blocks():
    assert p.reorg_check_range(Cursor(1, synced_block=100), 12) == p.Window(89, 100)
    assert p.reorg_check_range(Cursor(1, synced_block=5), 12) == p.Window(0, 5)
    assert p.reorg_check_range(Cursor(1, synced_block=100), 0) is None
    assert p.reorg_check_range(Cursor(1, synced_block=-1), 12) is None


def test_reorg_check_range_edges():
    assert p.reorg_check_range(Cursor(1, synced_block=0), 12) == p.Window(0, 0)
    assert p.reorg_check_range(Cursor(1, synced_block=100), 1) == p.Window(100, 100)
    assert p.reorg_check_range(Cursor(1), 12) is None


def test_fork_search_goes_one_block_deeper_than_the_limit():
    assert p.fork_search_range(Cursor(1, synced_block=100), 64) == p.Window(36, 100)
    assert p.fork_search_range(Cursor(1, synced_block=10), 64) == p.Window(0, 10)
    assert p.fork_search_range(Cursor(1), 64) == p.Window(0, 0)


def test_fork_search_counts_depth_from_the_head_the_cursor_settled_below():
    assert p.fork_search_range(Cursor(1, synced_block=100), 64, settle_blocks=12) == p.Window(48, 100)
    assert p.fork_search_range(Cursor(1, synced_block=100), 3, settle_blocks=5) == p.Window(100, 100)


def test_a_reorg_is_as_deep_below_a_settled_cursor_as_below_the_head():
    stored = {b: _h(b) for b in range(90, 101)}
    upstream = {**stored, **{b: _h(b + 1000) for b in range(99, 101)}}
    assert p.plan_reorg(stored, upstream, 100, 64, settle_blocks=12) == p.ReorgPlan(fork=99, depth=14, halt=False)
    assert p.plan_reorg(stored, upstream, 100, 13, settle_blocks=12) == p.ReorgPlan(fork=99, depth=14, halt=True)
    assert p.plan_reorg(stored, upstream, 100, 14, settle_blocks=12) == p.ReorgPlan(fork=99, depth=14, halt=False)


def test_a_reorg_down_to_block_zero_is_repaired_from_it():
    stored = {b: _h(b) for b in range(6)}
    upstream = {b: _h(b + 50) for b in range(6)}
    assert p.plan_reorg(stored, upstream, 5, 64) == p.ReorgPlan(fork=0, depth=6, halt=False)


def test_no_mismatch_means_no_reorg():
    stored = {b: _h(b) for b in range(90, 101)}
    assert p.plan_reorg(stored, dict(stored), 100, 64) is None


def test_fork_is_the_first_mismatched_block_when_its_parent_matches():
    stored = {b: _h(b) for b in range(90, 101)}
    upstream = {**stored, **{b: _h(b + 1000) for b in range(97, 101)}}
    assert p.plan_reorg(stored, upstream, 100, 64) == p.ReorgPlan(fork=97, depth=4, halt=False)


def test_fork_is_just_above_the_highest_matching_stored_block():
    # blocks 95 and 96 hold no rows: the reorg may have started at 94+1
    stored = {b: _h(b) for b in (90, 94, 97, 98)}
    upstream = {90: _h(90), 94: _h(94), 97: _h(0), 98: _h(0)}
    assert p.plan_reorg(stored, upstream, 98, 64) == p.ReorgPlan(fork=95, depth=4, halt=False)


def test_blocks_gone_upstream_count_as_mismatched():
    stored = {b: _h(b) for b in range(95, 101)}
    upstream = {b: _h(b) for b in range(95, 99)}
    assert p.plan_reorg(stored, upstream, 100, 64) == p.ReorgPlan(fork=99, depth=2, halt=False)


def test_without_a_known_parent_the_repair_starts_at_the_deepest_allowed_block():
    stored = {98: _h(98), 99: _h(99)}
    upstream = {98: _h(1), 99: _h(2)}
    assert p.plan_reorg(stored, upstream, 100, 10) == p.ReorgPlan(fork=91, depth=10, halt=False)


def test_a_mismatch_deeper_than_the_limit_halts():
    stored = {b: _h(b) for b in range(36, 101)}
    upstream = {b: (_h(b) if b < 36 else _h(b + 7)) for b in range(30, 101)}
    plan = p.plan_reorg(stored, upstream, 100, 64)
    assert plan is not None and plan.halt and plan.fork == 36 and plan.depth == 65


def test_a_mismatch_exactly_at_the_limit_is_repaired():
    stored = {b: _h(b) for b in range(36, 101)}
    upstream = {b: (_h(b) if b < 37 else _h(b + 7)) for b in range(36, 101)}
    assert p.plan_reorg(stored, upstream, 100, 64) == p.ReorgPlan(fork=37, depth=64, halt=False)


# --- backfill ---


def test_backfill_target_is_start_block_when_given():
    assert p.backfill_target(500, 90, now=1e9, newest=None, oldest=None, head=10_000) == 500


def test_backfill_target_from_head_time_and_measured_block_time():
    now = 1_700_000_000
    newest = (100_000, now - 60)  # the newest stored block is a minute old
    oldest = (99_000, now - 60 - 2000)  # 2 s blocks
    target = p.backfill_target(None, 1, now, newest, oldest, head=100_030)
    assert target == 100_000 - (DAY - 60) // 2


def test_backfill_target_without_samples_uses_the_default_block_time_and_clamps_at_genesis():
    now = 1_700_000_000
    assert p.backfill_target(None, 1, now, None, None, head=100_000) == 100_000 - DAY // 12
    assert p.backfill_target(None, 90, now, None, None, head=1000) == 0


def test_backfill_target_counts_days_of_86400_seconds():
    now = 1_000_000
    target = p.backfill_target(None, 1, now, newest=(200_000, now), oldest=(100_000, now - 100_000), head=200_000)
    assert target == 200_000 - 86_400  # 1 s blocks: one block per second of the day


def test_block_time_falls_back_when_samples_cannot_tell():
    assert p.estimate_block_time((10, 100), (10, 100)) == p.DEFAULT_BLOCK_TIME_S
    assert p.estimate_block_time((20, 140), (10, 100)) == 4.0
    assert p.estimate_block_time((1000, 5000), (1000, 4000)) == p.DEFAULT_BLOCK_TIME_S, "same block"
    assert p.estimate_block_time((1000, 4000), (900, 4000)) == p.DEFAULT_BLOCK_TIME_S, "same second"
    assert p.estimate_block_time((900, 5000), (1000, 4000)) == p.DEFAULT_BLOCK_TIME_S, "out of order"
    assert p.estimate_block_time((1000, 5000), (900, 4000)) == 10.0
    assert p.estimate_block_time(None, (900, 4000)) == p.estimate_block_time((900, 4000), None) == 12.0


def test_backfill_windows_walk_down_to_the_target_and_stop():
    cursor = Cursor(1, synced_block=1000, backfilled_block=901, backfill_target_block=700)
    assert p.backfill_window(cursor, 100) == p.Window(801, 900)
    cursor = p.backfilled_cursor(cursor, p.Window(801, 900), 700, False)
    assert p.backfill_window(cursor, 150) == p.Window(700, 800)
    cursor = p.backfilled_cursor(cursor, p.Window(700, 800), 700, True)
    assert p.backfill_window(cursor, 150) is None


def test_backfill_window_before_the_target_is_known_stops_at_genesis():
    assert p.backfill_window(Cursor(1, synced_block=50, backfilled_block=31), 100) == p.Window(0, 30)
    assert p.backfill_window(Cursor(1, synced_block=50, backfilled_block=0), 100) is None
    assert p.backfill_window(Cursor(1), 100) is None


def test_backfill_window_of_the_target_block_alone():
    cursor = Cursor(1, synced_block=60, backfilled_block=51, backfill_target_block=50)
    assert p.backfill_window(cursor, 100) == p.Window(50, 50)


def test_split_window_into_no_parts_is_one_part():
    assert p.split_window(p.Window(3, 7), 0) == [p.Window(3, 7)]


def test_split_window_covers_the_window_contiguously():
    assert p.split_window(p.Window(10, 19), 2) == [p.Window(10, 14), p.Window(15, 19)]
    assert p.split_window(p.Window(10, 20), 2) == [p.Window(10, 15), p.Window(16, 20)]
    assert p.split_window(p.Window(5, 5), 2) == [p.Window(5, 5)]
    assert p.split_window(p.Window(0, 9), 1) == [p.Window(0, 9)]


def test_backfill_reached_by_block_or_by_time():
    assert p.backfill_reached(700, 700, None, 0)
    assert not p.backfill_reached(701, 700, 5000, 4000)
    assert p.backfill_reached(701, 700, 3999, 4000)
    assert not p.backfill_reached(701, 700, 4000, 4000), "a row at the cutoff is inside the period"
    assert not p.backfill_reached(701, 700, None, 4000)


def test_backfill_share_of_the_range():
    assert p.backfill_share(Cursor(1, synced_block=1099, backfilled_block=600, backfill_target_block=100)) == 0.5
    assert p.backfill_share(Cursor(1, synced_block=1099, backfilled_block=1100, backfill_target_block=100)) == 0.0
    assert p.backfill_share(Cursor(1, synced_block=10, backfilled_block=5, backfill_done=True)) == 1.0
    assert p.backfill_share(Cursor(1)) == 0.0
    assert p.backfill_share(Cursor(1, backfilled_block=5)) == p.backfill_share(Cursor(1, synced_block=5)) == 0.0
    assert p.backfill_share(Cursor(1, synced_block=9, backfilled_block=5)) == 0.5, "target unknown: genesis"
    assert p.backfill_share(Cursor(1, synced_block=9, backfilled_block=10, backfill_target_block=10)) == 1.0
    assert p.backfill_share(Cursor(1, synced_block=10, backfilled_block=11, backfill_target_block=10)) == 0.0


@pytest.mark.parametrize(
    ("span", "rows", "goal", "expected"),
    [(1000, 10_000, 10_000, 1000), (1000, 40_000, 10_000, 250), (1000, 0, 10_000, 4000),
     (1000, 100, 10_000, 4000), (10, 1_000_000, 10, 1), (5000, 1, 10_000, 8000), (10, 1, 2, 20)],
)
def test_next_span_aims_at_the_rows_goal_within_bounds(span, rows, goal, expected):
    assert p.next_span(span, rows, goal, min_span=1, max_span=8000) == expected


def test_next_span_never_shrinks_to_nothing():
    assert p.next_span(10, 1000, 1, min_span=0, max_span=100) == 1


# --- verify ---
