"""Pure ingest decisions: no database, no network, no clock."""

from __future__ import annotations

import pytest

from transfer_daemon.ingest import planning as p
from transfer_daemon.model import Cursor, Transfer

DAY = 86400


def _transfer(block: int, tx: int, log_index: int = 0) -> Transfer:
    return Transfer(
        chain_id=1, block_number=block, time_stamp=1_700_000_000 + block, tx_hash=tx.to_bytes(32, "big"),
        log_index=log_index, from_address=b"\1" * 20, to_address=b"\2" * 20, value=1,
        contract_address=b"\3" * 20,
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


def test_fork_search_goes_one_block_deeper_than_the_limit():
    assert p.fork_search_range(Cursor(1, synced_block=100), 64) == p.Window(36, 100)


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


def test_block_time_falls_back_when_samples_cannot_tell():
    assert p.estimate_block_time((10, 100), (10, 100)) == p.DEFAULT_BLOCK_TIME_S
    assert p.estimate_block_time((20, 140), (10, 100)) == 4.0


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


def test_split_window_covers_the_window_contiguously():
    assert p.split_window(p.Window(10, 19), 2) == [p.Window(10, 14), p.Window(15, 19)]
    assert p.split_window(p.Window(10, 20), 2) == [p.Window(10, 15), p.Window(16, 20)]
    assert p.split_window(p.Window(5, 5), 2) == [p.Window(5, 5)]
    assert p.split_window(p.Window(0, 9), 1) == [p.Window(0, 9)]


def test_backfill_reached_by_block_or_by_time():
    assert p.backfill_reached(700, 700, None, 0)
    assert not p.backfill_reached(701, 700, 5000, 4000)
    assert p.backfill_reached(701, 700, 3999, 4000)


def test_backfill_share_of_the_range():
    assert p.backfill_share(Cursor(1, synced_block=1099, backfilled_block=600, backfill_target_block=100)) == 0.5
    assert p.backfill_share(Cursor(1, synced_block=1099, backfilled_block=1100, backfill_target_block=100)) == 0.0
    assert p.backfill_share(Cursor(1, synced_block=10, backfilled_block=5, backfill_done=True)) == 1.0
    assert p.backfill_share(Cursor(1)) == 0.0


@pytest.mark.parametrize(
    ("span", "rows", "goal", "expected"),
    [(1000, 10_000, 10_000, 1000), (1000, 40_000, 10_000, 250), (1000, 0, 10_000, 4000),
     (1000, 100, 10_000, 4000), (10, 1_000_000, 10, 1), (5000, 1, 10_000, 8000)],
)
def test_next_span_aims_at_the_rows_goal_within_bounds(span, rows, goal, expected):
    assert p.next_span(span, rows, goal, min_span=1, max_span=8000) == expected


# --- verify ---


def test_verify_window_is_settled_and_rotates_by_day():
    cursor = Cursor(1, synced_block=1012, backfilled_block=1)
    first = p.verify_window(cursor, 12, 100, now=0)
    assert first == p.Window(901, 1000)
    second = p.verify_window(cursor, 12, 100, now=DAY + 5)
    assert second == p.Window(801, 900)
    assert p.verify_window(cursor, 12, 100, now=DAY * 10) == first  # 10 slots: back to the top
    assert p.verify_window(cursor, 12, 100, now=DAY + 99) == second  # same day, same blocks


def test_verify_window_starts_at_the_oldest_block_retention_left():
    cursor = Cursor(1, synced_block=10_000, backfilled_block=1_000)
    assert p.verify_window(cursor, 12, 100_000, now=0, oldest_stored=6_000) == p.Window(6_000, 9_988)
    assert p.verify_window(cursor, 12, 100_000, now=0, oldest_stored=500) == p.Window(1_000, 9_988)
    assert p.verify_window(cursor, 12, 100, now=0, oldest_stored=9_995) is None  # nothing settled is stored
    for day in range(200):
        window = p.verify_window(cursor, 12, 100, now=day * DAY, oldest_stored=6_000)
        assert window.lo >= 6_000


def test_verify_window_small_or_empty_ranges():
    assert p.verify_window(Cursor(1, synced_block=50, backfilled_block=10), 12, 100, 0) == p.Window(10, 38)
    assert p.verify_window(Cursor(1, synced_block=20, backfilled_block=10), 12, 100, 0) is None
    assert p.verify_window(Cursor(1), 12, 100, 0) is None
