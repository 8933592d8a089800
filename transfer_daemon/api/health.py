"""/healthz (process up), /readyz (store ready, every chain synced once), /api/cache-health."""

from __future__ import annotations

import logging
import time

from flask import Blueprint, Response

from transfer_daemon import cache
from transfer_daemon.api import json_response
from transfer_daemon.api.resources import resources
from transfer_daemon.api.state import chain_report, read_children, record_alerts
from transfer_daemon.errors import StoreNotReady

log = logging.getLogger(__name__)
bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    return json_response({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Response:
    res = resources()
    try:
        from transfer_daemon import store

        with res.connection() as conn:
            waiting = [c.name for c in res.config.chains if store.get_cursor(conn, c.id).synced_block is None]
    except StoreNotReady as exc:
        return json_response({"status": "not_ready", "reason": str(exc)}, 503, {"Retry-After": "5"})
    if waiting:
        return json_response({"status": "not_ready", "reason": "first sync pending", "chains": waiting},
                             503, {"Retry-After": "5"})
    return json_response({"status": "ready"})


@bp.get("/api/cache-health")
def cache_health() -> Response:
    res = resources()
    now = time.time()
    children = read_children(res.config)
    hits, misses, ratio = cache.hit_ratio()
    body: dict = {
        "status": "down", "checkedAt": int(now), "store": {"ready": False, "error": None},
        "cache": {"hits": hits, "misses": misses, "hitRatio": ratio}, "chains": {},
    }
    try:
        with res.connection() as conn:
            reports = {str(c.id): chain_report(conn, res.config, c, children, now) for c in res.config.chains}
            record_alerts(conn, res.config, reports)
    except StoreNotReady as exc:
        body["store"]["error"] = str(exc)
        return json_response(body, 503, {"Retry-After": "5"})
    body["store"]["ready"] = True
    body["chains"] = reports
    healthy = all(not r["alerts"] and r["worker"]["state"] in ("RUNNING", "unknown") for r in reports.values())
    body["status"] = "ok" if healthy else "degraded"
    return json_response(body)
