"""The soak run's verdict (scripts/soak_support.py): breach detection from collected results."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from soak_support import (  # noqa: E402  (scripts/ is not a package)
    ApiAnswer,
    ChainComparison,
    KillRecord,
    PgRestart,
    SoakResults,
    Window,
    compare,
    compare_quarantine,
    evaluate,
    format_report,
    quarantined_row,
)


def item(block: int, log_index: int = 0, value: str = "1", tx: str = "") -> dict:
    return {"chainId": 1, "hash": tx or f"0x{block:064x}", "logIndex": log_index, "contractAddress": "0xc",
            "blockNumber": block, "timeStamp": "2024-01-01T00:00:00Z", "from": "0xa", "to": "0xb", "value": value,
            "blockHash": f"0x{block:064x}"}


def passing() -> SoakResults:
    """What a clean run collects: every check passes."""
    return SoakResults(
        minutes=2, stale_after_s=20,
        answers=[ApiAnswer(1.0, "probe", 200), ApiAnswer(2.0, "hostile", 400, hostile=True),
                 ApiAnswer(31.0, "probe", 503, retry_after=True)],
        kills=[KillRecord("worker[ethereum]", 10.0, 100, 2.0, 8.0, 10.0), KillRecord("api", 20.0, 200, 1.5, 3.0, 20.0),
               KillRecord("worker[cronos]", 60.0, 300, 2.0, 50.0, 80.0)],
        pg_restarts=[PgRestart("pg_ctl restart -m fast", Window(30.0, 35.0), 12.0)], outage=Window(45.0, 80.0),
        stale_seen={1: True, 25: True}, max_lag_outage={1: 40, 25: 41}, max_lag_after={1: 9, 25: 7},
        lag_recovered_after_s=30.0, final_lag={1: 3, 25: 4},
        comparisons=[compare(1, 10, [item(1), item(2)], [item(1), item(2)])],
        quarantines=[compare_quarantine(1, 10, [poisoned(4)], [(4, tx(4), block_hash(4))])],
        upstream_requests=1000, rate_limited=3, faults_injected=200, reorgs=4, exit_code=0, outputs_searched=9)


def tx(block: int, fork: int = 0) -> str:
    return f"0x{block * 100 + fork:064x}"


def block_hash(block: int, fork: int = 0) -> str:
    return f"0x{block * 1000 + fork:064x}"


def poisoned(block: int, fork: int = 0) -> dict:
    """A /_sim/poisoned entry."""
    return {"blockNumber": block, "hash": tx(block, fork), "blockHash": block_hash(block, fork)}


def failed(results: SoakResults) -> list[str]:
    return [check.name for check in evaluate(results) if not check.passed]


def test_clean_run_passes_and_report_says_so() -> None:
    results = passing()
    assert failed(results) == []
    report = format_report(results, evaluate(results))
    assert report.splitlines()[-1] == "verdict: PASS"
    assert all(line.startswith(("PASS  ", "soak report", "verdict")) for line in report.splitlines())


def test_compare_counts_missing_extra_duplicate_and_mismatched() -> None:
    truth = [item(1), item(2), item(3), item(4, value="7")]
    stored = [item(1), item(1), item(3), item(4, value="8"), item(9)]
    result = compare(1, 9, truth, stored)
    assert replace(result, examples=()) == ChainComparison(1, 9, truth_rows=4, stored_rows=5, missing=1, extra=1,
                                                           duplicates=1, mismatched=1)
    assert sorted(e.split(" tx")[0] for e in result.examples) == ["extra block 9", "mismatched block 4",
                                                                   "missing block 2"]


def test_same_transaction_different_log_index_are_distinct_keys() -> None:
    truth = [item(5, 0, tx="0xaa"), item(5, 1, tx="0xaa")]
    assert compare(1, 5, truth, truth[:1]).missing == 1
    assert compare(1, 5, truth, truth).equal


def test_store_mismatch_fails_with_figures() -> None:
    results = passing()
    results.comparisons = [compare(1, 10, [item(1), item(2)], [item(1)])]
    assert failed(results) == ["store == truth for chain 1 up to block 10"]
    line = next(line for line in format_report(results, evaluate(results)).splitlines() if "store ==" in line)
    assert line.startswith("FAIL") and "missing 1" in line


def test_an_empty_truth_is_no_proof() -> None:
    results = passing()
    results.comparisons = [compare(1, 10, [], [])]
    assert len(failed(results)) == 1


@pytest.mark.parametrize("answer", [
    ApiAnswer(5.0, "probe", 503, retry_after=True),  # 503 outside the Postgres restart window
    ApiAnswer(31.0, "probe", 503, retry_after=False),  # inside, but without Retry-After
    ApiAnswer(31.0, "probe", 500),  # inside, but not a 503
    ApiAnswer(90.0, "aggregate", 502),
])
def test_5xx_breaches(answer: ApiAnswer) -> None:
    results = passing()
    results.answers.append(answer)
    assert failed(results) == ["api: 0 x 5xx (503+Retry-After allowed only in the Postgres restart window)"]


def test_hostile_input_must_be_400() -> None:
    results = passing()
    results.answers.append(ApiAnswer(3.0, "hostile", 200, hostile=True))
    assert failed(results) == ["api: hostile inputs answered 400"]
    results.answers = [a for a in results.answers if not a.hostile]
    assert failed(results) == ["api: hostile inputs answered 400"]  # none sent: not proven


def test_no_answer_allowed_only_while_the_api_restarts() -> None:
    results = passing()
    results.answers.append(ApiAnswer(21.0, "probe", None))  # api killed at 20, serving again at 23
    assert failed(results) == []
    results.answers.append(ApiAnswer(50.0, "probe", None))
    assert failed(results) == ["api: every request answered outside the API/Postgres restart windows"]


def test_rate_limits_beyond_tolerance_breach() -> None:
    results = passing()
    results.rate_limited = 11
    assert len(failed(results)) == 1 and "rate-limit" in failed(results)[0]


def test_slow_or_missing_recovery_breaches() -> None:
    results = passing()
    results.kills[0] = KillRecord("worker[ethereum]", 10.0, 100, 31.0, 8.0, 10.0)  # RUNNING too late
    results.kills[1] = KillRecord("api", 20.0, 200, 1.5, None, 20.0)  # never answered again
    assert len(failed(results)) == 2


def test_ingest_clock_starts_at_the_outage_end() -> None:
    results = passing()
    # killed at 60 inside the outage that ends at 80: 130 s after the kill is 110 s after the outage
    results.kills[2] = KillRecord("worker[cronos]", 60.0, 300, 2.0, 130.0, 80.0)
    assert failed(results) == []
    results.kills[2] = KillRecord("worker[cronos]", 60.0, 300, 2.0, 130.0, 60.0)
    assert len(failed(results)) == 1


def test_missing_injections_are_breaches() -> None:
    results = passing()
    results.kills = [k for k in results.kills if k.target != "api"]
    results.pg_restarts = []
    results.outage = None
    assert failed(results) == [
        "api: 0 x 5xx (503+Retry-After allowed only in the Postgres restart window)",  # no window: none allowed
        "kill -9 of the API injected", "postgres restart", "upstream outage injected"]


def test_postgres_that_does_not_recover_breaches() -> None:
    results = passing()
    results.pg_restarts.append(PgRestart("kill -9 postmaster", Window(40.0, 41.0), None))
    assert failed(results) == ["postgres kill -9 postmaster at t=40s: API back and every chain ingesting again"]


def test_skipped_postgres_restart_is_reported_not_failed() -> None:
    results = passing()
    results.pg_restarts, results.pg_restart_skipped = [], "--database-url without --restart-server-cmd"
    results.answers = [a for a in results.answers if a.status != 503]
    assert failed(results) == []


def test_freshness_breaches() -> None:
    results = passing()
    results.stale_seen = {1: True, 25: False}
    results.lag_recovered_after_s = None
    results.final_lag = {1: 3, 25: 61}
    assert len(failed(results)) == 3


def test_unclean_stop_breaches() -> None:
    results = passing()
    results.exit_code, results.leftovers = 0, [4242]
    assert len(failed(results)) == 1
    results.exit_code, results.leftovers = None, []
    assert len(failed(results)) == 1


def test_the_key_found_in_any_output_is_a_breach() -> None:
    breach = ["the explorer key appears in no output of the run"]
    assert failed(replace(passing(), secret_found_in=["log/td.log"])) == breach
    assert failed(replace(passing(), outputs_searched=0)) == breach  # nothing searched proves nothing


def test_quarantine_compares_poisoned_rows_once_each_and_forgives_reorged_blocks() -> None:
    entries = [poisoned(4, fork=1), poisoned(8), poisoned(12)]  # block 4 was reorged (fork 1 is canonical)
    rows = [(4, tx(4), block_hash(4)), (4, tx(4, 1), block_hash(4, 1)), (8, tx(8), block_hash(8)),
            (12, tx(12), block_hash(12)), (30, tx(30), block_hash(30))]  # block 30 is past to_block
    result = compare_quarantine(25, 20, entries, rows)
    assert (result.poisoned, result.quarantined, result.orphaned, result.equal) == (3, 3, 1, True)
    missing = compare_quarantine(25, 20, entries, rows[1:3])
    assert (missing.missing, missing.equal) == (1, False)
    twice = compare_quarantine(25, 20, entries, [*rows, rows[2]])
    assert (twice.duplicates, twice.equal) == (1, False)
    valid_row = compare_quarantine(25, 20, entries, [*rows, (9, tx(9), block_hash(9)), (None, None, None)])
    assert (valid_row.unexpected, valid_row.equal) == (2, False)
    results = replace(passing(), quarantines=[valid_row])
    assert failed(results) == ["quarantined == poisoned rows served for chain 25 up to block 20"]


def test_quarantined_row_reads_raw_rows_and_raw_json_with_nul() -> None:
    assert quarantined_row({"block": 5, "raw": {"hash": "0x1", "blockHash": "0x2"}}) == (5, "0x1", "0x2")
    text = '{"transactionHash": "0x3", "blockHash": "0x4", "tokenName": "T\\u0000"}'
    assert quarantined_row({"block": 6, "raw_json": text}) == (6, "0x3", "0x4")
    assert quarantined_row({"raw": ["not", "a", "row"]}) == (None, None, None)
