"""run_api: the production WSGI server — gunicorn, embedded.

Chosen over waitress by measurement (scripts/bench_api.py, warm page 1, wrk -c10 on 2 cores):
waitress is one process, so every request shares one GIL; gunicorn forks `api.workers`
processes and uses both cores. With `api.threads = 1` (the default) they are sync workers, one
request at a time each: on 2 cores they halved p99 against gthread (2 x 4 threads) at the same
throughput, since no request waits for a GIL held by another thread of its process and no
thread pool hands requests around. `api.threads > 1` selects gthread (keep-alive, several
requests in flight per process) for slow clients without a buffering proxy in front, or
upstream mode under many clients. Each worker builds its own app in `load()` (after the fork):
pool, cache handle and upstream sources are opened there lazily, never inherited from the master.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger

from transfer_daemon import metrics
from transfer_daemon.api.resources import POOL_TIMEOUT_S, UPSTREAM_POLICY
from transfer_daemon.config import Config

log = logging.getLogger(__name__)

AppFactory = Callable[[Config, str], object]


def worker_timeout_s(config: Config) -> int:
    """Seconds a worker may spend on one request before gunicorn kills it: above the longest a request
    can take when Postgres cancels each of its few statements at api.statement_timeout_s, it waits
    for a pooled connection and, in upstream mode, for the explorer. Postgres cancels the statements
    by itself, so a worker killed anyway leaves no query running behind it."""
    longest = 3 * config.api.statement_timeout_s + POOL_TIMEOUT_S + UPSTREAM_POLICY.max_total_s
    return max(30, math.ceil(2 * longest))


class PipelineLogger(Logger):
    """gunicorn's messages go to our logging pipeline (the child's log pipe), not its own handlers."""

    def setup(self, cfg) -> None:
        self.error_log.propagate = True
        self.access_log.propagate = False


def _child_exit(server, worker) -> None:
    metrics.mark_process_dead(worker.pid)


class ApiServer(BaseApplication):
    def __init__(self, config: Config, database_url: str, options: dict | None = None,
                 app_factory: AppFactory | None = None) -> None:
        self.config = config
        self.database_url = database_url
        self.options = {
            "bind": f"{config.api.host}:{config.api.port}",
            "workers": config.api.workers,
            "threads": config.api.threads,
            "worker_class": "sync" if config.api.threads == 1 else "gthread",
            "keepalive": 5,
            "timeout": worker_timeout_s(config),
            "graceful_timeout": max(1, int(config.daemon.shutdown_timeout) - 2),
            "proc_name": "transfer-daemon api",
            "logger_class": PipelineLogger,
            "child_exit": _child_exit,
            "accesslog": None,
            **(options or {}),
        }
        self.app_factory = app_factory
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        if self.app_factory is not None:
            return self.app_factory(self.config, self.database_url)
        from transfer_daemon.api import create_app

        return create_app(self.config, self.database_url)


def run_api(config: Config, database_url: str, *, options: dict | None = None,
            app_factory: AppFactory | None = None) -> None:
    """Serve the API until SIGTERM/SIGINT (gunicorn's graceful stop), then return. `app_factory`
    builds each worker's app in place of `create_app` (a benchmark adds its baseline route)."""
    metrics.init_multiprocess(config.daemon.data_dir)
    log.info("started api on %s:%d with %d workers x %d threads", config.api.host, config.api.port,
             config.api.workers, config.api.threads)
    try:
        ApiServer(config, database_url, options, app_factory).run()
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
    log.info("stopped api")
