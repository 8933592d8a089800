"""The soak run's results and verdict: pure records, the store-vs-truth comparison, the checks and
the printed report. No processes, no clock: scripts/soak.py collects, this module judges (and
tests/test_soak_report.py tests the judging).

Times are seconds since the start of the chaos period, on the soak's monotonic clock.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

#: Fields compared between the store and the simulator's truth (the key plus the values that
#: the upstream kinds all carry; gas fields differ between explorer and JSON-RPC by design).
KEY_FIELDS = ("hash", "logIndex", "contractAddress")
VALUE_FIELDS = ("blockNumber", "timeStamp", "from", "to", "value", "blockHash")

RATE_LIMIT_TOLERANCE = 0.01  # rate-limit answers the daemon caused, per upstream request
RUNNING_WITHIN_S = 30.0  # kill -9 -> the supervisor's state file shows a new RUNNING child
INGEST_WITHIN_S = 120.0  # kill (or the outage's end, if later) -> the next successful ingest
API_ANSWERS_WITHIN_S = 60.0  # kill -9 of the API -> the next 200
LAG_RECOVERY_WITHIN_S = 180.0  # the outage's end -> every chain's lag <= stale_after_s again
FINAL_LAG_MAX_S = 60  # every chain's lag at the end of the settle period


@dataclass(frozen=True, slots=True)
class Window:
    start: float
    end: float

    def contains(self, at: float) -> bool:
        return self.start <= at <= self.end


@dataclass(frozen=True, slots=True)
class ApiAnswer:
    """One request the soak made to the daemon's API; status None = no answer (refused, timed out)."""

    at: float
    kind: str
    status: int | None
    retry_after: bool = False
    hostile: bool = False


@dataclass(frozen=True, slots=True)
class KillRecord:
    """kill -9 of one child; the recovery figures are None when it did not happen before the deadline."""

    target: str  # "worker[ethereum]" | "api"
    at: float
    old_pid: int
    running_after_s: float | None  # until the state file shows the child RUNNING with a new pid
    served_after_s: float | None  # worker: until the next successful ingest; api: until the next 200
    served_from: float  # when the serving clock starts: the kill, or the outage's end if that is later


@dataclass(frozen=True, slots=True)
class ChainComparison:
    chain_id: int
    to_block: int
    truth_rows: int
    stored_rows: int
    missing: int
    extra: int
    duplicates: int
    mismatched: int
    examples: tuple[str, ...] = ()  # a few missing/extra/mismatched rows, to start the investigation from


    @property
    def equal(self) -> bool:
        return self.truth_rows > 0 and not (self.missing or self.extra or self.duplicates or self.mismatched)


@dataclass(frozen=True, slots=True)
class QuarantineComparison:
    """The rows the simulator poisoned (never in the truth) against the rows the store quarantined,
    by (block, transaction hash), up to `to_block`. A poisoned row of a block a reorg replaced was
    served before the reorg: its quarantine stays, counted as `orphaned`."""

    chain_id: int
    to_block: int
    poisoned: int
    quarantined: int  # distinct rows of blocks the poisoned rows are in now
    missing: int  # poisoned, never quarantined
    unexpected: int  # quarantined, but not a poisoned row of this block or of a block reorged since
    duplicates: int
    orphaned: int

    @property
    def equal(self) -> bool:
        return self.quarantined == self.poisoned and not (self.missing or self.unexpected or self.duplicates)


@dataclass(frozen=True, slots=True)
class PgRestart:
    how: str  # "pg_ctl restart -m fast" | "kill -9 postmaster" | the --restart-server-cmd
    window: Window  # from the injection to the first 200 of /api/cache-health after it
    ingest_after_s: float | None  # from the injection to a successful ingest on every chain


