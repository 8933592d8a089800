"""Connection pools, one per process.

Open a pool only after fork: a pool (or any connection) inherited from the parent shares its
sockets, and closing it in the child would terminate the parent's sessions.
"""

from __future__ import annotations

import logging

import psycopg_pool

from transfer_daemon.redact import redact_url

log = logging.getLogger(__name__)


def open_pool(url: str, min_size: int, max_size: int, name: str) -> psycopg_pool.ConnectionPool:
    """An opened pool of autocommit connections (store writers open their own transactions)."""
    pool = psycopg_pool.ConnectionPool(
        url,
        min_size=min_size,
        max_size=max(max_size, min_size, 1),
        name=name,
        kwargs={"autocommit": True},
        check=psycopg_pool.ConnectionPool.check_connection,
        open=False,
    )
    pool.open()
    log.info("opened pool name=%s database=%s max=%d", name, redact_url(url), max_size)
    return pool
