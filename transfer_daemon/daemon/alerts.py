"""Alert evaluation: per-chain facts and `now` in, fire and resolve transitions out; no I/O, no clock.

Each (alert, chain) pair is an episode: one `firing` transition when its condition starts, one
`resolved` transition when it ends, nothing in between however often it is evaluated; after a
resolve the next episode fires again. A chain missing from the facts (removed from the config)
has its firing alerts resolved, so none stays open forever.

| alert          | fires while                                                                 |
|----------------|-----------------------------------------------------------------------------|
| `IngestLag`    | lag > lag_threshold_s; or no completed sync yet and the worker started more |
|                | than lag_threshold_s ago (a chain that has just started is not lagging)     |
| `IngestErrors` | failed jobs in the last minute > errors_per_min                             |
| `WorkerFatal`  | the worker's child state is FATAL (the supervisor gave up restarting it)    |
| `ChainHalted`  | ingest is halted by a reorg deeper than max_reorg_depth                     |
| `UpstreamAuth` | the upstream refused the API key or the daily call cap is reached           |
| `Drift`        | verify found the store differs from the upstream                            |
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Literal

from transfer_daemon.config import AlertsConfig

ALERT_NAMES = ("IngestLag", "IngestErrors", "WorkerFatal", "ChainHalted", "UpstreamAuth", "Drift")
SEVERITY = {"IngestLag": "warning", "IngestErrors": "warning", "WorkerFatal": "critical",
            "ChainHalted": "critical", "UpstreamAuth": "critical", "Drift": "warning"}

Value = float | int | str | bool | None


@dataclass(frozen=True)
class ChainFacts:
    """What the evaluation knows of one configured chain at one instant.

    lag_s: `ingestLagSeconds` as the freshness contract defines it (None before the first
    completed sync). errors_last_min: failed jobs of any kind in the last 60 s. worker_state: the
    supervisor's child state name ("RUNNING", "FATAL", …, "unknown"). running_since: when this
    supervisor first started the chain's worker (None: not started); restarts do not move it, so a
    worker that crash-loops before its first sync still raises IngestLag. halted, auth_failed,
    drift: the chain's standing halted / refused-key-or-cap / verify-difference flags.
    """

    chain: str
    chain_id: int
    lag_s: float | None = None
    errors_last_min: int = 0
    worker_state: str = "unknown"
    running_since: float | None = None
    halted: bool = False
    auth_failed: bool = False
    drift: bool = False


@dataclass(frozen=True)
class AlertTransition:
    """One alert episode starting (`firing`, ends_at None) or ending (`resolved`); unix seconds."""

    name: str
    chain: str
    chain_id: int
    state: Literal["firing", "resolved"]
    value: Value
    threshold: float | int | None
    starts_at: float
    ends_at: float | None
    summary: str

    @property
    def severity(self) -> str:
        return SEVERITY[self.name]


@dataclass(frozen=True)
class Thresholds:
    lag_s: float = 300
    errors_per_min: int = 5

    @classmethod
    def from_config(cls, alerts: AlertsConfig) -> Thresholds:
        return cls(lag_s=alerts.lag_threshold_s, errors_per_min=alerts.errors_per_min)


@dataclass(frozen=True)
class _Reading:
    active: bool
    value: Value
    threshold: float | int | None
    summary: str  # says what is wrong when active, what recovered when not


def _ingest_lag(f: ChainFacts, t: Thresholds, now: float) -> _Reading:
    if f.lag_s is not None:
        return _Reading(f.lag_s > t.lag_s, f.lag_s, t.lag_s,
                        f"{f.chain} ingest lag {f.lag_s:.0f} s "
                        + ("exceeds" if f.lag_s > t.lag_s else "is within") + f" {t.lag_s:.0f} s")
    waited = None if f.running_since is None else now - f.running_since
    if waited is not None and waited > t.lag_s:
        return _Reading(True, None, t.lag_s,
                        f"{f.chain} has completed no sync {waited:.0f} s after its worker started "
                        f"(threshold {t.lag_s:.0f} s)")
    return _Reading(False, None, t.lag_s, f"{f.chain} has not completed a sync yet")


def _ingest_errors(f: ChainFacts, t: Thresholds, now: float) -> _Reading:
    active = f.errors_last_min > t.errors_per_min
    return _Reading(active, f.errors_last_min, t.errors_per_min,
                    f"{f.chain} had {f.errors_last_min} failed jobs in the last minute "
                    + ("(more than" if active else "(at most") + f" {t.errors_per_min})")


def _worker_fatal(f: ChainFacts, t: Thresholds, now: float) -> _Reading:
    if f.worker_state == "FATAL":
        return _Reading(True, f.worker_state, None,
                        f"worker[{f.chain}] is FATAL: the supervisor gave up restarting it after repeated exits")
    return _Reading(False, f.worker_state, None, f"worker[{f.chain}] is {f.worker_state}")


def _flag(attribute: str, active_text: str, clear_text: str) -> Callable[[ChainFacts, Thresholds, float], _Reading]:
    def check(f: ChainFacts, t: Thresholds, now: float) -> _Reading:
        active = bool(getattr(f, attribute))
        return _Reading(active, active, None, (active_text if active else clear_text).format(chain=f.chain))

    return check


_CHECKS: dict[str, Callable[[ChainFacts, Thresholds, float], _Reading]] = {
    "IngestLag": _ingest_lag,
    "IngestErrors": _ingest_errors,
    "WorkerFatal": _worker_fatal,
    "ChainHalted": _flag("halted", "{chain} ingest is halted by a reorg deeper than max_reorg_depth; check the "
                         "chain, then run `transfer-daemon resume --chain {chain}`",
                         "{chain} ingest is no longer halted"),
    "UpstreamAuth": _flag("auth_failed", "{chain} upstream refused the API key or the daily call cap is reached",
                          "{chain} upstream accepts calls again"),
    "Drift": _flag("drift", "{chain} verify found the store differs from the upstream",
                   "{chain} verify found no difference from the upstream"),
}


class AlertEvaluator:
    """Remembers which (alert, chain) pairs are firing and since when; `evaluate` reports changes.

    Keep one per supervisor for its whole life; on a config reload assign `thresholds` anew
    rather than building a new evaluator, or every firing alert would fire a second time.
    """

    def __init__(self, thresholds: Thresholds | None = None) -> None:
        self.thresholds = thresholds or Thresholds()
        self._firing: dict[tuple[str, str], AlertTransition] = {}

    def evaluate(self, now: float, facts: Iterable[ChainFacts]) -> list[AlertTransition]:
        """Transitions since the previous call, chains in the given order, alerts in ALERT_NAMES order.

        `facts` must cover every configured chain: a chain left out counts as removed and its alerts
        resolve. When the facts cannot be read, skip the call instead of passing fewer.
        """
        changes: list[AlertTransition] = []
        seen: set[tuple[str, str]] = set()
        for fact in facts:
            for name, check in _CHECKS.items():
                seen.add((name, fact.chain))
                change = self._apply(name, fact, check(fact, self.thresholds, now), now)
                if change is not None:
                    changes.append(change)
        for key in [key for key in self._firing if key not in seen]:
            gone = self._firing.pop(key)
            changes.append(replace(gone, state="resolved", ends_at=now,
                                   summary=f"{gone.chain} is no longer configured; {gone.name} resolved"))
        return changes

    def firing(self) -> list[AlertTransition]:
        """What is firing now, with the latest value and summary (for metrics and status)."""
        return list(self._firing.values())

    def _apply(self, name: str, fact: ChainFacts, reading: _Reading, now: float) -> AlertTransition | None:
        key = (name, fact.chain)
        current = self._firing.get(key)
        if reading.active and current is None:
            self._firing[key] = AlertTransition(name, fact.chain, fact.chain_id, "firing", reading.value,
                                                reading.threshold, now, None, reading.summary)
            return self._firing[key]
        if reading.active:
            self._firing[key] = replace(current, value=reading.value, threshold=reading.threshold,
                                        summary=reading.summary)
            return None
        if current is not None:
            del self._firing[key]
            return replace(current, state="resolved", value=reading.value, threshold=reading.threshold,
                           ends_at=now, summary=reading.summary)
        return None
