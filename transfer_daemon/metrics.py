"""Prometheus metric objects shared by every process (workers, API), in multiprocess mode.

prometheus-client picks its value storage when a metric child is created, from
PROMETHEUS_MULTIPROC_DIR. Every metric here has labels, so children are created lazily —
after `init_multiprocess` has pointed the storage at `data_dir/prometheus` — even when this
module was imported before the fork.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

ROWS_INGESTED = Counter("transfers_rows_ingested", "Transfer rows newly stored", ["chain"])
REORGS = Counter("transfers_reorgs", "Reorgs detected and repaired", ["chain"])
QUARANTINED = Counter("transfers_quarantined_rows", "Upstream rows that failed validation", ["chain"])
JOB_RUNS = Counter("transfers_job_runs", "Scheduled worker jobs started", ["chain", "job"])
JOB_FAILURES = Counter("transfers_job_failures", "Worker jobs that ended in an error", ["chain", "job"])

UPSTREAM_REQUESTS = Counter(
    "transfers_upstream_requests", "Upstream HTTP attempts by upstream kind and outcome (ok, http_429, timeout, …)",
    ["chain", "kind", "outcome"],
)
UPSTREAM_LATENCY = Histogram(
    "transfers_upstream_request_seconds", "Upstream HTTP attempt latency, answer read", ["chain", "kind"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
RETRIES = Counter("transfers_upstream_retries", "Upstream attempts that failed and were retried", ["chain"])
# by chain, not by limiter key: the key of a JSON-RPC limiter is its URL, which may hold a secret
RATE_LIMIT_WAITS = Counter("transfers_rate_limit_waits", "Calls that waited for the shared limiter", ["chain"])
RATE_LIMIT_WAIT_SECONDS = Counter(
    "transfers_rate_limit_wait_seconds", "Seconds spent waiting for the shared limiter", ["chain"]
)

# Gauges a chain's worker sets every tick; a dead worker's values leave with it (live modes).
INGEST_LAG = Gauge(
    "transfers_ingest_lag_seconds",
    "Seconds since a sync last reached the upstream's head (before the first: since the worker started)",
    ["chain"], multiprocess_mode="livemax",
)
BACKFILL_PROGRESS = Gauge(
    "transfers_backfill_progress", "Share of the backfill target stored, 0..1", ["chain"], multiprocess_mode="livemax"
)
QUEUED_JOBS = Gauge(
    "transfers_queued_jobs", "Worker jobs running or due", ["chain"], multiprocess_mode="livemax"
)

# Set when /metrics is scraped, by any API process: the latest value wins.
DATABASE_SIZE = Gauge(
    "transfers_database_size_bytes", "Size of the database on disk", ["database"], multiprocess_mode="livemostrecent"
)
PARTITION_MONTH = Gauge(
    "transfers_partition_month_seconds",
    "Start of the oldest and of the newest (made ahead) monthly partition, unix seconds", ["end"],
    multiprocess_mode="livemostrecent",
)

API_LATENCY = Histogram(
    "transfers_api_request_seconds", "API request latency by route", ["route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
CACHE_REQUESTS = Counter("transfers_cache_requests", "Warm-cache lookups by result (hit, miss)", ["result"])
ALERTS_FIRING = Gauge("transfers_alerts_firing", "1 while the alert fires for the chain", ["alert", "chain"],
                      multiprocess_mode="livemax")
_alerts_shown: set[tuple[str, str]] = set()


def set_storage(database: str, size_bytes: int, oldest_month: int | None, newest_month: int | None) -> None:
    """Database size and partition span, read when /metrics is scraped."""
    DATABASE_SIZE.labels(database).set(size_bytes)
    for end, start in (("oldest", oldest_month), ("newest", newest_month)):
        if start is not None:
            PARTITION_MONTH.labels(end).set(start)


def multiproc_dir(data_dir: str | os.PathLike) -> Path:
    return Path(data_dir) / "prometheus"


def init_multiprocess(data_dir: str | os.PathLike, *, wipe: bool = False) -> Path:
    """Store metric values in files under data_dir/prometheus, shared by all processes.

    The supervisor calls it once with `wipe=True` before forking (stale files from an earlier
    run would otherwise be summed in); each child calls it again without wiping.
    """
    current = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if current and not wipe and Path(current).is_dir():
        # already chosen in this process tree: children created since write there, keep it
        return Path(current)
    directory = multiproc_dir(data_dir)
    if wipe and directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    values.ValueClass = values.get_value_class()
    return directory


def mark_process_dead(pid: int) -> None:
    """Drop a dead process's live gauges (the supervisor calls it when it reaps a child)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(pid)


def _registry() -> CollectorRegistry:
    """All processes' values in multiprocess mode, else this process's own."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


def render() -> bytes:
    """The Prometheus text exposition of every process's metrics."""
    return generate_latest(_registry())


def counter_totals(name: str, label: str) -> dict[str, float]:
    """Sum of counter `name` grouped by one label, over every process."""
    totals: dict[str, float] = {}
    for family in _registry().collect():
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name == name + "_total":
                key = sample.labels.get(label, "")
                totals[key] = totals.get(key, 0.0) + sample.value
    return totals


def set_alerts_firing(firing: Iterable[tuple[str, str]]) -> None:
    """(alert, chain) pairs firing now: 1 for each, 0 for those that fired before and no longer do."""
    now = set(firing)
    for alert, chain in _alerts_shown | now:
        ALERTS_FIRING.labels(alert, chain).set(1 if (alert, chain) in now else 0)
    _alerts_shown.update(now)
