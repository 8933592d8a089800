"""Verify's pure parts: the window, the comparison, the repair choice, the rendering."""

from __future__ import annotations

from dataclasses import replace

from transfer_daemon.config import ChainConfig
from transfer_daemon.ingest import planning as p
from transfer_daemon.ingest.verify import ChainVerdict, Tally, VerifyReport, document, render
from transfer_daemon.model import Cursor, Transfer

HOUR = 3600


def _transfer(block: int, log_index: int = 0, value: int = 1, contract: bytes = b"\3" * 20) -> Transfer:
    return Transfer(chain_id=1, block_number=block, time_stamp=1_700_000_000 + block * 12,
                    tx_hash=block.to_bytes(32, "big"), log_index=log_index, from_address=b"\1" * 20,
                    to_address=b"\2" * 20, value=value, contract_address=contract)


# --- the window ---


def test_block_at_time_interpolates_between_the_stored_blocks_around_it():
    assert p.block_at_time((100, 1000), (200, 2000), 1500) == 150
    assert p.block_at_time((100, 1000), (200, 2000), 1501) == 151  # the first block at or after it
    assert p.block_at_time((100, 1000), (200, 2000), 2000) == 200
    assert p.block_at_time((100, 1000), (101, 1012), 1005) == 101  # adjacent: nothing in between


def test_block_at_time_bounds_and_degenerate_samples():
    # the estimate never goes below the block after `before`: at just after its time, that block
    assert p.block_at_time((100, 1000), (200, 2000), 1001) == 101
    # two blocks apart, the estimate (not the block after `before`) decides
    assert p.block_at_time((100, 1000), (102, 1020), 1015) == 102
    # samples whose times do not increase (a clock step between them): the block after `before`,
    # never a division by zero or an estimate past the samples
    assert p.block_at_time((100, 1000), (200, 1000), 1000.5) == 101
    assert p.block_at_time((100, 1000), (200, 900), 950) == 101
    # Equivalent mutants, all within the precondition (`before` older than `at`, `after` not):
    # when `high_block` is `low_block + 1` (or lower), `<=` vs `<` and `+ 1` vs `- 1` or `+ 0` in the
    # first test only decide whether the estimate is computed; the clamp to [low_block + 1,
    # high_block] gives `low_block + 1` either way. In the clamp, `low_block + 1` vs `low_block` (or
    # `- 1`) never matters: with `at` after `before`'s time the estimate exceeds `low_block`, so its
    # ceiling is at least `low_block + 1`.


def test_settled_window_is_the_last_hours_up_to_confirmations_below_the_head():
    cursor = Cursor(1, synced_block=10_000, backfilled_block=0)
    now = 1_000_000.0
    # stored blocks 12 s apart around the cutoff; the window reaches up to head - confirmations
    window = p.settled_window(cursor, head=10_000, confirmations=12, oldest_stored=0,
                              before=(2_798, now - 86_400 - 24), after=(2_801, now - 86_400 + 12),
                              cutoff=now - 86_400, now=now)
    assert window == p.Window(2_800, 9_988)


def test_settled_window_without_a_stored_block_after_the_cutoff_uses_the_head():
    cursor = Cursor(1, synced_block=1_000, backfilled_block=0)
    window = p.settled_window(cursor, head=1_000, confirmations=0, oldest_stored=0,
                              before=(0, 0), after=None, cutoff=5_000, now=10_000)
    assert window == p.Window(500, 1_000)


def test_settled_window_stays_inside_what_the_store_holds():
    now = 100_000.0
    lagging = Cursor(1, synced_block=500, backfilled_block=100)  # sync behind the head
    assert p.settled_window(lagging, 1_000, 12, 100, None, None, now - HOUR, now) == p.Window(100, 500)
    # retention dropped the months below block 300: the window starts at the oldest stored block
    retained = Cursor(1, synced_block=1_000, backfilled_block=0)
    assert p.settled_window(retained, 1_000, 12, 300, None, (300, 0), now - HOUR, now) == p.Window(300, 988)


def test_settled_window_of_one_block_and_from_block_zero():
    one = Cursor(1, synced_block=988, backfilled_block=988)
    assert p.settled_window(one, 1_000, 12, None, None, None, 0, 10) == p.Window(988, 988)
    # nothing retained below: the window starts at the backfilled block, block 0 included (a
    # `0` default of -1 would be equivalent: block numbers are never negative)
    genesis = Cursor(1, synced_block=50, backfilled_block=0)
    assert p.settled_window(genesis, 1_000, 12, None, None, None, 0, 10) == p.Window(0, 50)


