"""Where the warm cache keeps its bytes: diskcache on one host, Redis when several hosts share it.

A backend stores bytes under string keys, each with a time to live, and nothing more: the warm
cache serializes pages, the versions snapshot and upstream answers itself, so both backends hold
exactly the same values. A backend is a client of one process; `WarmCache` opens it after the
fork (it checks the pid) and never uses one it inherited.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Protocol

import diskcache
import redis

from transfer_daemon.config import CacheConfig
from transfer_daemon.redact import redact_url

log = logging.getLogger(__name__)

DISK_SIZE_LIMIT = 256 * 2**20
#: a request never waits longer than this on an unreachable Redis: it answers from the store
REDIS_TIMEOUT_S = 1.0
#: one warning per this many seconds while Redis keeps failing (requests arrive by the hundred)
FAILURE_LOG_EVERY_S = 60.0


class CacheBackend(Protocol):
    def get(self, key: str) -> bytes | None: ...

    def set(self, key: str, value: bytes, ttl_s: float) -> None: ...

    def delete(self, key: str) -> None: ...

    def close(self) -> None: ...


class DiskBackend:
    """diskcache in a directory (data_dir/cache): shared by the processes of one host."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        self._cache = diskcache.Cache(str(self.directory), size_limit=DISK_SIZE_LIMIT)

    def get(self, key: str) -> bytes | None:
        value = self._cache.get(key)
        # a cache directory written by an older version may still hold pickled objects
        return value if isinstance(value, bytes) else None

    def set(self, key: str, value: bytes, ttl_s: float) -> None:
        self._cache.set(key, value, expire=ttl_s)

    def delete(self, key: str) -> None:
        self._cache.delete(key)

    def close(self) -> None:
        self._cache.close()


class RedisBackend:
    """Redis shared by several hosts; every key carries `prefix` (one per deployment).

    An unreachable Redis degrades to misses (the store answers) and failed writes, never to an
    error for the client: the cache is an accelerator, not a source of truth.
    """

    def __init__(self, url: str, prefix: str, *, timeout_s: float = REDIS_TIMEOUT_S) -> None:
        self.prefix = prefix
        self.where = redact_url(url)
        self._client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                                            health_check_interval=30)
        self._last_warning = float("-inf")

    def get(self, key: str) -> bytes | None:
        try:
            return self._client.get(self.prefix + key)
        except redis.RedisError as exc:
            self._failed("get", exc)
            return None

    def set(self, key: str, value: bytes, ttl_s: float) -> None:
        try:
            self._client.set(self.prefix + key, value, px=max(1, round(ttl_s * 1000)))
        except redis.RedisError as exc:
            self._failed("set", exc)

    def delete(self, key: str) -> None:
        try:
            self._client.delete(self.prefix + key)
        except redis.RedisError as exc:
            self._failed("delete", exc)

    def close(self) -> None:
        self._client.close()

    def _failed(self, operation: str, exc: redis.RedisError) -> None:
        now = time.monotonic()
        if now - self._last_warning >= FAILURE_LOG_EVERY_S:
            self._last_warning = now
            log.warning("failed cache %s on %s: %s: %s (answering from the store)", operation, self.where,
                        type(exc).__name__, redact_url(str(exc)))


def open_backend(settings: CacheConfig, data_dir: str | os.PathLike) -> CacheBackend:
    """The configured backend; call it in the process that will use it (after the fork)."""
    if settings.backend == "redis":
        backend = RedisBackend(settings.url, settings.prefix)
        log.info("opened cache on %s (pid %d)", backend.where, os.getpid())
        return backend
    return DiskBackend(Path(data_dir) / "cache")
