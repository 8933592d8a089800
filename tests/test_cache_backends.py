"""Cache backend semantics, the same for diskcache and Redis: bytes with a TTL, the versions snapshot,
one client per process opened after the fork, sharing between processes (and hosts)."""

from __future__ import annotations

import logging
import multiprocessing
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest
from redis_support import REDIS_URL, own_prefix

from tests.api_support import make_config, migrated, transfer, write
from tests.test_cache import hits_and_misses
from transfer_daemon import cache, metrics
from transfer_daemon.api import create_app
from transfer_daemon.cache import ChainState, WarmCache
from transfer_daemon.cache.backends import DiskBackend, RedisBackend, open_backend
from transfer_daemon.config import CacheConfig, Config

FORK = multiprocessing.get_context("fork")
BACKENDS = ["diskcache", "redis"]


@pytest.fixture(autouse=True, scope="module")
def multiprocess_metrics(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Counters in files from the first lookup on, as create_app sets it up: a counter child made
    before the switch would stay in memory and vanish from every later /metrics of this process."""
    metrics.init_multiprocess(tmp_path_factory.mktemp("metrics"))


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    yield from own_prefix()


def cache_settings(kind: str, request: pytest.FixtureRequest) -> CacheConfig:
    if kind == "diskcache":
        return CacheConfig()
    prefix = request.getfixturevalue("redis_prefix")
    return CacheConfig(backend="redis", url=REDIS_URL, prefix=prefix)


def with_cache(config: Config, settings: CacheConfig) -> Config:
    return replace(config, cache=replace(settings, ttl_s=config.cache.ttl_s))


@pytest.fixture(params=BACKENDS)
def settings(request: pytest.FixtureRequest) -> CacheConfig:
    return cache_settings(request.param, request)


@pytest.fixture
def warm_cache(settings: CacheConfig, tmp_path: Path):
    shared = WarmCache(lambda: open_backend(settings, tmp_path), 60)
    yield shared
    shared.close()


def wait_until_gone(read, timeout: float) -> float:
    started = time.monotonic()
    while read() is not None:
        assert time.monotonic() - started < timeout, "entry outlived its TTL"
        time.sleep(0.05)
    return time.monotonic() - started


def test_bytes_round_trip_exactly_and_a_missing_key_is_none(settings, tmp_path):
    backend = open_backend(settings, tmp_path)
    try:
        assert backend.get("absent") is None
        blob = bytes(range(256)) * 4096  # 1 MiB, every byte value
        backend.set("blob", blob, 60)
        backend.set("empty", b"", 60)
        assert backend.get("blob") == blob and backend.get("empty") == b""
        backend.set("blob", b"second", 60)
        assert backend.get("blob") == b"second"
        backend.delete("blob")
        assert backend.get("blob") is None and backend.get("empty") == b""
    finally:
        backend.close()


def test_an_entry_expires_after_its_ttl_and_not_before(settings, tmp_path):
    backend = open_backend(settings, tmp_path)
    try:
        backend.set("short", b"x", 0.5)
        backend.set("long", b"y", 60)
        assert backend.get("short") == b"x"
        assert 0.3 < wait_until_gone(lambda: backend.get("short"), 5)
        assert backend.get("long") == b"y"
    finally:
        backend.close()


def test_the_snapshot_round_trips_and_expires(warm_cache):
    snapshot = {1: ChainState(7, 1_714_000_000.5, None), 25: ChainState(0, None, None)}
    assert warm_cache.snapshot() is None
    warm_cache.put_snapshot(snapshot)
    assert warm_cache.snapshot() == snapshot
    wait_until_gone(warm_cache.snapshot, cache.SNAPSHOT_MAX_AGE_S + 3)


def test_gets_count_hits_and_misses_but_peeks_do_not(warm_cache):
    warm_cache.put("page", b"fragment")
    before = hits_and_misses()
    assert warm_cache.get("page") == b"fragment" and warm_cache.get("nothing") is None
    assert warm_cache.peek("page") == b"fragment"
    after = hits_and_misses()
    assert (after[0] - before[0], after[1] - before[1]) == (1, 1)


def _child_round_trip(shared: WarmCache, parent_backend_id: int, results) -> None:
    results.put((shared.get("from-parent"), id(shared.backend) != parent_backend_id))
    shared.put("from-child", b"hello")
    shared.close()


def test_a_cache_made_before_fork_opens_its_own_client_in_the_child(warm_cache):
    warm_cache.put("from-parent", b"x")
    parent_backend = warm_cache.backend
    results = FORK.Queue()
    child = FORK.Process(target=_child_round_trip, args=(warm_cache, id(parent_backend), results))
    child.start()
    child.join(20)
    assert child.exitcode == 0
    assert results.get(timeout=5) == (b"x", True)
    assert warm_cache.get("from-child") == b"hello" and warm_cache.backend is parent_backend


def test_redis_keys_carry_the_prefix_and_deployments_do_not_see_each_other(redis_prefix):
    import redis

    ours = RedisBackend(REDIS_URL, redis_prefix)
    theirs = RedisBackend(REDIS_URL, redis_prefix + "other:")
    raw = redis.Redis.from_url(REDIS_URL)
    try:
        ours.set("snapshot", b"v1", 60)
        assert raw.get(redis_prefix + "snapshot") == b"v1"
        assert theirs.get("snapshot") is None
        assert 0 < raw.pttl(redis_prefix + "snapshot") <= 60_000
    finally:
        ours.close()
        theirs.close()
        raw.close()


def test_an_unreachable_redis_is_a_miss_with_one_redacted_warning(caplog):
    secret = f"pw-{uuid.uuid4().hex}"
    backend = RedisBackend(f"redis://:{secret}@127.0.0.1:9/0", "td:", timeout_s=0.2)
    with caplog.at_level(logging.WARNING, logger="transfer_daemon.cache.backends"):
        backend.set("k", b"v", 60)
        assert backend.get("k") is None
        backend.delete("k")
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "failed cache set on redis://:***@127.0.0.1:9/0" in warnings[0]
    assert secret not in caplog.text
    backend.close()


def test_open_backend_follows_the_config(tmp_path, redis_prefix):
    disk = open_backend(CacheConfig(), tmp_path)
    shared = open_backend(CacheConfig(backend="redis", url=REDIS_URL, prefix=redis_prefix), tmp_path)
    try:
        assert isinstance(disk, DiskBackend) and disk.directory == tmp_path / "cache"
        assert isinstance(shared, RedisBackend) and shared.prefix == redis_prefix
    finally:
        disk.close()
        shared.close()


@pytest.mark.parametrize("kind", BACKENDS)
def test_pages_warmed_on_one_host_are_hits_for_the_api_of_another(kind, request, make_database, tmp_path):
    """Host A's worker warms; host B's API (another data_dir) answers page 1 from the cache — with
    Redis. With diskcache each host has its own cache: host B misses and computes the page itself."""
    url = migrated(make_database())
    write(url, 1, [transfer(1, n) for n in range(5)])
    write(url, 25, [transfer(25, n) for n in range(3)])
    settings = cache_settings(kind, request)
    host_a = with_cache(make_config(tmp_path / "a"), settings)
    host_b = with_cache(make_config(tmp_path / "b"), settings)
    with psycopg.connect(url, autocommit=True) as conn:
        assert cache.warm(host_a, conn) == 3
    app = create_app(host_b, url)
    try:
        client = app.test_client()
        before = hits_and_misses()
        pages = [client.get(f"/api/transfers?{query}") for query in ("chainId=1", "chainId=25", "")]
        after = hits_and_misses()
    finally:
        app.extensions["transfer_daemon"].close()
    assert [page.status_code for page in pages] == [200, 200, 200]
    assert pages[0].get_json()["items"][0]["blockNumber"] == 104
    hits, misses = after[0] - before[0], after[1] - before[1]
    assert (hits, misses) == ((3, 0) if kind == "redis" else (0, 3))
