"""GET /status — an operator's HTML page: lag chart (inline SVG, 24 h), workers, events, alerts.
Its reads are bounded (one index probe per chart point and chain), and each process reuses its
answer for ANSWER_TTL_S."""

from __future__ import annotations

import time

from flask import Blueprint, Response, render_template

from transfer_daemon import cache, report, store
from transfer_daemon.api.resources import Resources, resources
from transfer_daemon.errors import StoreNotReady
from transfer_daemon.model import iso_utc

bp = Blueprint("status_page", __name__, template_folder="templates")

WINDOW_S = 24 * 3600
SAMPLES = 96  # one point per 15 minutes
CHART_W, CHART_H = 720, 200
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def sample_times(now: float) -> list[float]:
    """The chart's points: every WINDOW_S/SAMPLES over the last WINDOW_S."""
    return [now - WINDOW_S + k * WINDOW_S / SAMPLES for k in range(SAMPLES + 1)]


def lag_series(times: list[float], last_ingests: list[float | None]) -> list[tuple[float, float | None]]:
    """(time, lag seconds): at each time, the time since the last ingest at or before it."""
    return [(t, None if last is None else t - last) for t, last in zip(times, last_ingests, strict=True)]


def polyline(series: list[tuple[float, float | None]], now: float, top: float) -> str:
    points = []
    for t, lag in series:
        if lag is not None:
            x = (t - (now - WINDOW_S)) / WINDOW_S * CHART_W
            y = CHART_H - min(lag, top) / top * CHART_H
            points.append(f"{x:.1f},{y:.1f}")
    return " ".join(points)


def _chart(conn, config, now: float) -> dict:
    times = sample_times(now)
    series = {chain.name: lag_series(times, store.last_ingests(conn, chain.id, times)) for chain in config.chains}
    lags = [lag for s in series.values() for _, lag in s if lag is not None]
    top = max(60.0, max(lags, default=60.0))
    lines = [{"name": name, "color": COLORS[i % len(COLORS)], "points": polyline(s, now, top)}
             for i, (name, s) in enumerate(series.items())]
    return {"lines": lines, "top": int(top), "width": CHART_W, "height": CHART_H}


@bp.get("/status")
def status() -> Response:
    res = resources()
    html, code = res.recent_answer("status", lambda: _render(res))
    return Response(html, status=code, mimetype="text/html")


def _render(res: Resources) -> tuple[str, int]:
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
    return html, 503 if context["error"] else 200
