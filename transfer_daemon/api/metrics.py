"""GET /metrics — every process's metrics (workers and API) in Prometheus text format."""

from __future__ import annotations

from flask import Blueprint, Response
from prometheus_client import CONTENT_TYPE_LATEST

from transfer_daemon import metrics

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def metrics_text() -> Response:
    return Response(metrics.render(), mimetype=None, content_type=CONTENT_TYPE_LATEST)
