"""Pure pause decisions: how long a refusal stops a chain's calls, and when a probe may ask again."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from transfer_daemon.config import parse_config
from transfer_daemon.errors import DailyCapReached, EndpointRefused, InvalidApiKey
from transfer_daemon.ingest import pauses as p

HOUR = 3600.0


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def chain(**overrides):
    table = {"id": 1, "name": "eth", "kind": "etherscan", "contracts": ["0x" + "11" * 20],
             "base_url": "https://api.etherscan.io/v2/api", "api_key_env": "KEY", **overrides}
    return parse_config({"chains": [table]}, {}).chains[0]


@pytest.mark.parametrize(("now", "reset", "expected"), [
    ("2026-03-10 20:15:00", "00:00", "2026-03-11 00:00:00"),
    ("2026-03-10 00:00:00", "00:00", "2026-03-11 00:00:00"),  # at the reset: the next one
    ("2026-03-10 23:59:59", "00:00", "2026-03-11 00:00:00"),
    ("2026-03-10 05:00:00", "07:30", "2026-03-10 07:30:00"),
    ("2026-12-31 08:00:00", "07:30", "2027-01-01 07:30:00"),
])
def test_next_reset_is_the_next_utc_time_of_day(now, reset, expected):
    assert p.next_reset(at(now), reset) == at(expected)


def test_a_daily_cap_pauses_until_the_reset_and_other_refusals_until_the_settings_change():
    now = at("2026-03-10 20:15:00")
    capped = p.pause_for(DailyCapReached("Max daily rate limit reached"), now, "00:00", "d1")
    assert (capped.reason, capped.since, capped.config) == (p.DAILY_CAP, now, "d1")
    assert capped.until == at("2026-03-11 00:00")
    told = p.pause_for(DailyCapReached("capped", reset_at=now + 60), now, "00:00", "d1")
    assert told.until == now + 60  # the upstream's own word wins over the configured reset
    assert p.pause_for(InvalidApiKey("Invalid API Key"), now, "00:00", "d1").until is None
    endpoint = p.pause_for(EndpointRefused("You are using a deprecated V1 endpoint"), now, "00:00", "d1")
    assert (endpoint.reason, endpoint.until) == (p.ENDPOINT_REFUSED, None)
    assert "deprecated V1" in endpoint.message


def test_a_capped_chain_probes_at_most_hourly_and_at_the_reset():
    since = at("2026-03-10 20:15:00")
    pause = p.pause_for(DailyCapReached("capped"), since, "00:00", "d")
    assert p.next_step(None, since) == p.CALL
    assert p.next_step(pause, since + HOUR - 1) == p.WAIT
    assert p.next_step(pause, since + HOUR) == p.PROBE
    probed = p.refused_again(pause, since + HOUR, "00:00")
    assert probed.probed_at == since + HOUR and probed.until == pause.until
    assert p.next_step(probed, since + 2 * HOUR - 1) == p.WAIT
    assert p.next_step(probed, pause.until) == p.PROBE  # the reset comes before the next hourly probe
    late = p.refused_again(probed, pause.until + 5, "00:00")
    assert late.until == pause.until + 86400  # still capped after the reset: expect the next one
    assert p.next_step(late, pause.until + 5 + HOUR - 1) == p.WAIT


def test_a_refused_key_or_endpoint_never_probes():
    for error in (InvalidApiKey("Invalid API Key"), EndpointRefused("unsupported chainid")):
        pause = p.pause_for(error, 0.0, "00:00", "d")
        assert all(p.next_step(pause, t) == p.WAIT for t in (1.0, HOUR, 30 * 86400.0))


def test_a_pause_is_lifted_by_other_upstream_settings_or_another_key():
    eth = chain()
    digest = p.upstream_digest(eth, "key-1")
    pause = p.pause_for(InvalidApiKey("Invalid API Key"), 0.0, "00:00", digest)
    assert not p.lifted(pause, p.upstream_digest(eth, "key-1"))
    assert not p.lifted(pause, p.upstream_digest(replace(eth, poll_interval_s=5), "key-1"))
    assert p.lifted(pause, p.upstream_digest(eth, "key-2"))
    assert p.lifted(pause, p.upstream_digest(replace(eth, base_url="https://api.etherscan.io/api"), "key-1"))
    assert "key-1" not in digest
