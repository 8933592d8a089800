"""The per-child restart policy, driven by hand-fed clocks (no processes)."""

from __future__ import annotations

import random

import pytest

from transfer_daemon.daemon.child import Child, ChildSpec, RestartPolicy, State, describe_status

POLICY = RestartPolicy(initial=1.0, maximum=60.0, jitter=0.0, stable_after=60.0, running_after=1.0,
                       max_failures=5, fatal_retry=300.0)


def _spec(fingerprint: str = "a") -> ChildSpec:
    return ChildSpec("worker[ethereum]", target=print, config_fingerprint=fingerprint, chain="ethereum")


def _crash(child: Child, now: float, status: int = 1) -> State:
    assert child.due(now), (child.state, child.next_start_at, now)
    child.spawned(1000, now)
    return child.exited(status, now + 0.1)


def test_new_child_is_due_at_once_and_becomes_running_after_running_after():
    child = Child(_spec(), POLICY)
    assert child.due(0.0)
    child.spawned(42, 10.0)
    assert child.state is State.STARTING and child.pid == 42
    assert not child.tick(10.5) and child.state is State.STARTING
    assert child.tick(11.0) and child.state is State.RUNNING
    assert child.since == 11.0


def test_crash_loop_backs_off_doubling_then_gives_up():
    child = Child(_spec(), POLICY)
    now, delays = 0.0, []
    for _ in range(4):
        assert _crash(child, now) is State.BACKOFF
        delays.append(child.next_start_at - (now + 0.1))
        assert not child.due(child.next_start_at - 0.01)
        now = child.next_start_at
    assert delays == [1.0, 2.0, 4.0, 8.0]
    assert _crash(child, now) is State.FATAL
    assert child.failures == 5 and child.restarts == 5
    assert child.next_start_at == pytest.approx(now + 0.1 + 300.0)
    assert child.last_exit.reason == "exit 1"


def test_fatal_child_is_retried_slowly_and_stays_fatal_while_it_keeps_failing():
    child = Child(_spec(), POLICY)
    now = 0.0
    while child.state is not State.FATAL:
        if child.state is not State.STOPPED:
            now = child.next_start_at
        _crash(child, now)
    retry_at = child.next_start_at
    assert not child.due(retry_at - 1)
    assert _crash(child, retry_at) is State.FATAL
    assert child.next_start_at == pytest.approx(retry_at + 0.1 + 300.0)


def test_stable_run_resets_the_series():
    child = Child(_spec(), POLICY)
    _crash(child, 0.0)
    _crash(child, child.next_start_at)
    assert child.failures == 2
    start = child.next_start_at
    child.spawned(7, start)
    child.tick(start + 1.0)
    child.tick(start + 61.0)
    assert child.failures == 0
    assert child.exited(1, start + 100.0) is State.BACKOFF
    assert child.next_start_at == pytest.approx(start + 100.0 + 1.0)
    assert child.failures == 1


def test_long_run_that_exits_counts_as_stable_even_without_ticks():
    child = Child(_spec(), POLICY)
    for _ in range(4):
        _crash(child, child.next_start_at)
    child.spawned(8, child.next_start_at)
    assert child.exited(1, child.started_at + 61.0) is State.BACKOFF
    assert child.failures == 1


def test_jitter_stays_within_bounds():
    policy = RestartPolicy(initial=1.0, maximum=60.0, jitter=0.1)
    child = Child(_spec(), policy)
    child.backoff.rng = random.Random(3)
    seen = []
    now = 0.0
    for _ in range(3):
        _crash(child, now)
        seen.append(child.next_start_at - (now + 0.1))
        now = child.next_start_at
    for delay, base in zip(seen, [1.0, 2.0, 4.0], strict=True):
        assert base * 0.9 <= delay <= base * 1.1


def test_stop_of_live_child_waits_for_exit_then_kills_after_grace():
    child = Child(_spec(), POLICY)
    child.spawned(9, 0.0)
    assert child.stop(5.0, grace=2.0)
    assert child.state is State.STOPPING and not child.stop(5.5, grace=2.0)
    assert not child.must_kill(6.9)
    assert child.must_kill(7.0)
    assert not child.must_kill(8.0), "SIGKILL is sent once"
    assert child.exited(-9, 7.1) is State.STOPPED
    assert not child.due(100.0)
    assert child.last_exit.reason == "killed by SIGKILL"


def test_stop_of_waiting_child_is_immediate():
    child = Child(_spec(), POLICY)
    _crash(child, 0.0)
    assert child.state is State.BACKOFF
    assert not child.stop(0.5, grace=2.0)
    assert child.state is State.STOPPED and not child.due(10.0)


def test_replacement_starts_at_once_with_a_fresh_series():
    child = Child(_spec("old"), POLICY)
    _crash(child, 0.0)
    child.spawned(10, child.next_start_at)
    assert child.stop(5.0, grace=2.0, replacement=_spec("new"))
    assert child.exited(0, 5.2) is State.STOPPED
    assert child.spec.config_fingerprint == "new"
    assert child.failures == 0 and child.due(5.2)


def test_replacement_of_a_child_in_backoff_needs_no_signal():
    child = Child(_spec("old"), POLICY)
    _crash(child, 0.0)
    assert not child.stop(0.5, grace=2.0, replacement=_spec("new"))
    assert child.spec.config_fingerprint == "new" and child.due(0.5)


def test_heartbeat_expiry_only_for_live_children_not_already_killed():
    child = Child(_spec(), POLICY)
    assert not child.heartbeat_expired(0.0, 100.0, 10.0)
    child.spawned(11, 0.0)
    assert not child.heartbeat_expired(0.0, 10.0, 10.0)
    assert child.heartbeat_expired(0.0, 10.5, 10.0)
    child.kill_reason = "killed by SIGKILL: heartbeat timeout"
    assert not child.heartbeat_expired(0.0, 20.0, 10.0)
    assert child.exited(-9, 20.1) is State.BACKOFF
    assert child.last_exit.reason == "killed by SIGKILL: heartbeat timeout"


def test_snapshot_converts_to_wall_clock():
    child = Child(_spec(), POLICY)
    _crash(child, 10.0, status=-15)
    snap = child.snapshot(wall_offset=1000.0)
    assert snap["state"] == "BACKOFF" and snap["pid"] is None and snap["restarts"] == 1
    assert snap["last_exit"] == {"status": -15, "reason": "killed by SIGTERM", "at": 1010.1}
    assert snap["next_start_at"] == pytest.approx(1011.1)
    assert snap["chain"] == "ethereum"


def test_describe_status():
    assert describe_status(0) == "exit 0"
    assert describe_status(-9) == "killed by SIGKILL"
    assert describe_status(None) == "not started"
