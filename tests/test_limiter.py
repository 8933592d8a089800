"""The shared token bucket: exact GCRA arithmetic, and three processes never beat the limit."""

from __future__ import annotations

import multiprocessing
import time

import pytest

from transfer_daemon.upstream.limiter import MAX_QUEUE_S, Limiter, LimiterBusy, reserve


class FakeTime:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_reserve_lets_a_burst_through_then_spaces_calls():
    tat, waits = 0.0, []
    for _ in range(5):
        tat, wait = reserve(tat, 100.0, 0.5, 2)
        waits.append(wait)
    assert waits == [0.0, 0.0, 0.5, 1.0, 1.5]


def test_reserve_refills_after_idle_and_ignores_a_clock_step_back():
    tat, _ = reserve(0.0, 100.0, 1.0, 1)
    assert reserve(tat, 105.0, 1.0, 1) == (106.0, 0.0)
    assert reserve(100.0 + MAX_QUEUE_S + 1, 100.0, 1.0, 1) == (101.0, 0.0)


def test_acquire_sleeps_and_reports_the_wait(tmp_path):
    fake = FakeTime()
    limiter = Limiter(tmp_path, "ETHERSCAN_API_KEY", 4.0, 1, clock=fake.clock, sleep=fake.sleep)
    waits = [limiter.acquire() for _ in range(4)]
    assert waits == [0.0, 0.25, 0.25, 0.25] and fake.slept == [0.25, 0.25, 0.25]


def test_two_limiters_on_one_key_share_the_bucket_and_other_keys_do_not(tmp_path):
    fake = FakeTime()
    first = Limiter(tmp_path, "K", 2.0, 1, clock=fake.clock, sleep=lambda s: None)
    second = Limiter(tmp_path, "K", 2.0, 1, clock=fake.clock, sleep=lambda s: None)
    other = Limiter(tmp_path, "https://evm.cronos.org", 2.0, 1, clock=fake.clock, sleep=lambda s: None)
    assert first.acquire() == 0.0
    assert second.acquire() == 0.5
    assert other.acquire() == 0.0
    assert "cronos" not in first.path.name and first.path != other.path


def test_invalid_rate_is_refused(tmp_path):
    with pytest.raises(ValueError):
        Limiter(tmp_path, "K", 0, 1)


RATE, BURST, SECONDS = 5.0, 2, 10.0


def _hammer(directory: str, results, deadline: float) -> None:
    limiter = Limiter(directory, "SHARED_KEY", RATE, BURST)
    stamps = []
    while time.time() < deadline:
        limiter.acquire()
        stamps.append(time.time())
    results.put(stamps)


@pytest.mark.slow
def test_three_processes_never_exceed_the_limit_in_any_second(tmp_path):
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    deadline = time.time() + SECONDS
    workers = [context.Process(target=_hammer, args=(str(tmp_path), results, deadline)) for _ in range(3)]
    for worker in workers:
        worker.start()
    per_process = [results.get(timeout=SECONDS + 30) for _ in workers]
    for worker in workers:
        worker.join(timeout=10)
    stamps = sorted(s for stamps in per_process for s in stamps)
    busiest, j = 0, 0
    for i, start in enumerate(stamps):
        while j < len(stamps) and stamps[j] < start + 1.0:
            j += 1
        busiest = max(busiest, j - i)
    assert busiest <= RATE + BURST, busiest
    # The limit is also used, not just respected: all three processes got their share.
    assert len(stamps) >= RATE * SECONDS * 0.9 and all(len(s) >= RATE * SECONDS / 6 for s in per_process)


def test_a_bounded_caller_takes_no_slot_it_would_wait_too_long_for(tmp_path):
    fake = FakeTime()
    limiter = Limiter(tmp_path, "K", 1.0, 1, clock=fake.clock, sleep=lambda s: None)
    assert limiter.acquire() == 0.0
    with limiter.waiting_at_most(0.5), pytest.raises(LimiterBusy):
        limiter.acquire()  # the next slot is 1 s away
    fake.now += 0.6
    with limiter.waiting_at_most(0.5):
        assert limiter.acquire() == pytest.approx(0.4)  # the refused call left the slot free
    assert limiter.acquire() == pytest.approx(1.4)  # outside the block: unbounded again


def test_a_bounded_block_spends_one_budget_over_all_its_calls(tmp_path):
    fake = FakeTime()
    limiter = Limiter(tmp_path, "K", 4.0, 1, clock=fake.clock, sleep=fake.sleep)
    with limiter.waiting_at_most(0.6):
        waits = [limiter.acquire() for _ in range(3)]  # 0, 0.25, 0.25: 0.1 s of the budget left
        with pytest.raises(LimiterBusy):
            limiter.acquire()
    assert waits == [0.0, 0.25, 0.25]


def test_budgets_are_per_thread(tmp_path):
    import threading

    fake = FakeTime()
    limiter = Limiter(tmp_path, "K", 1.0, 1, clock=fake.clock, sleep=lambda s: None)
    limiter.acquire()
    waits = []
    with limiter.waiting_at_most(0.0):
        other = threading.Thread(target=lambda: waits.append(limiter.acquire()))  # no budget of its own
        other.start()
        other.join()
        with pytest.raises(LimiterBusy):
            limiter.acquire()
    assert waits == [1.0]
