"""The one per-chain report: what `transfer-daemon status`, `/api/cache-health` and `/status` show.

`chain_report` computes every figure once, from the store and the supervisor's state file; the
three views only render it (a table, JSON, HTML), so they cannot disagree. It only reads: a GET
never writes to the database. Every read is bounded (the newest events only, one row per fact).
"""

from __future__ import annotations

import math
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from transfer_daemon import state, store
from transfer_daemon.config import ChainConfig, Config
from transfer_daemon.db.bootstrap import StoreUnreachable, running_database_url
from transfer_daemon.ingest.planning import backfill_share
from transfer_daemon.model import Cursor, iso_utc
from transfer_daemon.redact import redact_url

SUCCESS_STATUSES = ("ingested", "reorg")
#: a verify's outcome: `drift` (it found a difference) or `verified` (a whole window matched)
VERIFY_STATUSES = ("drift", "verified")
ERROR_WINDOW_S = 60.0
CONNECT_TIMEOUT_S = 3
#: worker states in which a chain counts as healthy (unknown: the supervisor has not listed it yet)
HEALTHY_WORKER_STATES = ("RUNNING", "unknown")


def iso(unix: float | None) -> str | None:
    return None if unix is None else iso_utc(int(unix))


def read_children(config: Config) -> tuple[bool, dict[str, dict]]:
    """(a live supervisor published them, its children's entries by name)."""
    document = state.read_state(config)
    alive = bool(document and document.get("alive"))
    children = (document or {}).get("children")
    if not alive or not isinstance(children, dict):
        return alive, {}
    return alive, {name: entry for name, entry in children.items() if isinstance(entry, dict)}


def child_report(children: tuple[bool, dict[str, dict]], name: str) -> dict[str, Any]:
    """A child's state, pid, restarts, last exit; "not running" without a live supervisor."""
    alive, entries = children
    entry = entries.get(name) or {}
    last_exit = entry.get("last_exit") if isinstance(entry.get("last_exit"), dict) else None
    restarts, pid = entry.get("restarts"), entry.get("pid")
    queued = entry.get("queued_jobs")
    return {
        "state": str(entry.get("state", "unknown")) if alive else "not running",
        "pid": pid if alive and isinstance(pid, int) else None,
        "restarts": restarts if isinstance(restarts, int) else 0,
        "queuedJobs": queued if alive and isinstance(queued, int) else None,
        "lastExit": None if last_exit is None else {
            "status": last_exit.get("status"), "reason": last_exit.get("reason"), "at": iso(last_exit.get("at"))},
    }


def freshness_view(last_synced_at: float | None, complete_from: float | None, history_complete: bool,
                   now: float, stale_after_s: float) -> dict[str, Any]:
    """A chain's freshness as every view shows it (DESIGN "Contract: freshness"): when a sync last
    reached the head, the lag since (None before the first), stale, and how far back it is complete."""
    lag = None if last_synced_at is None else max(0, int(now - last_synced_at))
    return {"lastIngestedAt": iso(last_synced_at), "ingestLagSeconds": lag,
            "stale": lag is None or lag > stale_after_s,
            "history": {"completeFrom": iso(complete_from), "complete": history_complete}}


def remaining_windows(cursor: Cursor, span: int | None) -> int | None:
    """Backfill windows left, estimated from the cursor and the span of the worker's windows
    (which adapts to the density seen); None when either is unknown."""
    if cursor.backfill_done:
        return 0
    if not span or span < 0 or cursor.backfilled_block is None or cursor.backfill_target_block is None:
        return None
    return math.ceil(max(0, cursor.backfilled_block - cursor.backfill_target_block) / span)


def _backfill_span(children: tuple[bool, dict[str, dict]], name: str) -> int | None:
    """The span a live worker published beside its heartbeat, if any."""
    alive, entries = children
    span = (entries.get(name) or {}).get("backfill_span")
    return span if alive and isinstance(span, int) else None


