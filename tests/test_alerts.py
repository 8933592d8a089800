"""Alert evaluation with plain numbers: boundaries, fire once, resolve once, re-fire, removed chains."""

from __future__ import annotations

from dataclasses import replace

import pytest

from transfer_daemon.config import parse_config
from transfer_daemon.daemon.alerts import ALERT_NAMES, AlertEvaluator, ChainFacts, Thresholds

T = Thresholds(lag_s=300, errors_per_min=5)
ETH = ChainFacts("ethereum", 1, lag_s=10.0, worker_state="RUNNING", running_since=0.0)
CRO = ChainFacts("cronos", 25, lag_s=10.0, worker_state="RUNNING", running_since=0.0)


def _states(changes) -> list[tuple[str, str, str]]:
    return [(c.name, c.chain, c.state) for c in changes]


def test_a_healthy_chain_raises_nothing() -> None:
    evaluator = AlertEvaluator(T)
    assert evaluator.evaluate(1000.0, [ETH, CRO]) == []
    assert evaluator.firing() == []


@pytest.mark.parametrize(("lag", "fires"), [(299.0, False), (300.0, False), (300.5, True), (301.0, True)])
def test_ingest_lag_fires_only_above_the_threshold(lag: float, fires: bool) -> None:
    changes = AlertEvaluator(T).evaluate(1000.0, [replace(ETH, lag_s=lag)])
    assert _states(changes) == ([("IngestLag", "ethereum", "firing")] if fires else [])


@pytest.mark.parametrize(("errors", "fires"), [(4, False), (5, False), (6, True)])
def test_ingest_errors_fire_only_above_the_threshold(errors: int, fires: bool) -> None:
    changes = AlertEvaluator(T).evaluate(1000.0, [replace(ETH, errors_last_min=errors)])
    assert _states(changes) == ([("IngestErrors", "ethereum", "firing")] if fires else [])


def test_a_zero_error_threshold_fires_on_the_first_failure() -> None:
    evaluator = AlertEvaluator(Thresholds(lag_s=300, errors_per_min=0))
    assert evaluator.evaluate(1.0, [ETH]) == []
    (change,) = evaluator.evaluate(2.0, [replace(ETH, errors_last_min=1)])
    assert (change.name, change.value, change.threshold) == ("IngestErrors", 1, 0)


def test_fires_once_however_often_it_is_evaluated_then_resolves_once() -> None:
    evaluator = AlertEvaluator(T)
    (fired,) = evaluator.evaluate(100.0, [replace(ETH, lag_s=400.0)])
    assert (fired.state, fired.value, fired.threshold, fired.starts_at, fired.ends_at) == ("firing", 400.0, 300,
                                                                                         100.0, None)
    assert "ethereum ingest lag 400 s exceeds 300 s" == fired.summary
    for step in range(1, 20):
        assert evaluator.evaluate(100.0 + 15 * step, [replace(ETH, lag_s=400.0 + 15 * step)]) == []
    (resolved,) = evaluator.evaluate(500.0, [replace(ETH, lag_s=300.0)])
    assert (resolved.state, resolved.value, resolved.starts_at, resolved.ends_at) == ("resolved", 300.0, 100.0, 500.0)
    assert resolved.summary == "ethereum ingest lag 300 s is within 300 s"
    assert evaluator.evaluate(515.0, [replace(ETH, lag_s=12.0)]) == []
    assert evaluator.firing() == []


def test_fires_again_after_a_resolve_as_a_new_episode() -> None:
    evaluator = AlertEvaluator(T)
    evaluator.evaluate(100.0, [replace(ETH, errors_last_min=9)])
    evaluator.evaluate(115.0, [ETH])
    (again,) = evaluator.evaluate(130.0, [replace(ETH, errors_last_min=7)])
    assert (again.name, again.state, again.starts_at, again.value) == ("IngestErrors", "firing", 130.0, 7)


def test_a_chain_just_started_and_never_synced_does_not_fire() -> None:
    evaluator = AlertEvaluator(T)
    never = replace(ETH, lag_s=None, running_since=1000.0)
    assert evaluator.evaluate(1000.0, [never]) == []
    assert evaluator.evaluate(1300.0, [never]) == []  # exactly the threshold: not above it
    (fired,) = evaluator.evaluate(1301.0, [never])
    assert (fired.name, fired.value, fired.threshold) == ("IngestLag", None, 300)
    assert "completed no sync 301 s after its worker started" in fired.summary
    (resolved,) = evaluator.evaluate(1316.0, [replace(never, lag_s=2.0)])
    assert (resolved.state, resolved.value, resolved.ends_at) == ("resolved", 2.0, 1316.0)


def test_a_never_synced_chain_whose_worker_never_started_waits_for_the_worker() -> None:
    evaluator = AlertEvaluator(T)
    assert evaluator.evaluate(10_000.0, [replace(ETH, lag_s=None, running_since=None)]) == []


