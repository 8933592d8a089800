"""GET /status — an operator's HTML page: lag chart (inline SVG, 24 h), workers, events, alerts."""

from __future__ import annotations

import time

from flask import Blueprint, Response, render_template

from transfer_daemon import cache, report, store
from transfer_daemon.api.resources import resources
from transfer_daemon.errors import StoreNotReady
from transfer_daemon.model import iso_utc

bp = Blueprint("status_page", __name__, template_folder="templates")

WINDOW_S = 24 * 3600
SAMPLES = 96  # one point per 15 minutes
CHART_W, CHART_H = 720, 200
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def lag_series(ingested_at: list[float], now: float) -> list[tuple[float, float | None]]:
    """(time, lag seconds) every WINDOW_S/SAMPLES: time since the latest ingest at or before it."""
    times = sorted(ingested_at)
    series, i, last = [], 0, None
    for k in range(SAMPLES + 1):
        t = now - WINDOW_S + k * WINDOW_S / SAMPLES
        while i < len(times) and times[i] <= t:
            last, i = times[i], i + 1
        series.append((t, None if last is None else t - last))
    return series


def polyline(series: list[tuple[float, float | None]], now: float, top: float) -> str:
    points = []
    for t, lag in series:
        if lag is not None:
            x = (t - (now - WINDOW_S)) / WINDOW_S * CHART_W
            y = CHART_H - min(lag, top) / top * CHART_H
            points.append(f"{x:.1f},{y:.1f}")
    return " ".join(points)


def _chart(conn, config, now: float) -> dict:
    series = {}
    for chain in config.chains:
        events = store.recent_events(conn, chain.id, limit=5000, statuses=["ingested"])
        times = [e["occurred_at"] for e in events if e["occurred_at"] >= now - 2 * WINDOW_S]
        series[chain.name] = lag_series(times, now)
    lags = [lag for s in series.values() for _, lag in s if lag is not None]
    top = max(60.0, max(lags, default=60.0))
    lines = [{"name": name, "color": COLORS[i % len(COLORS)], "points": polyline(s, now, top)}
             for i, (name, s) in enumerate(series.items())]
    return {"lines": lines, "top": int(top), "width": CHART_W, "height": CHART_H}


@bp.get("/status")
def status() -> Response:
    res = resources()
    now = time.time()
    alive, children = report.read_children(res.config)
    hits, misses, ratio = cache.hit_ratio()
    context = {"now": iso_utc(int(now)), "hit_ratio": ratio, "hits": hits, "misses": misses,
               "children": children, "error": None, "reports": {}, "events": [], "chart": None}
    try:
        with res.connection() as conn:
            context["reports"] = {r["name"]: r for r in report.chain_reports(conn, res.config, now, (alive, children))}
            context["events"] = report.recent_activity(conn)
            context["chart"] = _chart(conn, res.config, now)
    except StoreNotReady as exc:
        context["error"] = str(exc)
    names = {c.id: c.name for c in res.config.chains}
    html = render_template("status.html", names=names, iso=iso_utc, **context)
    return Response(html, status=503 if context["error"] else 200, mimetype="text/html")
