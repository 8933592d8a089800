"""A real Redis for the cache tests: 127.0.0.1:6379 (or TRANSFERS_TEST_REDIS_URL), a key prefix per test.

Where no Redis answers, the tests that need it are skipped with a reason naming the URL.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import redis

REDIS_URL = os.environ.get("TRANSFERS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def require_redis() -> str:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"NO REDIS at {REDIS_URL} ({type(exc).__name__}): the Redis cache backend is NOT tested; "
                    "start redis-server or set TRANSFERS_TEST_REDIS_URL")
    finally:
        client.close()
    return REDIS_URL


def keys_under(prefix: str) -> list[str]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        return sorted(key.decode() for key in client.scan_iter(match=prefix + "*", count=1000))
    finally:
        client.close()


def drop_prefix(prefix: str) -> int:
    """Delete every key under `prefix`; returns how many there were."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
        return len(keys)
    finally:
        client.close()


def own_prefix() -> Iterator[str]:
    """For a fixture: a key prefix of the test's own on the test Redis; its keys are deleted afterwards."""
    require_redis()
    prefix = f"td-test-{uuid.uuid4().hex[:12]}:"
    yield prefix
    drop_prefix(prefix)
