"""Every declared metric moves: a worker ingests from the simulator (in this process, on a thread,
through rate limits, faults, reorgs, poisoned rows and an outage) and the API's `/metrics` text
shows each figure change. A metric declared in `transfer_daemon.metrics` without a line below
fails `test_every_declared_metric_is_checked`."""

from __future__ import annotations

import threading
import warnings

import pytest
import requests
from ingest_support import ENVIRON, Sim, make_config, poll, sim_config
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from transfer_daemon import metrics
from transfer_daemon.api import create_app
from transfer_daemon.db.bootstrap import migrate
from transfer_daemon.ingest import worker as worker_module
from transfer_daemon.ingest.worker import run_worker
from transfer_daemon.upstream.http import RetryPolicy

pytestmark = pytest.mark.slow
CHAIN = {"chain": "sim"}
UPSTREAM = {"chain": "sim", "kind": "etherscan_logs"}
#: a call gives up within half a second, so the outage fails jobs at once
QUICK = RetryPolicy(max_attempts=3, max_total_s=2.0, initial_s=0.05, maximum_s=0.2)

#: family -> (sample, labels it must carry); each must be higher at the end than at the start
COUNTED = {
    "transfers_rows_ingested": ("transfers_rows_ingested_total", CHAIN),
    "transfers_reorgs": ("transfers_reorgs_total", CHAIN),
    "transfers_quarantined_rows": ("transfers_quarantined_rows_total", CHAIN),
    "transfers_job_runs": ("transfers_job_runs_total", {**CHAIN, "job": "backfill"}),
    "transfers_job_failures": ("transfers_job_failures_total", {**CHAIN, "job": "sync"}),
    "transfers_upstream_requests": ("transfers_upstream_requests_total", {**UPSTREAM, "outcome": "ok"}),
    "transfers_upstream_request_seconds": ("transfers_upstream_request_seconds_count", UPSTREAM),
    "transfers_upstream_retries": ("transfers_upstream_retries_total", CHAIN),
    "transfers_rate_limit_waits": ("transfers_rate_limit_waits_total", CHAIN),
    "transfers_rate_limit_wait_seconds": ("transfers_rate_limit_wait_seconds_total", CHAIN),
    "transfers_api_request_seconds": ("transfers_api_request_seconds_count", {"route": "/api/transfers"}),
    "transfers_cache_requests": ("transfers_cache_requests_total", {}),
}
#: gauges, checked one by one in the test
GAUGES = {"transfers_ingest_lag_seconds", "transfers_backfill_progress", "transfers_queued_jobs",
          "transfers_database_size_bytes", "transfers_partition_month_seconds", "transfers_alerts_firing"}


def declared() -> set[str]:
    return {family.name for metric in vars(metrics).values() if isinstance(metric, MetricWrapperBase)
            for family in metric.describe()}


def test_every_declared_metric_is_checked() -> None:
    assert declared() == set(COUNTED) | GAUGES


Scrape = dict[tuple[str, tuple], float]


def scrape(client) -> Scrape:
    text = client.get("/metrics").get_data(as_text=True)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Scrape, name: str, labels: dict[str, str]) -> float | None:
    """The sum of `name`'s samples carrying `labels` (None when there is none)."""
    found = [v for (n, have), v in samples.items() if n == name and set(labels.items()) <= set(have)]
    return sum(found) if found else None