def _event(event: dict | None) -> dict | None:
    if event is None:
        return None
    return {"at": iso(event["occurred_at"]), "status": event["status"],
            "message": redact_url(event["message"] or ""), "rows": event["rows"]}


def _alerts(config: Config, lag: float | None, errors_last_minute: int) -> list[str]:
    """The lag and error conditions, on the alert thresholds (the supervisor's monitor sends them)."""
    alerts = []
    if lag is not None and lag > config.alerts.lag_threshold_s:
        alerts.append("lag")
    if errors_last_minute > config.alerts.errors_per_min:
        alerts.append("errors")
    return alerts


def chain_report(conn: psycopg.Connection, config: Config, chain: ChainConfig,
                 children: tuple[bool, dict[str, dict]], now: float) -> dict[str, Any]:
    """Everything the three views show for one chain (camelCase keys, JSON-able, no secret)."""
    cursor = store.get_cursor(conn, chain.id)
    stats = store.chain_stats(conn, chain.id)
    fresh = store.freshness(conn, (chain.id,), now=now)[chain.id]
    view = freshness_view(fresh.last_ingested_at, fresh.complete_from, fresh.history_complete, now,
                          config.api.stale_after_s)
    errors = store.count_recent_events(conn, chain.id, ("error",), since=now - ERROR_WINDOW_S)
    worker = child_report(children, f"worker[{chain.name}]")
    span = _backfill_span(children, f"worker[{chain.name}]")
    halt, pause = store.get_stops(conn, chain.id)
    return {
        "id": chain.id, "name": chain.name, "kind": chain.kind, "dataSource": config.data_source_for(chain),
        "worker": worker, "queuedJobs": worker["queuedJobs"],
        "rows": stats.rows,
        "oldest": {"block": stats.oldest_block, "time": iso(stats.oldest_time)},
        "newest": {"block": stats.newest_block, "time": iso(stats.newest_time)},
        "backfill": {"syncedBlock": cursor.synced_block, "backfilledBlock": cursor.backfilled_block,
                     "targetBlock": cursor.backfill_target_block, "done": cursor.backfill_done,
                     "progress": round(backfill_share(cursor), 4),
                     "remainingWindows": remaining_windows(cursor, span)},
        **view,
        "lastSuccess": _event(store.last_event(conn, chain.id, SUCCESS_STATUSES)),
        "lastError": _event(store.last_event(conn, chain.id, ("error",))),
        "errorsLastMinute": errors,
        "lastVerify": _event(store.last_event(conn, chain.id, VERIFY_STATUSES)),
        "alerts": _alerts(config, view["ingestLagSeconds"], errors),
        "paused": None if pause is None else {
            "reason": pause.reason, "since": iso(pause.since), "until": iso(pause.until),
            "message": redact_url(pause.message)},
        "halted": None if halt is None else {"reason": redact_url(halt.reason), "at": iso(halt.at)},
    }


def chain_reports(conn: psycopg.Connection, config: Config, now: float | None = None,
                  children: tuple[bool, dict[str, dict]] | None = None) -> list[dict[str, Any]]:
    """`chain_report` for every configured chain, in config order."""
    now = time.time() if now is None else now
    children = read_children(config) if children is None else children
    return [chain_report(conn, config, chain, children, now) for chain in config.chains]


def recent_activity(conn: psycopg.Connection, limit: int = 30) -> list[dict[str, Any]]:
    """The newest events of every chain, newest first, their messages redacted."""
    return [dict(e, message=redact_url(e["message"] or ""), at=e["occurred_at"])
            for e in store.recent_events(conn, None, limit=limit)]


def is_healthy(report: dict[str, Any]) -> bool:
    """No alert, a worker running, and its chain neither halted nor paused."""
    stopped = report.get("halted") or report.get("paused")
    return not report["alerts"] and not stopped and report["worker"]["state"] in HEALTHY_WORKER_STATES


