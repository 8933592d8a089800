"""The HTTP API: `create_app(config, database_url)` in the Flask tutorial's factory shape.

Every error becomes a JSON body without a trace: 400 names the parameter, 404/405 say what
was not found, 503 (with Retry-After) means the store is not ready or a query ran beyond
api.statement_timeout_s, anything unexpected is a logged 500 with an opaque message.
"""

from __future__ import annotations

import logging
import time

import orjson
from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException

from transfer_daemon import metrics
from transfer_daemon.api import resources
from transfer_daemon.api.params import ParameterError
from transfer_daemon.api.resources import QueryTimedOut
from transfer_daemon.config import Config
from transfer_daemon.errors import StoreNotReady
from transfer_daemon.upstream import share_limiters

log = logging.getLogger(__name__)

RETRY_AFTER_S = 5


def json_response(body: object, status: int = 200, headers: dict | None = None) -> Response:
    payload = body if isinstance(body, bytes) else orjson.dumps(body)
    return Response(payload, status=status, mimetype="application/json", headers=headers)


def error_response(status: int, code: str, message: str, **extra: object) -> Response:
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None
    return json_response({"error": {"code": code, **extra, "message": message}}, status, headers)


def _register_errors(app: Flask) -> None:
    @app.errorhandler(ParameterError)
    def invalid_parameter(exc: ParameterError) -> Response:
        return error_response(400, "invalid_parameter", exc.message, parameter=exc.name)

    @app.errorhandler(QueryTimedOut)
    def query_timed_out(exc: QueryTimedOut) -> Response:
        log.warning("answered 503 for api: %s: %s", exc, request.full_path[:300])
        return error_response(503, "query_timeout", "the query took too long; retry later or narrow it")

    @app.errorhandler(StoreNotReady)
    def store_not_ready(exc: StoreNotReady) -> Response:
        log.warning("answered 503 for api: store not ready: %s", exc)
        return error_response(503, "store_not_ready", "the store is not ready; retry later")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        code = (exc.name or "error").lower().replace(" ", "_")
        response = error_response(exc.code or 500, code, exc.description or exc.name)
        if exc.code == 405 and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        log.exception("failed for api: %s %s", request.method, request.path)
        return error_response(500, "internal_error", "internal error; see the daemon log")


def _register_timing(app: Flask) -> None:
    @app.before_request
    def start_timer() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def observe(response: Response) -> Response:
        route = request.url_rule.rule if request.url_rule else "unmatched"
        if "started" in g:
            elapsed = time.perf_counter() - g.started
            metrics.API_LATENCY.labels(route, str(response.status_code)).observe(elapsed)
        return response


def create_app(config: Config, database_url: str) -> Flask:
    """The API app: resources, JSON errors, request timing, the blueprints."""
    from transfer_daemon.api import health, openapi, status_page, transfers

    app = Flask(__name__)
    app.json.sort_keys = False
    metrics.init_multiprocess(config.daemon.data_dir)
    share_limiters(config.cache)
    resources.init_app(app, config, database_url)
    _register_errors(app)
    _register_timing(app)
    for blueprint in (transfers.bp, health.bp, openapi.bp, status_page.bp):
        app.register_blueprint(blueprint)
    return app