def test_settled_window_is_none_before_anything_settled_is_stored():
    assert p.settled_window(Cursor(1), 1_000, 12, None, None, None, 0, 10) is None
    assert p.settled_window(Cursor(1, synced_block=900), 1_000, 12, None, None, None, 0, 10) is None
    assert p.settled_window(Cursor(1, backfilled_block=900), 1_000, 12, None, None, None, 0, 10) is None
    anchored = Cursor(1, synced_block=995, backfilled_block=996)  # anchored, nothing stored yet
    assert p.settled_window(anchored, 1_000, 12, None, None, None, 0, 10) is None


# --- the comparison ---


def test_compare_counts_missing_and_extra_rows_per_block():
    upstream = [_transfer(10), _transfer(10, 1), _transfer(11), _transfer(12)]
    stored = [_transfer(10), _transfer(11), _transfer(13)]
    difference = p.compare_transfers(upstream, stored)
    assert (difference.upstream, difference.stored) == (4, 3)
    assert difference.missing == {10: 1, 12: 1} and difference.extra == {13: 1}
    assert (difference.missing_rows, difference.extra_rows, difference.blocks) == (2, 1, [10, 12, 13])


def test_a_stored_row_that_says_something_else_is_missing_and_extra():
    difference = p.compare_transfers([_transfer(10, value=5)], [_transfer(10, value=6)])
    assert difference.missing == {10: 1} and difference.extra == {10: 1}


def test_equal_sides_do_not_differ():
    rows = [_transfer(b, i) for b in range(5) for i in range(3)]
    difference = p.compare_transfers(rows, list(reversed(rows)))
    assert difference.blocks == [] and difference.upstream == difference.stored == 15


def test_the_nightly_policy_repairs_only_blocks_with_missing_rows():
    difference = p.compare_transfers([_transfer(10), _transfer(12, value=2)], [_transfer(11), _transfer(12)])
    assert p.blocks_to_repair(difference, delete_extra=True) == [10, 11, 12]
    assert p.blocks_to_repair(difference, delete_extra=False) == [10, 12]


# --- rendering ---


CHAIN = ChainConfig(id=1, name="ethereum", kind="etherscan", contracts=("0x" + "ab" * 20,))


def _report(repair: bool = False) -> VerifyReport:
    differs = Tally(100, 199, upstream=40, stored=39, missing=1, extra=0, repaired=1 if repair else 0, blocks=[150])
    matches = Tally(10, 20, upstream=5, stored=5)
    return VerifyReport(24, repair, [
        ChainVerdict(CHAIN, p.Window(100, 199), differs, repair),
        ChainVerdict(replace(CHAIN, id=25, name="cronos"), p.Window(10, 20), matches, repair),
        ChainVerdict(replace(CHAIN, id=56, name="bsc"), None, None, repair, error="HTTP 503 [bsc]"),
    ])


def test_render_names_each_chain_that_differs_with_its_counts():
    text = render(_report())
    lines = text.splitlines()
    assert lines[0].split() == ["chain", "blocks", "upstream", "stored", "missing", "extra", "verdict"]
    assert lines[1].split() == ["ethereum", "100..199", "40", "39", "1", "0", "DIFFERS"]
    assert lines[2].split() == ["cronos", "10..20", "5", "5", "0", "0", "MATCH"]
    assert "verify: chain ethereum differs: 1 missing, 0 extra in blocks 100..199 (differing blocks: 150)" in text
    assert "verify: chain bsc failed: HTTP 503 [bsc]" in text and "cronos differs" not in text


def test_render_with_repair_shows_what_was_repaired():
    text = render(_report(repair=True))
    assert text.splitlines()[1].split() == ["ethereum", "100..199", "40", "39", "1", "0", "1", "REPAIRED"]
    assert "verify: chain ethereum differed: 1 missing, 0 extra" in text
    assert "repaired 1 rows in 1 blocks, run verify again to confirm" in text


def test_document_shape():
    doc = document(_report())
    assert doc["ok"] is False and doc["hours"] == 24 and doc["repair"] is False
    assert doc["chains"][0] == {
        "chain": "ethereum", "chainId": 1, "verdict": "differs", "fromBlock": 100, "toBlock": 199, "upstream": 40,
        "stored": 39, "missing": 1, "extra": 0, "repaired": 0, "differingBlocks": [150], "error": None}
    assert doc["chains"][2]["verdict"] == "failed" and doc["chains"][2]["missing"] is None


def test_only_a_report_where_every_chain_matches_is_ok():
    report = _report()
    assert not report.ok
    assert VerifyReport(24, False, report.chains[1:2]).ok
    assert not VerifyReport(24, True, report.chains[:1]).ok  # repaired: the next run confirms