@dataclass
class SoakResults:
    minutes: float
    stale_after_s: int
    answers: list[ApiAnswer] = field(default_factory=list)
    kills: list[KillRecord] = field(default_factory=list)
    pg_restarts: list[PgRestart] = field(default_factory=list)
    pg_restart_skipped: str = ""  # why no Postgres restart was injected ("" when one was)
    outage: Window | None = None
    stale_seen: dict[int, bool] = field(default_factory=dict)  # per chain: stale=true on /api/transfers in the outage
    max_lag_outage: dict[int, int] = field(default_factory=dict)
    max_lag_after: dict[int, int] = field(default_factory=dict)  # once recovered, until the end
    lag_recovered_after_s: float | None = None  # outage end -> every chain's lag <= stale_after_s
    final_lag: dict[int, int | None] = field(default_factory=dict)
    comparisons: list[ChainComparison] = field(default_factory=list)
    quarantines: list[QuarantineComparison] = field(default_factory=list)
    upstream_requests: int = 0
    rate_limited: int = 0  # the simulator's limiter refusals (injected 429 faults are counted apart)
    faults_injected: int = 0
    reorgs: int = 0
    exit_code: int | None = None
    leftovers: list[int] = field(default_factory=list)
    outputs_searched: int = 0  # outputs grepped for the explorer key: files, status --json, /_sim/stats
    secret_found_in: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    passed: bool
    figure: str


def _key(item: dict) -> tuple:
    return (item["chainId"], item["hash"], item["logIndex"], item["contractAddress"])


def _describe(what: str, item: dict) -> str:
    return (f"{what} block {item['blockNumber']} tx {item['hash'][:12]} logIndex {item['logIndex']} "
            f"value {item['value']}")


def compare(chain_id: int, to_block: int, truth: Iterable[dict], stored: Iterable[dict]) -> ChainComparison:
    """Store vs truth by key (chain, tx hash, log index, contract); values compared on shared keys."""
    truth_by_key = {_key(item): item for item in truth}
    stored_items = list(stored)
    counts = Counter(_key(item) for item in stored_items)
    stored_by_key = {_key(item): item for item in stored_items}
    missing = [truth_by_key[k] for k in truth_by_key.keys() - stored_by_key.keys()]
    extra = [stored_by_key[k] for k in stored_by_key.keys() - truth_by_key.keys()]
    mismatched = [item for key, item in stored_by_key.items()
                  if key in truth_by_key and any(item[f] != truth_by_key[key][f] for f in VALUE_FIELDS)]
    examples = [_describe(what, item) for what, items in (("missing", missing), ("extra", extra),
                                                           ("mismatched", mismatched)) for item in items[:3]]
    return ChainComparison(
        chain_id, to_block, len(truth_by_key), len(stored_items), missing=len(missing), extra=len(extra),
        duplicates=sum(n - 1 for n in counts.values() if n > 1), mismatched=len(mismatched),
        examples=tuple(examples))


def quarantined_row(detail: dict) -> tuple[int | None, str | None, str | None]:
    """(block, transaction hash, block hash) of a quarantine event's row: `detail.raw`, or its JSON
    text `detail.raw_json` when the row holds what jsonb cannot (NUL)."""
    raw = detail["raw"] if "raw" in detail else json.loads(detail["raw_json"])
    if not isinstance(raw, dict):
        return detail.get("block"), None, None
    return detail.get("block"), raw.get("hash") or raw.get("transactionHash"), raw.get("blockHash")


def compare_quarantine(chain_id: int, to_block: int, poisoned: Iterable[dict],
                       quarantined: Iterable[tuple[int | None, str | None, str | None]]) -> QuarantineComparison:
    """/_sim/poisoned entries against quarantined rows (`quarantined_row`), up to `to_block`."""
    entries = [entry for entry in poisoned if entry["blockNumber"] <= to_block]
    expected = {(entry["blockNumber"], entry["hash"]) for entry in entries}
    canonical = {entry["blockNumber"]: entry["blockHash"] for entry in entries}
    rows = [row for row in quarantined if row[0] is None or row[0] <= to_block]
    counts = Counter((block, tx) for block, tx, _ in rows)
    stray = [row for row in rows if (row[0], row[1]) not in expected]
    orphaned = {(block, tx) for block, tx, block_hash in stray
                if block in canonical and block_hash is not None and block_hash != canonical[block]}
    return QuarantineComparison(
        chain_id, to_block, poisoned=len(expected), quarantined=len(expected & counts.keys()),
        missing=len(expected - counts.keys()), unexpected=len({(row[0], row[1]) for row in stray} - orphaned),
        duplicates=sum(n - 1 for n in counts.values() if n > 1), orphaned=len(orphaned))


def _inside(at: float, windows: Sequence[Window]) -> bool:
    return any(w.contains(at) for w in windows)


