"""The key's bucket in Redis: the file limiter's arithmetic, held across hosts, and a fallback when
Redis is gone. Needs a Redis at 127.0.0.1:6379 (or TRANSFERS_TEST_REDIS_URL); skipped loudly without."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis_support import REDIS_URL, keys_under, own_prefix

from transfer_daemon.config import CacheConfig, ChainConfig
from transfer_daemon.upstream import make_limiter, share_limiters
from transfer_daemon.upstream.limiter import Limiter, LimiterBusy
from transfer_daemon.upstream.redis_limiter import RedisLimiter


@pytest.fixture
def prefix() -> Iterator[str]:
    yield from own_prefix()


def redis_limiter(tmp_path: Path, prefix: str, rate: float, burst: int, url: str = REDIS_URL) -> RedisLimiter:
    return RedisLimiter(url, prefix, "SHARED_KEY", rate, burst, fallback=Limiter(tmp_path, "SHARED_KEY", rate, burst),
                        sleep=lambda s: None)


def test_the_script_lets_a_burst_through_then_spaces_calls(tmp_path, prefix):
    limiter = redis_limiter(tmp_path, prefix, 2.0, 2)
    waits = [limiter.take_slot(None) for _ in range(5)]
    assert waits == pytest.approx([0.0, 0.0, 0.5, 1.0, 1.5], abs=0.05)
    assert [k for k in keys_under(prefix)] == [limiter.bucket] and "SHARED_KEY" not in limiter.bucket
    limiter.close()


def test_a_bounded_call_takes_no_slot_in_redis(tmp_path, prefix):
    limiter = redis_limiter(tmp_path, prefix, 1.0, 1)
    assert limiter.take_slot(None) == pytest.approx(0.0, abs=0.05)
    with limiter.waiting_at_most(0.2), pytest.raises(LimiterBusy):
        limiter.acquire()
    assert limiter.take_slot(None) == pytest.approx(1.0, abs=0.05)  # the refused call reserved nothing
    limiter.close()


def test_without_redis_the_host_bucket_limits_alone(tmp_path, prefix, caplog):
    limiter = redis_limiter(tmp_path, prefix, 2.0, 1, url="redis://:pw-in-url@127.0.0.1:1/0")
    started = time.monotonic()
    waits = [limiter.take_slot(None) for _ in range(3)]
    assert waits == pytest.approx([0.0, 0.5, 1.0], abs=0.05)
    assert time.monotonic() - started < 1.0, "a down Redis is asked once, not at every call"
    failures = [r.getMessage() for r in caplog.records if "failed shared rate limiter" in r.getMessage()]
    assert len(failures) == 1 and "pw-in-url" not in failures[0]


def test_share_limiters_picks_redis_only_for_the_redis_backend(tmp_path, prefix):
    chain = ChainConfig(id=1, name="eth", kind="etherscan", contracts=("0x" + "11" * 20,),
                        base_url="http://127.0.0.1:9/api", api_key_env="K")
    try:
        share_limiters(CacheConfig(backend="redis", url=REDIS_URL, prefix=prefix))
        assert isinstance(make_limiter(chain, str(tmp_path)), RedisLimiter)
        share_limiters(CacheConfig())
        assert isinstance(make_limiter(chain, str(tmp_path)), Limiter)
    finally:
        share_limiters(CacheConfig())


RATE, BURST, SECONDS = 5.0, 1, 4.0


def _hammer(data_dir: str, cache: CacheConfig, results, start: float, deadline: float) -> None:
    chain = ChainConfig(id=1, name="eth", kind="etherscan", contracts=("0x" + "11" * 20,),
                        base_url="http://127.0.0.1:9/api", api_key_env="SHARED_KEY", rate_limit_per_sec=RATE,
                        rate_limit_burst=BURST)
    share_limiters(cache)
    limiter = make_limiter(chain, str(Path(data_dir) / "limiter"))
    time.sleep(max(0.0, start - time.time()))
    stamps = []
    while time.time() < deadline:
        limiter.acquire()
        stamps.append(time.time())
    results.put(stamps)


def busiest_second(stamps: list[float]) -> int:
    stamps, busiest, j = sorted(stamps), 0, 0
    for i, start in enumerate(stamps):
        while j < len(stamps) and stamps[j] < start + 1.0:
            j += 1
        busiest = max(busiest, j - i)
    return busiest


def hammer_from_two_hosts(tmp_path: Path, cache: CacheConfig) -> list[float]:
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    start = time.time() + 0.5
    hosts = [context.Process(target=_hammer, args=(str(tmp_path / name), cache, results, start, start + SECONDS))
             for name in ("host-a", "host-b")]
    for host in hosts:
        host.start()
    stamps = [s for _ in hosts for s in results.get(timeout=SECONDS + 30)]
    for host in hosts:
        host.join(timeout=10)
    return stamps


@pytest.mark.slow
def test_two_hosts_on_separate_data_dirs_hold_one_rate_through_redis(tmp_path, prefix):
    # apart, each host's file bucket lets the full rate through: twice the key's rate in all
    apart = hammer_from_two_hosts(tmp_path / "apart", CacheConfig())
    assert busiest_second(apart) >= 2 * RATE - 1
    shared = hammer_from_two_hosts(tmp_path / "shared", CacheConfig(backend="redis", url=REDIS_URL, prefix=prefix))
    assert busiest_second(shared) <= RATE + BURST, busiest_second(shared)
    assert len(shared) >= RATE * SECONDS * 0.9