def _read_store(config: Config, children: tuple[bool, dict[str, dict]],
                now: float) -> tuple[dict[str, Any], dict[int, dict[str, Any]]]:
    """({reachable, error}, reports by chain id); never raises for an unreachable or unmigrated store."""
    try:
        url = running_database_url(config)
        with psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S, autocommit=True,
                             application_name="transfer-daemon status") as conn:
            reports = {report["id"]: report for report in chain_reports(conn, config, now, children)}
    except (StoreUnreachable, psycopg.Error) as exc:
        return {"reachable": False, "error": redact_url(str(exc).strip().splitlines()[0])}, {}
    return {"reachable": True, "error": None}, reports


def status_document(config: Config, now: float | None = None) -> dict[str, Any]:
    """`transfer-daemon status --json`: the supervisor, the API, the store and every chain's report;
    a chain whose store cannot be read shows its worker only."""
    now = time.time() if now is None else now
    document = state.read_state(config) or {}
    children = read_children(config)
    alive = children[0]
    store_status, reports = _read_store(config, children, now)
    chains = [reports.get(chain.id) or {"id": chain.id, "name": chain.name, "kind": chain.kind,
                                        "worker": child_report(children, f"worker[{chain.name}]")}
              for chain in config.chains]
    return {
        "checkedAt": iso_utc(int(now)),
        "supervisor": {"running": alive, "pid": document.get("pid") if alive else None,
                       "state": document.get("state") if alive else "not running",
                       "startedAt": iso(document.get("started_at")) if alive else None},
        "api": child_report(children, "api"),
        "store": {**store_status, "database": redact_url(config.database.url) if config.database.url
                  else f"embedded ({Path(config.daemon.data_dir) / 'pgdata'})"},
        "chains": chains,
    }


_COLUMNS = ("CHAIN", "WORKER", "PID", "RESTARTS", "QUEUED", "LAG", "LAST SUCCESS", "ROWS", "SYNCED", "BACKFILL",
            "NEWEST", "LAST ERROR")


def _ago(at: str | None, now: float) -> str:
    if at is None:
        return "-"
    seconds = max(0, int(now - datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def _dash(value: Any) -> str:
    return "-" if value is None else str(value)


def _row(chain: dict[str, Any], now: float) -> tuple[str, ...]:
    worker, backfill = chain["worker"], chain.get("backfill") or {}
    lag, progress, left = chain.get("ingestLagSeconds"), backfill.get("progress"), backfill.get("remainingWindows")
    success, error = chain.get("lastSuccess"), chain.get("lastError")
    return (
        f"{chain['name']} ({chain['id']})", worker["state"], _dash(worker["pid"]), str(worker["restarts"]),
        _dash(worker.get("queuedJobs")),
        "never" if lag is None else f"{lag:.0f}s" + (" stale" if chain.get("stale") else ""),
        _ago(success and success["at"], now), _dash(chain.get("rows")), _dash(backfill.get("syncedBlock")),
        "-" if progress is None else f"{progress:.0%}" + (f" ({left} left)" if left else ""),
        _ago((chain.get("newest") or {}).get("time"), now),
        "-" if error is None else f"{_ago(error['at'], now)}: {error['message'][:60]}",
    )


def render_table(report: dict[str, Any], now: float | None = None) -> str:
    """The operator's view: a supervisor/api/store header, then one aligned row per chain."""
    now = time.time() if now is None else now
    supervisor, api, store_status = report["supervisor"], report["api"], report["store"]
    lines = [
        f"supervisor: {supervisor['state']}" + (f" (pid {supervisor['pid']}, since {supervisor['startedAt']})"
                                                if supervisor["running"] else ""),
        f"api: {api['state']}" + (f" (pid {api['pid']})" if api["pid"] else "") + f", restarts {api['restarts']}",
        f"store: {'ok' if store_status['reachable'] else 'store unreachable'}, {store_status['database']}"
        + ("" if store_status["reachable"] else f": {store_status['error']}"),
        "",
    ]
    rows = [_COLUMNS, *(_row(chain, now) for chain in report["chains"])]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
              for row in rows]
    return "\n".join(lines)