def api_checks(results: SoakResults) -> list[Check]:
    answers = results.answers
    classes = Counter("none" if a.status is None else f"{a.status // 100}xx" for a in answers)
    by_class = " ".join(f"{name}={classes.get(name, 0)}" for name in ("2xx", "4xx", "5xx", "none"))
    pg_windows = [restart.window for restart in results.pg_restarts]
    allowed = [a for a in answers if a.status == 503 and a.retry_after and _inside(a.at, pg_windows)]
    breaches = [a for a in answers if a.status is not None and a.status >= 500 and a not in allowed]
    api_down = [Window(k.at, k.at + (k.served_after_s or 0.0)) for k in results.kills if k.target == "api"]
    silent = [a for a in answers if a.status is None and not _inside(a.at, [*api_down, *pg_windows])]
    hostile = [a for a in answers if a.hostile]
    wrong = [a for a in hostile if a.status != 400]
    wrong_figure = ", ".join(f"{a.kind}->{a.status}" for a in wrong[:5])
    return [
        Check("api: 0 x 5xx (503+Retry-After allowed only in the Postgres restart window)", not breaches,
              f"{len(answers)} answers: {by_class}; 503 in restart window {len(allowed)}; breaching 5xx "
              f"{len(breaches)}" + (f" (first at t={breaches[0].at:.0f}s: {breaches[0].status} {breaches[0].kind})"
                                    if breaches else "")),
        Check("api: every request answered outside the API/Postgres restart windows", not silent,
              f"{len(silent)} unanswered" + (f" (first at t={silent[0].at:.0f}s {silent[0].kind})" if silent else "")),
        Check("api: hostile inputs answered 400", bool(hostile) and not wrong,
              f"{len(hostile) - len(wrong)}/{len(hostile)} were 400" + (f"; {wrong_figure}" if wrong else "")),
    ]


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f}s"


def kill_checks(results: SoakResults) -> list[Check]:
    checks = []
    for kill in results.kills:
        limit = API_ANSWERS_WITHIN_S if kill.target == "api" else INGEST_WITHIN_S
        served_late = kill.served_after_s is None or kill.served_after_s - (kill.served_from - kill.at) > limit
        running_ok = kill.running_after_s is not None and kill.running_after_s <= RUNNING_WITHIN_S
        what = "next 200" if kill.target == "api" else "next ingest"
        checks.append(Check(
            f"kill -9 {kill.target} (pid {kill.old_pid}) at t={kill.at:.0f}s: restarted and serving",
            running_ok and not served_late,
            f"RUNNING again after {_seconds(kill.running_after_s)} (limit {RUNNING_WITHIN_S:.0f}s); "
            f"{what} after {_seconds(kill.served_after_s)}"
            + (f" = {_seconds(kill.served_after_s - (kill.served_from - kill.at))} after the outage ended at"
               f" t={kill.served_from:.0f}s" if kill.served_from > kill.at and kill.served_after_s is not None else "")
            + f" (limit {limit:.0f}s)"))
    if not any(k.target.startswith("worker[") for k in results.kills):
        checks.append(Check("kill -9 of workers injected", False, "no worker was killed"))
    if not any(k.target == "api" for k in results.kills):
        checks.append(Check("kill -9 of the API injected", False, "the API was not killed"))
    return checks


def postgres_checks(results: SoakResults) -> list[Check]:
    if results.pg_restart_skipped:
        return [Check("postgres restart", True, f"skipped: {results.pg_restart_skipped}")]
    if not results.pg_restarts:
        return [Check("postgres restart", False, "no restart was injected")]
    checks = []
    for restart in results.pg_restarts:
        window, ingest = restart.window, restart.ingest_after_s
        checks.append(Check(
            f"postgres {restart.how} at t={window.start:.0f}s: API back and every chain ingesting again",
            ingest is not None and ingest <= INGEST_WITHIN_S,
            f"API 200 again after {window.end - window.start:.1f}s, every chain ingested after {_seconds(ingest)} "
            f"(limit {INGEST_WITHIN_S:.0f}s)"))
    return checks


def _lags(values: dict[int, int] | dict[int, int | None]) -> str:
    shown = [f"{chain}: {'n/a' if lag is None else f'{lag}s'}" for chain, lag in sorted(values.items())]
    return ", ".join(shown) or "none"


