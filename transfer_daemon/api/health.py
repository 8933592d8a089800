"""/healthz (process up), /readyz (store ready, every chain synced once), /api/cache-health (the
per-chain report, reused for ANSWER_TTL_S by each process), /metrics (every process's metrics in
Prometheus text format)."""

from __future__ import annotations

import time

from flask import Blueprint, Response
from prometheus_client import CONTENT_TYPE_LATEST

from transfer_daemon import cache, metrics, report, store
from transfer_daemon.api import json_response
from transfer_daemon.api.resources import Resources, resources
from transfer_daemon.errors import StoreNotReady

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    return json_response({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Response:
    res = resources()
    try:
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
    body, status = res.recent_answer("cache-health", lambda: _cache_health(res))
    return json_response(body, status, {"Retry-After": "5"} if status == 503 else None)


def _cache_health(res: Resources) -> tuple[dict, int]:
    now = time.time()
    hits, misses, ratio = cache.hit_ratio()
    body: dict = {
        "status": "down", "checkedAt": int(now), "store": {"ready": False, "error": None},
        "cache": {"hits": hits, "misses": misses, "hitRatio": ratio}, "chains": {},
    }
    try:
        with res.connection() as conn:
            reports = report.chain_reports(conn, res.config, now)
    except StoreNotReady as exc:
        body["store"]["error"] = str(exc)
        return body, 503
    body["store"]["ready"] = True
    body["chains"] = {str(r["id"]): r for r in reports}
    body["status"] = "ok" if all(report.is_healthy(r) for r in reports) else "degraded"
    return body, 200


@bp.get("/metrics")
def metrics_text() -> Response:
    try:
        with resources().connection() as conn:
            stats = store.storage_stats(conn)
        metrics.set_storage(stats.database, stats.size_bytes, stats.oldest_month, stats.newest_month)
    except StoreNotReady:
        pass  # the rest still answers; the storage gauges keep their last values
    return Response(metrics.render(), mimetype=None, content_type=CONTENT_TYPE_LATEST)
