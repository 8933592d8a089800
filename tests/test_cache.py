"""The warm cache: warm() precomputes page 1, keys carry data versions, hits are counted."""

from __future__ import annotations

import multiprocessing
import time

import psycopg
import pytest

from tests.api_support import make_config, migrated, transfer, write
from transfer_daemon import cache, metrics
from transfer_daemon.api import create_app
from transfer_daemon.cache import WarmCache, page_key


@pytest.fixture
def setup(make_database, tmp_path):
    url = migrated(make_database())
    write(url, 1, [transfer(1, n) for n in range(5)])
    write(url, 25, [transfer(25, n) for n in range(3)])
    config = make_config(tmp_path)
    app = create_app(config, url)
    yield config, url, app
    app.extensions["transfer_daemon"].close()


def hits_and_misses() -> tuple[float, float]:
    """(hits, misses) counted by this process: hit_ratio() sums the multiprocess files, which miss
    counts made before a test switched the process to multiprocess mode."""
    totals = {s.labels["result"]: s.value for s in metrics.CACHE_REQUESTS.collect()[0].samples
              if s.name.endswith("_total")}
    return totals.get("hit", 0.0), totals.get("miss", 0.0)


def test_warm_precomputes_page_one_of_each_chain_and_the_aggregate(setup):
    config, url, app = setup
    with psycopg.connect(url, autocommit=True) as conn:
        assert cache.warm(config, conn) == 3
    client = app.test_client()
    before = hits_and_misses()
    for query in ("chainId=1", "chainId=25", ""):
        assert client.get(f"/api/transfers?{query}").status_code == 200
    after = hits_and_misses()
    assert (after[0] - before[0], after[1] - before[1]) == (3, 0)


def test_a_hit_answers_exactly_what_the_store_answers(setup):
    config, url, app = setup
    client = app.test_client()
    cold = client.get("/api/transfers?chainId=1&page=1&pageSize=25").get_json()
    with psycopg.connect(url, autocommit=True) as conn:
        cache.warm(config, conn)
    hits = hits_and_misses()[0]
    warm = client.get("/api/transfers?chainId=1").get_json()
    assert hits_and_misses()[0] == hits + 1
    assert warm["items"] == cold["items"] and warm["nextCursor"] == cold["nextCursor"]


def test_a_commit_followed_by_warm_is_visible_at_once(setup):
    config, url, app = setup
    client = app.test_client()
    with psycopg.connect(url, autocommit=True) as conn:
        cache.warm(config, conn)
    assert client.get("/api/transfers?chainId=1").get_json()["items"][0]["blockNumber"] == 104
    write(url, 1, [transfer(1, 5)])
    with psycopg.connect(url, autocommit=True) as conn:
        cache.warm(config, conn)
    for query in ("chainId=1", ""):
        assert client.get(f"/api/transfers?{query}").get_json()["items"][0]["blockNumber"] == 105


def test_without_warm_a_commit_is_visible_once_the_snapshot_expires(setup):
    config, url, app = setup
    client = app.test_client()
    client.get("/api/transfers?chainId=25")
    write(url, 25, [transfer(25, 3)])
    deadline = time.monotonic() + cache.SNAPSHOT_MAX_AGE_S + 5
    while client.get("/api/transfers?chainId=25").get_json()["items"][0]["blockNumber"] != 103:
        assert time.monotonic() < deadline, "new row never became visible"
        time.sleep(0.1)


def test_page_keys_change_with_the_version_of_any_covered_chain():
    one = {1: cache.ChainState(4, None, None), 25: cache.ChainState(7, None, None)}
    two = {1: cache.ChainState(4, None, None), 25: cache.ChainState(8, None, None)}
    assert page_key((1,), 25, "desc", one) == page_key((1,), 25, "desc", two)
    assert page_key((1, 25), 25, "desc", one) != page_key((1, 25), 25, "desc", two)
    assert page_key((1,), 25, "desc", one) != page_key((1,), 25, "asc", one)


def _put_in_child(shared: WarmCache) -> None:
    assert shared.get("from-parent") == b"x"
    shared.put("from-child", b"hello")


def test_a_handle_made_before_fork_reopens_in_the_child(tmp_path):
    shared = WarmCache.on_disk(tmp_path / "cache", 60)
    shared.put("from-parent", b"x")
    parent_handle = shared.backend
    child = multiprocessing.get_context("fork").Process(target=_put_in_child, args=(shared,))
    child.start()
    child.join(10)
    assert child.exitcode == 0
    assert shared.get("from-child") == b"hello" and shared.backend is parent_handle
    shared.close()


def test_a_served_page_is_kept_in_process_until_its_ttl(tmp_path):
    shared = WarmCache.on_disk(tmp_path / "cache", ttl_s=0.5)
    key = page_key((1,), 25, "desc", {1: cache.ChainState(3, None, None)})
    shared.put_page(key, b'"items":[]')
    shared.backend.delete(key)  # another process's view of the backend no longer matters for this key
    hits = hits_and_misses()[0]
    assert shared.page(key) == b'"items":[]'
    assert hits_and_misses()[0] == hits + 1
    deadline = time.monotonic() + 5
    while shared.page(key) is not None:
        assert time.monotonic() < deadline, "the in-process page outlived the cache TTL"
        time.sleep(0.05)
    shared.close()
