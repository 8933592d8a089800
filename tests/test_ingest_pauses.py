"""Answers that refuse every call for a while pause the chain's upstream calls, against the
simulator and a real Postgres: the daily cap until its reset (one probe an hour), an endpoint that
does not serve the chain until its settings change; one alert per episode; the pause in the store."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace

import pytest
import requests
from ingest_support import ENVIRON, KEY_ENV, Sim, make_config, make_context, poll, sim_config

from transfer_daemon import store
from transfer_daemon.ingest import backfill as backfill_job
from transfer_daemon.ingest import context
from transfer_daemon.ingest import sync as sync_job
from transfer_daemon.ingest.worker import JobRunner
from transfer_daemon.model import IngestEvent, iso_utc
from transfer_daemon.report import chain_report
from transfer_daemon.simulate.stats import redact_key

HOUR = 3600.0
DAY = 86400.0
#: Noon UTC of the last day that has one: the simulator's UTC day (its cap's) cannot turn in a test.
NOON = (time.time() - 12 * HOUR) // DAY * DAY + 12 * HOUR
KEY = redact_key(ENVIRON[KEY_ENV])


class FakeClock:
    """The worker's wall clock (`IngestContext.clock`), moved by the test."""

    def __init__(self, now: float) -> None:
        self.now = now
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def set(self, now: float) -> None:
        with self._lock:
            self.now = now


@pytest.fixture
def opened():
    closing: list = []
    yield closing
    for close in reversed(closing):
        close()


def _calls(sim: Sim) -> int:
    return sim.stats()["requests"].get(KEY, 0)


def _events(ctx: context.IngestContext, status: str) -> list[dict]:
    with ctx.pool.connection() as conn:
        return store.recent_events(conn, ctx.chain_id, limit=100, statuses=[status])


def _report(ctx: context.IngestContext, now: float) -> dict:
    with ctx.pool.connection() as conn:
        return chain_report(conn, ctx.config, ctx.chain, (False, {}), now)


@pytest.mark.slow
def test_a_capped_key_calls_at_most_once_an_hour_until_its_reset_with_one_alert(
        tmp_path, empty_database_url, opened, caplog):
    caplog.set_level(logging.INFO)
    sim = Sim(sim_config("etherscan", daily_cap=12, start_time=NOON))
    opened.append(sim.stop)
    config = make_config(tmp_path, sim, "etherscan", poll_interval_s=1)
    ctx = make_context(config, empty_database_url)
    opened.append(ctx.pool.close)
    clock = FakeClock(NOON + 60)
    ctx.clock = clock
    runner = JobRunner(ctx, config)  # sync every second, backfill every second, as in production
    runner.start()
    opened.append(lambda: runner.stop(5))

    assert poll(lambda: sim.stats()["dailyCapAnswers"].get(KEY), 30), "the key never reached its cap"
    time.sleep(1.0)  # calls already in flight when the cap answered come back
    before = _calls(sim)
    time.sleep(4.0)  # four sync and four backfill runs within the same hour of the worker's clock
    assert _calls(sim) == before, "a capped key kept calling"

    clock.set(clock() + HOUR)
    assert poll(lambda: _calls(sim) == before + 1, 5), "no hourly probe"
    time.sleep(2.5)
    assert _calls(sim) == before + 1, "more than one probe in the hour"
    paused = _report(ctx, clock())["paused"]
    midnight = (NOON + 60) // DAY * DAY + DAY
    assert paused["reason"] == "daily_cap" and paused["until"] == iso_utc(int(midnight))

    # the quota resets at midnight (and the rest of the backfill fits in it)
    requests.post(sim.url + "/_sim/control", json={"reset_daily_calls": True, "daily_cap": 100_000},
                  timeout=5).raise_for_status()
    clock.set(midnight)
    assert poll(lambda: _calls(sim) > before + 3 and _report(ctx, clock())["paused"] is None, 10), "never resumed"

    assert len(_events(ctx, "alert")) == 1 and not _events(ctx, "error")
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "daily_cap" in errors[0], errors
    assert any("resumed chain=sim after daily_cap" in r.getMessage() and r.levelno == logging.INFO
               for r in caplog.records)
    assert _events(ctx, "resumed")


def test_an_endpoint_that_does_not_serve_the_chain_pauses_until_the_settings_change(
        tmp_path, empty_database_url, opened):
    sim = Sim(sim_config("etherscan"))
    opened.append(sim.stop)
    config = make_config(tmp_path, sim, "etherscan", id=5)  # a chain id the explorer does not know

    def worker(chain_config):
        ctx = make_context(chain_config, empty_database_url)
        opened.append(ctx.pool.close)
        return ctx

    def runs(ctx, times: int = 3) -> None:
        for _ in range(times):
            context.run_guarded(ctx, "sync", sync_job.sync, gate=True)
            context.run_guarded(ctx, "backfill", backfill_job.backfill)

    ctx = worker(config)
    runs(ctx)
    assert _calls(sim) == 1
    assert ctx.pause.reason == "endpoint_refused" and ctx.pause.until is None
    alerts = _events(ctx, "alert")
    assert len(alerts) == 1 and "unsupported chainid" in alerts[0]["message"]
    assert _report(ctx, time.time())["paused"]["until"] is None

    runs(worker(config))  # a restart with the same settings: still paused, no call
    assert _calls(sim) == 1

    v1 = replace(config, chains=(replace(config.chains[0], base_url=f"{sim.url}/api"),))
    fixed = worker(v1)
    runs(fixed, times=1)
    assert fixed.pause is None and _calls(sim) > 1
    assert _report(fixed, time.time())["paused"] is None and _events(fixed, "resumed")
    assert len(_events(fixed, "alert")) == 1


class _CountingSource:
    def __init__(self) -> None:
        self.calls = 0

    def head_block(self) -> int:
        self.calls += 1
        return 1000

    def block_hashes(self, blocks):
        return {}


def test_a_halt_is_recorded_and_a_new_worker_stays_halted(tmp_path, empty_database_url, opened):
    sim = Sim(sim_config("etherscan"))
    opened.append(sim.stop)
    config = make_config(tmp_path, sim, "etherscan")
    ctx = make_context(config, empty_database_url)
    opened.append(ctx.pool.close)

    def deep_reorg(c: context.IngestContext) -> None:  # what sync does on a reorg deeper than the limit
        context.record(c, IngestEvent(c.chain_id, "halted", "reorg of depth 9 exceeds max_reorg_depth 3"))
        c.halted = True

    context.run_guarded(ctx, "sync", deep_reorg, gate=True)
    halted = _report(ctx, time.time())["halted"]
    assert halted and "max_reorg_depth" in halted["reason"]

    restarted = make_context(config, empty_database_url)
    opened.append(restarted.pool.close)
    restarted.source = _CountingSource()
    context.run_guarded(restarted, "sync", sync_job.sync, gate=True)
    assert restarted.halted and restarted.source.calls == 0