@pytest.fixture
def rig(tmp_path, empty_database_url, monkeypatch):
    for name, setting in ENVIRON.items():
        monkeypatch.setenv(name, setting)
    # a reorg deeper than the blocks a sync cycle adds, so each one rewrites the stored head
    knobs = {"rate_limit": 0.0, "fault_rate": 0.05, "fault_types": ("http_5xx",), "reorg_every": 8,
             "reorg_depth": 4, "poison_every": 15}
    sim = Sim(sim_config("etherscan_logs", **knobs))
    config = make_config(tmp_path, sim, "etherscan_logs", rate_limit_per_sec=15, page_size=50, confirmations=5)
    migrate(empty_database_url)
    app = create_app(config, empty_database_url)  # metrics in files shared by every process, as deployed
    with warnings.catch_warnings():  # clear() warns that files keep their values: only the children go
        warnings.simplefilter("ignore", UserWarning)
        for metric in vars(metrics).values():
            if isinstance(metric, MetricWrapperBase):
                metric.clear()  # a child an earlier test made before that switch would never reach /metrics
    monkeypatch.setattr(worker_module, "retry_policy", lambda poll_interval_s: QUICK)
    published: list[tuple[int, int]] = []
    stopping = threading.Event()
    worker = threading.Thread(target=run_worker, args=(config, "sim", empty_database_url, lambda: None),
                              kwargs={"stopping": stopping, "publish": lambda *load: published.append(load)},
                              daemon=True)
    yield sim, app.test_client(), worker, published
    stopping.set()
    worker.join(15)
    app.extensions["transfer_daemon"].close()
    sim.stop()


def _outage(sim: Sim, on: bool) -> None:
    requests.post(sim.url + "/_sim/control", json={"outage": on}, timeout=5).raise_for_status()


def test_a_worker_against_the_simulator_moves_every_metric(rig) -> None:
    sim, client, worker, published = rig
    before = scrape(client)
    worker.start()

    def now() -> Scrape:
        return scrape(client)

    assert poll(lambda: value(now(), "transfers_backfill_progress", CHAIN) == 1.0, 60)
    assert poll(lambda: (value(now(), "transfers_reorgs_total", CHAIN) or 0)
                > (value(before, "transfers_reorgs_total", CHAIN) or 0), 30)
    assert poll(lambda: (value(now(), "transfers_ingest_lag_seconds", CHAIN) or 99) < 3, 10)
    client.get("/api/transfers")

    _outage(sim, True)
    assert poll(lambda: (value(now(), "transfers_job_failures_total", {**CHAIN, "job": "sync"}) or 0)
                > (value(before, "transfers_job_failures_total", {**CHAIN, "job": "sync"}) or 0), 15)
    first = value(now(), "transfers_ingest_lag_seconds", CHAIN)
    # kept moving: no sync reached the head (the gauge is set once a worker tick, ~1 s, later under load)
    assert poll(lambda: value(now(), "transfers_ingest_lag_seconds", CHAIN) >= first + 2, 10)
    _outage(sim, False)
    assert poll(lambda: value(now(), "transfers_ingest_lag_seconds", CHAIN) < 3, 15)

    after = scrape(client)
    unmoved = {family: sample for family, (sample, labels) in COUNTED.items()
               if (value(after, sample, labels) or 0) <= (value(before, sample, labels) or 0)}
    assert unmoved == {}
    assert value(after, "transfers_upstream_requests_total", {**UPSTREAM, "outcome": "http_5xx"}) > 0
    assert max(queued for queued, _ in published) >= 1 and max(span for _, span in published) > 0
    assert value(after, "transfers_queued_jobs", CHAIN) is not None
    assert value(after, "transfers_database_size_bytes", {}) > 0
    oldest = value(after, "transfers_partition_month_seconds", {"end": "oldest"})
    assert 0 < oldest < value(after, "transfers_partition_month_seconds", {"end": "newest"})


def test_alerts_firing_is_one_while_an_alert_fires_and_zero_once_it_resolved(tmp_path, empty_database_url):
    sim = Sim(sim_config("etherscan_logs"))
    try:
        app = create_app(make_config(tmp_path, sim, "etherscan_logs"), empty_database_url)
    finally:
        sim.stop()
    client = app.test_client()
    firing = {"alert": "IngestLag", "chain": "sim"}
    metrics.set_alerts_firing([("IngestLag", "sim"), ("Drift", "other")])
    assert value(scrape(client), "transfers_alerts_firing", firing) == 1
    metrics.set_alerts_firing([("Drift", "other")])
    samples = scrape(client)
    assert value(samples, "transfers_alerts_firing", firing) == 0
    assert value(samples, "transfers_alerts_firing", {"alert": "Drift", "chain": "other"}) == 1
    metrics.set_alerts_firing([])
    app.extensions["transfer_daemon"].close()
