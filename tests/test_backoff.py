"""Backoff schedule (1, 2, 4 … 60 s with jitter), and the HTTP layer's use of it, on injected time."""

from __future__ import annotations

import random

import pytest
import responses
from upstream_fixtures import FakeTime, make_chain, make_http

from transfer_daemon.backoff import Backoff, backoff_delay
from transfer_daemon.errors import UpstreamError
from transfer_daemon.upstream.http import RetryPolicy, check_status, retry_after_seconds

URL = "https://api.etherscan.io/v2/api"


def test_delays_double_from_one_second_to_the_cap():
    assert [backoff_delay(n) for n in range(9)] == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert backoff_delay(10_000) == 60


def test_without_jitter_the_schedule_is_exact():
    backoff = Backoff(jitter=0.0)
    assert [backoff.failed(now=0.0) for _ in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]


def test_jitter_stays_within_its_band_and_is_reproducible_with_a_seeded_rng():
    first = Backoff(jitter=0.25, rng=random.Random(3))
    second = Backoff(jitter=0.25, rng=random.Random(3))
    delays = [first.failed(now=0.0) for _ in range(10)]
    assert delays == [second.failed(now=0.0) for _ in range(10)]
    for delay, base in zip(delays, [1, 2, 4, 8, 16, 32, 60, 60, 60, 60], strict=True):
        assert base * 0.75 <= delay <= base * 1.25
    assert len(set(delays)) == len(delays)  # jitter really spreads retries


def test_a_stable_run_resets_the_series_and_success_resets_it_too():
    backoff = Backoff(jitter=0.0, reset_after=60.0)
    backoff.started(now=0.0)
    assert [backoff.failed(now=1.0), backoff.failed(now=2.0), backoff.failed(now=3.0)] == [1, 2, 4]
    backoff.started(now=10.0)
    assert backoff.failed(now=75.0) == 1  # ran 65 s: stable
    backoff.failed(now=76.0)
    backoff.succeeded()
    assert backoff.failed(now=77.0) == 1


@pytest.mark.parametrize(("header", "seconds"), [("7", 7.0), ("", None), ("soon", None),
                                                 ("Thu, 01 Jan 1970 00:01:40 GMT", 40.0)])
def test_retry_after_header(header, seconds):
    assert retry_after_seconds(header, now=60.0) == seconds


def test_http_retries_follow_the_backoff_schedule_on_the_injected_clock(tmp_path):
    fake = FakeTime()
    chain = make_chain()
    policy = RetryPolicy(max_attempts=8, max_total_s=1_000, jitter=0.0)
    http = make_http(chain, tmp_path, fake, policy)
    with responses.RequestsMock() as rsps:
        for _ in range(8):
            rsps.get(URL, status=503)
        with pytest.raises(UpstreamError, match="gave up .* after 8 attempts"):
            http.call("GET", URL, _ok)
    assert fake.sleeps == [1, 2, 4, 8, 16, 32, 60]
    assert http.stats.requests == {"http_5xx": 8} and http.stats.retries == 7 and http.stats.gave_up == 1


def test_retry_after_longer_than_the_backoff_wins(tmp_path):
    fake = FakeTime()
    http = make_http(make_chain(), tmp_path, fake, RetryPolicy(jitter=0.0))
    with responses.RequestsMock() as rsps:
        rsps.get(URL, status=429, headers={"Retry-After": "30"})
        rsps.get(URL, status=429, headers={"Retry-After": "1"})
        rsps.get(URL, json={"ok": True})
        assert http.call("GET", URL, _ok) == {"ok": True}
    assert fake.sleeps == [30, 2]


def _ok(response):
    check_status(response)
    return response.json()