def freshness_checks(results: SoakResults) -> list[Check]:
    outage = results.outage
    if outage is None:
        return [Check("upstream outage injected", False, "no outage")]
    stale_ok = bool(results.stale_seen) and all(results.stale_seen.values())
    recovered = results.lag_recovered_after_s is not None and results.lag_recovered_after_s <= LAG_RECOVERY_WITHIN_S
    final_ok = bool(results.final_lag) and all(
        lag is not None and lag <= FINAL_LAG_MAX_S for lag in results.final_lag.values())
    seen = ", ".join(f"{chain}: {flag}" for chain, flag in sorted(results.stale_seen.items()))
    return [
        Check(f"stale=true on /api/transfers during the outage (stale_after_s={results.stale_after_s})", stale_ok,
              f"outage t={outage.start:.0f}..{outage.end:.0f}s; per chain {seen or 'none'}"),
        Check("max ingest lag during the outage (figure)", True, _lags(results.max_lag_outage)),
        Check(f"lag back <= stale_after_s after the outage (limit {LAG_RECOVERY_WITHIN_S:.0f}s)", recovered,
              f"after {_seconds(results.lag_recovered_after_s)}; max lag after recovery "
              f"{_lags(results.max_lag_after)}"),
        Check(f"final ingest lag <= {FINAL_LAG_MAX_S}s", final_ok, _lags(results.final_lag)),
    ]


def store_checks(results: SoakResults) -> list[Check]:
    if not results.comparisons:
        return [Check("store == truth", False, "no chain compared")]
    return [Check(f"store == truth for chain {c.chain_id} up to block {c.to_block}", c.equal,
                  f"truth {c.truth_rows}, stored {c.stored_rows}; missing {c.missing}, extra {c.extra}, "
                  f"duplicate {c.duplicates}, mismatched {c.mismatched}"
                  + "".join(f"\n        {example}" for example in c.examples)) for c in results.comparisons]


def quarantine_checks(results: SoakResults) -> list[Check]:
    return [Check(f"quarantined == poisoned rows served for chain {q.chain_id} up to block {q.to_block}", q.equal,
                  f"poisoned {q.poisoned}, quarantined {q.quarantined} (+{q.orphaned} of reorged blocks); "
                  f"missing {q.missing}, unexpected {q.unexpected}, duplicate {q.duplicates}")
            for q in results.quarantines]


def upstream_checks(results: SoakResults) -> list[Check]:
    share = results.rate_limited / results.upstream_requests if results.upstream_requests else 0.0
    return [Check(f"rate-limit answers caused by the daemon <= {RATE_LIMIT_TOLERANCE:.0%} of upstream requests",
                  results.upstream_requests > 0 and share <= RATE_LIMIT_TOLERANCE,
                  f"{results.rate_limited} of {results.upstream_requests} ({share:.2%}); injected faults "
                  f"{results.faults_injected} (not ours); reorgs {results.reorgs}")]


def shutdown_checks(results: SoakResults) -> list[Check]:
    return [Check("clean stop: SIGTERM exit 0, no process left behind",
                  results.exit_code == 0 and not results.leftovers,
                  f"exit {results.exit_code}; leftovers {results.leftovers or 'none'}")]


def secret_checks(results: SoakResults) -> list[Check]:
    return [Check("the explorer key appears in no output of the run",
                  results.outputs_searched > 0 and not results.secret_found_in,
                  f"{results.outputs_searched} outputs searched; found in {results.secret_found_in or 'none'}")]


def evaluate(results: SoakResults) -> list[Check]:
    return [*store_checks(results), *quarantine_checks(results), *api_checks(results), *upstream_checks(results),
            *kill_checks(results), *postgres_checks(results), *freshness_checks(results),
            *shutdown_checks(results), *secret_checks(results)]


def format_report(results: SoakResults, checks: Sequence[Check]) -> str:
    failed = sum(1 for c in checks if not c.passed)
    lines = [f"soak report: {results.minutes:g} min of chaos"]
    lines += [f"{'PASS' if c.passed else 'FAIL'}  {c.name}: {c.figure}" for c in checks]
    lines.append(f"verdict: {'PASS' if not failed else f'FAIL ({failed} of {len(checks)} checks)'}")
    return "\n".join(lines)