def test_worker_fatal_follows_the_child_state() -> None:
    evaluator = AlertEvaluator(T)
    assert evaluator.evaluate(1.0, [replace(ETH, worker_state="BACKOFF")]) == []
    assert evaluator.evaluate(2.0, [replace(ETH, worker_state="unknown")]) == []
    (fired,) = evaluator.evaluate(3.0, [replace(ETH, worker_state="FATAL")])
    assert (fired.name, fired.value, fired.severity) == ("WorkerFatal", "FATAL", "critical")
    assert evaluator.evaluate(4.0, [replace(ETH, worker_state="FATAL")]) == []
    (resolved,) = evaluator.evaluate(5.0, [replace(ETH, worker_state="STARTING")])
    assert (resolved.state, resolved.value, resolved.summary) == ("resolved", "STARTING",
                                                                  "worker[ethereum] is STARTING")


@pytest.mark.parametrize(("attribute", "name"), [("halted", "ChainHalted"), ("auth_failed", "UpstreamAuth"),
                                                 ("drift", "Drift")])
def test_flag_alerts_fire_and_resolve_once(attribute: str, name: str) -> None:
    evaluator = AlertEvaluator(T)
    raised = replace(ETH, **{attribute: True})
    (fired,) = evaluator.evaluate(1.0, [raised])
    assert (fired.name, fired.chain, fired.chain_id, fired.value, fired.threshold) == (name, "ethereum", 1, True, None)
    assert evaluator.evaluate(2.0, [raised]) == []
    (resolved,) = evaluator.evaluate(3.0, [ETH])
    assert (resolved.name, resolved.state, resolved.starts_at, resolved.ends_at) == (name, "resolved", 1.0, 3.0)
    assert evaluator.evaluate(4.0, [ETH]) == []


def test_chains_are_independent_and_changes_come_in_a_stable_order() -> None:
    evaluator = AlertEvaluator(T)
    broken = dict(lag_s=999.0, errors_last_min=50, worker_state="FATAL", halted=True, auth_failed=True, drift=True)
    changes = evaluator.evaluate(1.0, [replace(ETH, **broken), replace(CRO, errors_last_min=6)])
    assert _states(changes) == [*((n, "ethereum", "firing") for n in ALERT_NAMES),
                                ("IngestErrors", "cronos", "firing")]
    assert _states(evaluator.evaluate(2.0, [ETH, replace(CRO, errors_last_min=6)])) == [
        (n, "ethereum", "resolved") for n in ALERT_NAMES]
    assert _states(evaluator.firing()) == [("IngestErrors", "cronos", "firing")]


def test_a_chain_removed_from_the_config_resolves_its_alerts() -> None:
    evaluator = AlertEvaluator(T)
    evaluator.evaluate(1.0, [replace(ETH, drift=True), replace(CRO, lag_s=500.0, errors_last_min=8)])
    changes = evaluator.evaluate(2.0, [replace(ETH, drift=True)])
    assert _states(changes) == [("IngestLag", "cronos", "resolved"), ("IngestErrors", "cronos", "resolved")]
    assert all(c.ends_at == 2.0 and c.starts_at == 1.0 and "no longer configured" in c.summary for c in changes)
    assert evaluator.evaluate(3.0, [replace(ETH, drift=True)]) == []
    assert _states(evaluator.evaluate(4.0, [replace(ETH, drift=True), replace(CRO, lag_s=500.0)])) == [
        ("IngestLag", "cronos", "firing")]


def test_firing_shows_the_latest_value_without_a_new_transition() -> None:
    evaluator = AlertEvaluator(T)
    evaluator.evaluate(1.0, [replace(ETH, lag_s=301.0)])
    assert evaluator.evaluate(16.0, [replace(ETH, lag_s=316.0)]) == []
    (now_firing,) = evaluator.firing()
    assert (now_firing.value, now_firing.starts_at, now_firing.state) == (316.0, 1.0, "firing")
    assert "316 s" in now_firing.summary


def test_new_thresholds_keep_the_open_episodes() -> None:
    evaluator = AlertEvaluator(T)
    evaluator.evaluate(1.0, [replace(ETH, lag_s=400.0)])
    evaluator.thresholds = Thresholds(lag_s=350, errors_per_min=5)
    assert evaluator.evaluate(2.0, [replace(ETH, lag_s=400.0)]) == []
    evaluator.thresholds = Thresholds(lag_s=600, errors_per_min=5)
    (resolved,) = evaluator.evaluate(3.0, [replace(ETH, lag_s=400.0)])
    assert (resolved.state, resolved.threshold) == ("resolved", 600)


def test_thresholds_come_from_the_alerts_section() -> None:
    chain = {"id": 1, "name": "ethereum", "kind": "rpc_logs", "rpc_url": "http://127.0.0.1:1",
             "contracts": ["0xdac17f958d2ee523a2206206994597c13d831ec7"]}
    config = parse_config({"alerts": {"lag_threshold_s": 120, "errors_per_min": 2}, "chains": [chain]}, {})
    assert Thresholds.from_config(config.alerts) == Thresholds(lag_s=120, errors_per_min=2)
