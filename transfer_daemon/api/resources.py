"""Per-process resources of the API: the connection pool, the warm cache, upstream sources.

Each is opened lazily on first use in the serving process (after the WSGI server forked),
never inherited; `pid` checks make a handle created before a fork reopen in the child.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import psycopg
import psycopg_pool
from flask import Flask, current_app

from transfer_daemon.cache import WarmCache
from transfer_daemon.config import ChainConfig, Config
from transfer_daemon.errors import StoreNotReady
from transfer_daemon.redact import redact_url
from transfer_daemon.upstream.http import RetryPolicy

log = logging.getLogger(__name__)
T = TypeVar("T")

#: seconds a request waits for a pooled connection before answering 503
POOL_TIMEOUT_S = 3.0
#: SQLSTATE classes meaning "the schema is not there (yet)": undefined table/function/column
_NOT_MIGRATED = ("42P01", "42883", "42703")


class QueryTimedOut(StoreNotReady):
    """Postgres cancelled a statement of this request at api.statement_timeout_s."""
#: seconds an answer of /api/cache-health or /status is reused by the process that made it: each
#: costs several statements per chain, and anyone may ask for them as often as they like
ANSWER_TTL_S = 1.0
#: upstream mode answers a waiting client: two attempts within 5 s, then the store answers
UPSTREAM_POLICY = RetryPolicy(max_attempts=2, max_total_s=5.0, initial_s=0.5, maximum_s=1.0)


def check_idle_connection(conn: psycopg.Connection) -> None:
    """Raise if the server closed `conn` while it sat in the pool — without a round trip.

    psycopg_pool's own check sends a query: one more round trip per request. A backend that
    was terminated (restart, kill) sends a FATAL notice and closes its socket, so reading what
    is waiting on the socket tells: the first read takes the notice, the second meets the close.
    """
    for _ in range(2):
        conn.pgconn.consume_input()  # OperationalError once the server has closed the socket
    if conn.pgconn.status != psycopg.pq.ConnStatus.OK:
        raise psycopg.OperationalError("connection closed by the server")


#: session settings for store.queries' statements (see query_session)
QUERY_SETTINGS = {"plan_cache_mode": "force_generic_plan", "jit": "off", "enable_sort": "off"}
#: pooled connections whose session has QUERY_SETTINGS now
_QUERY_SESSIONS: weakref.WeakSet[psycopg.Connection] = weakref.WeakSet()


def query_session(conn: psycopg.Connection, on: bool) -> None:
    """Give `conn` QUERY_SETTINGS (on) or the server's defaults (off).

    store.queries' statements cost more to plan than to run, and each is built so that a plan made
    once, without its values, is as good as one made per call (see store.queries.build_sql); so they
    are planned once per connection. They read a page of rows, which JIT compilation never pays for,
    yet a plan with a high cost estimate (a block range beyond the stored ones) would spend 40-130 ms
    compiling. Nor do they ever sort more than a page's candidates: made without the values, a plan
    guesses an address's rows from the number of distinct addresses (a handful), and would sort all of a
    busy wallet's rows rather than read them in order from the index; with sorts disabled, Postgres sorts
    only where no index gives the order. Every other statement keeps the server's defaults. A
    connection switches only when its use changes, so a stream of page requests pays no round trip
    for it.
    """
    if on == (conn in _QUERY_SESSIONS):
        return
    if on:
        conn.execute("; ".join(f"SET {name} = {value}" for name, value in QUERY_SETTINGS.items()), prepare=False)
        _QUERY_SESSIONS.add(conn)
    else:
        conn.execute("; ".join(f"RESET {name}" for name in QUERY_SETTINGS), prepare=False)
        _QUERY_SESSIONS.discard(conn)


def session_options(config: Config) -> str:
    """Settings of every API connection, for the server to hold each session to: the API only reads
    (a GET never writes), and no statement outlives api.statement_timeout_s. Postgres itself cancels
    the statement, so the backend stops even when the worker that waited for it was killed."""
    timeout_ms = max(1, round(config.api.statement_timeout_s * 1000))
    return f"-c default_transaction_read_only=on -c statement_timeout={timeout_ms}"


class Resources:
    def __init__(self, config: Config, database_url: str) -> None:
        self.config = config
        self.database_url = database_url
        self.cache = WarmCache.for_config(config)
        self.limiter_dir = str(Path(config.daemon.data_dir) / "limiter")
        self._lock = threading.Lock()
        self._pool: psycopg_pool.ConnectionPool | None = None
        self._pool_pid = 0
        self._sources: dict[int, object] = {}
        self._sources_pid = 0
        self._answers: dict[str, tuple[float, object]] = {}
        self.clock = time.monotonic  # of recent_answer; a test moves it by hand

    def pool(self) -> psycopg_pool.ConnectionPool:
        if self._pool_pid != os.getpid():
            with self._lock:
                if self._pool_pid != os.getpid():
                    self._pool = psycopg_pool.ConnectionPool(
                        self.database_url, min_size=self.config.database.pool_min,
                        max_size=self.config.database.pool_max, name=f"api-{os.getpid()}",
                        timeout=POOL_TIMEOUT_S, open=True,
                        kwargs={"autocommit": True, "options": session_options(self.config)},
                        # after a Postgres restart every idle connection is dead: replace it before use
                        # instead of answering one 503 per connection once the server is back
                        check=check_idle_connection,
                    )
                    self._pool_pid = os.getpid()
                    log.info("opened pool for api: %s", redact_url(self.database_url))
        return self._pool  # type: ignore[return-value]

    @contextmanager
    def connection(self, *, for_queries: bool = False) -> Iterator[psycopg.Connection]:
        """A pooled connection; every way the store can be unavailable becomes StoreNotReady.
        `for_queries`: it runs store.queries' statements only (see query_session)."""
        try:
            with self.pool().connection() as conn:
                query_session(conn, for_queries)
                yield conn
        except psycopg_pool.PoolTimeout as exc:
            raise StoreNotReady(f"no database connection: {exc}") from None
        except psycopg.errors.QueryCanceled:
            limit = self.config.api.statement_timeout_s
            raise QueryTimedOut(f"query cancelled (api.statement_timeout_s = {limit:g})") from None
        except psycopg.OperationalError as exc:
            raise StoreNotReady(f"database unavailable: {type(exc).__name__}") from None
        except psycopg.Error as exc:
            if exc.sqlstate in _NOT_MIGRATED:
                raise StoreNotReady("schema not migrated") from None
            raise

    def recent_answer(self, key: str, compute: Callable[[], T]) -> T:
        """`compute()`, or what it returned for `key` in this process less than ANSWER_TTL_S ago. (Two
        requests that miss at once both compute: cheaper than making one wait for the other.)"""
        now = self.clock()
        kept = self._answers.get(key)
        if kept is not None and kept[0] > now:
            return kept[1]  # type: ignore[return-value]
        answer = compute()
        self._answers[key] = (now + ANSWER_TTL_S, answer)
        return answer

    def source(self, chain: ChainConfig):
        """The chain's UpstreamSource (upstream data_source mode), one per process."""
        from transfer_daemon.upstream import make_source

        with self._lock:
            if self._sources_pid != os.getpid():
                self._sources, self._sources_pid = {}, os.getpid()
            if chain.id not in self._sources:
                # a request cannot wait through the workers' long retry schedule (minutes)
                self._sources[chain.id] = make_source(chain, limiter_dir=self.limiter_dir, retry=UPSTREAM_POLICY)
            return self._sources[chain.id]

    def close(self) -> None:
        if self._pool is not None and self._pool_pid == os.getpid():
            self._pool.close()
        self._pool, self._pool_pid = None, 0
        self.cache.close()


def init_app(app: Flask, config: Config, database_url: str) -> Resources:
    resources = Resources(config, database_url)
    app.extensions["transfer_daemon"] = resources
    return resources


def resources() -> Resources:
    return current_app.extensions["transfer_daemon"]
