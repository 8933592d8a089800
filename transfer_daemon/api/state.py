"""What /api/cache-health and /status report per chain: store facts, worker state, alerts.

The supervisor's state file (transfer_daemon.state_file) is read defensively: missing,
unreadable or written by a supervisor that is gone means worker state "unknown".
Alerts (lag > ALERT_LAG_S, errors > ALERT_ERRORS_PER_MIN) are
also recorded once per episode as "alert" ingest events; an episode is identified by the
chain's last successful sync, so the same outage is never recorded twice.
"""

from __future__ import annotations

import logging
from datetime import datetime

from transfer_daemon import state_file, store
from transfer_daemon.config import ChainConfig, Config
from transfer_daemon.model import IngestEvent, iso_utc

log = logging.getLogger(__name__)

ALERT_LAG_S = 300
ALERT_ERRORS_PER_MIN = 5


def read_children(config: Config) -> dict[str, dict]:
    """The supervisor's per-child entries by name; {} without a live supervisor's state file."""
    document = state_file.read_state(config)
    if not document or not document.get("alive"):
        return {}
    children = document.get("children")
    return {k: v for k, v in children.items() if isinstance(v, dict)} if isinstance(children, dict) else {}


def worker_state(children: dict[str, dict], chain: ChainConfig) -> dict:
    child = children.get(f"worker[{chain.name}]") or {}
    restarts, pid, queued = child.get("restarts"), child.get("pid"), child.get("queued_jobs")
    return {
        "state": str(child.get("state", "unknown")),
        "restarts": restarts if isinstance(restarts, int) else 0,
        "pid": pid if isinstance(pid, int) else None,
        "queuedJobs": queued if isinstance(queued, int) else None,
    }


def _unix(value: object) -> float | None:
    if isinstance(value, datetime):
        return value.timestamp()
    return float(value) if isinstance(value, int | float) else None


def _event_time(event: dict) -> float | None:
    for key in ("occurred_at", "at"):
        if key in event:
            return _unix(event[key])
    return None


def _event_summary(event: dict | None) -> dict | None:
    if event is None:
        return None
    at = _event_time(event)
    return {"at": None if at is None else iso_utc(int(at)), "status": event.get("status"),
            "message": event.get("message", ""), "rows": event.get("rows", 0)}


def _backfill(cursor) -> dict:
    progress = None
    if cursor.backfill_done:
        progress = 1.0
    elif None not in (cursor.synced_block, cursor.backfilled_block, cursor.backfill_target_block):
        span = cursor.synced_block - cursor.backfill_target_block
        done = cursor.synced_block - cursor.backfilled_block
        progress = 1.0 if span <= 0 else round(max(0.0, min(1.0, done / span)), 4)
    return {"syncedBlock": cursor.synced_block, "backfilledBlock": cursor.backfilled_block,
            "targetBlock": cursor.backfill_target_block, "done": cursor.backfill_done, "progress": progress}


def chain_report(conn, config: Config, chain: ChainConfig, children: dict[str, dict], now: float) -> dict:
    events = store.recent_events(conn, chain.id, limit=50)
    success = next((e for e in events if e.get("status") == "ingested"), None)
    error = next((e for e in events if e.get("status") == "error"), None)
    errors_last_min = sum(1 for e in events if e.get("status") == "error" and (_event_time(e) or 0) >= now - 60)
    fresh = store.freshness(conn, (chain.id,)).get(chain.id)
    last = _unix(getattr(fresh, "last_ingested_at", None))
    lag = None if last is None else max(0, int(now - last))
    worker = worker_state(children, chain)
    alerts = []
    if lag is not None and lag > ALERT_LAG_S:
        alerts.append("lag")
    if errors_last_min > ALERT_ERRORS_PER_MIN:
        alerts.append("errors")
    return {
        "name": chain.name, "ingestLagSeconds": lag, "lastIngestedAt": None if last is None else iso_utc(int(last)),
        "lastSuccess": _event_summary(success), "lastError": _event_summary(error),
        "errorsLastMinute": errors_last_min, "queuedJobs": worker.pop("queuedJobs"),
        "backfill": _backfill(store.get_cursor(conn, chain.id)), "worker": worker,
        "rows": store.chain_stats(conn, chain.id).rows, "dataSource": config.data_source_for(chain),
        "alerts": alerts,
    }


def record_alerts(conn, config: Config, reports: dict[str, dict]) -> None:
    """Record each raised alert once per episode (keyed by the chain's last successful sync)."""
    for chain in config.chains:
        report = reports[str(chain.id)]
        if report["alerts"]:
            with conn.transaction():
                # serializes API processes checking the same chain, so none records a duplicate
                conn.execute("SELECT pg_advisory_xact_lock(hashtext('transfer-daemon alerts'), %s::int)", (chain.id,))
                _record_new(conn, chain, report)


def _record_new(conn, chain: ChainConfig, report: dict) -> None:
    episode = report["lastIngestedAt"]
    recorded = {(e.get("detail") or {}).get("key") for e in store.recent_events(
        conn, chain.id, limit=20, statuses=["alert"])}
    for kind in report["alerts"]:
        key = f"{kind}@{episode}"
        if key in recorded:
            continue
        message = (f"ingest lag {report['ingestLagSeconds']} s exceeds {ALERT_LAG_S} s" if kind == "lag"
                   else f"{report['errorsLastMinute']} errors in the last minute exceed {ALERT_ERRORS_PER_MIN}")
        store.record_event(conn, IngestEvent(chain.id, "alert", message, detail={"key": key, "kind": kind}))
        log.warning("alert for %s: %s", chain.name, message)
