"""The key's token bucket in Redis, for hosts that share an API key (`cache.backend = "redis"`).

The same GCRA as `limiter.reserve`, computed inside Redis by one Lua script: read the TAT, decide,
write the new TAT, all atomic on the server and on the server's clock (`TIME`), so no two hosts
can take the same slot and their clocks need not agree. The caller sleeps the wait it is handed,
outside Redis, like the file limiter's callers. The state expires once the bucket is full again.

When Redis cannot be reached the host falls back to its own file bucket (logged once a minute)
and asks Redis again RETRY_REDIS_S later, so a down Redis costs one timeout, not one per call:
the key's rate then holds per host, not across hosts, until Redis answers again.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

import redis

from transfer_daemon.redact import redact_url
from transfer_daemon.upstream.limiter import MAX_QUEUE_S, BoundedWaits, Limiter, bucket_name

log = logging.getLogger(__name__)

#: a call never waits on an unreachable Redis longer than this before the file bucket decides
REDIS_TIMEOUT_S = 1.0
RETRY_REDIS_S = 5.0
FAILURE_LOG_EVERY_S = 60.0

# KEYS[1] bucket; ARGV interval, burst, max wait (< 0: unbounded), max queue -> {taken 0|1, wait}
# Numbers go back as strings: Redis turns a Lua number into an integer.
GCRA_SCRIPT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local interval, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local max_wait, max_queue = tonumber(ARGV[3]), tonumber(ARGV[4])
local stored = redis.call('GET', KEYS[1])
local tat = stored and tonumber(stored) or 0
if tat - now > max_queue then tat = now end
local start = math.max(tat, now)
local wait = math.max(0, start - (burst - 1) * interval - now)
if max_wait >= 0 and wait > max_wait then
  return {0, string.format('%.6f', wait)}
end
local next_tat = start + interval
redis.call('SET', KEYS[1], string.format('%.6f', next_tat), 'PX', math.ceil((next_tat - now) * 1000) + 1000)
return {1, string.format('%.6f', wait)}
"""


class RedisLimiter(BoundedWaits):
    """The bucket of `key` in Redis at `url` (keys under `prefix`), shared by every host using it."""

    def __init__(self, url: str, prefix: str, key: str, rate_per_sec: float, burst: int, *, fallback: Limiter,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if rate_per_sec <= 0 or burst < 1:
            raise ValueError("rate_per_sec must be > 0 and burst >= 1")
        super().__init__()
        self.url = url
        self.where = redact_url(url)
        self.bucket = f"{prefix}limiter:{bucket_name(key)}"
        self.interval = 1.0 / rate_per_sec
        self.burst = burst
        self.fallback = fallback
        self._sleep = sleep
        self._script = None
        self._pid = 0
        self._last_warning = float("-inf")
        self._down_until = float("-inf")

    def _gcra(self):
        # a client inherited through fork would share its socket with the parent: open our own
        if self._script is None or self._pid != os.getpid():
            client = redis.Redis.from_url(self.url, socket_timeout=REDIS_TIMEOUT_S,
                                          socket_connect_timeout=REDIS_TIMEOUT_S, health_check_interval=30)
            self._script = client.register_script(GCRA_SCRIPT)
            self._pid = os.getpid()
        return self._script

    def take_slot(self, max_wait: float | None) -> float | None:
        if time.monotonic() < self._down_until:
            return self.fallback.take_slot(max_wait)
        args = [self.interval, self.burst, -1 if max_wait is None else max_wait, MAX_QUEUE_S]
        try:
            taken, wait = self._gcra()(keys=[self.bucket], args=args)
        except redis.RedisError as exc:
            self._failed(exc)
            return self.fallback.take_slot(max_wait)
        return float(wait) if int(taken) else None

    def _failed(self, exc: redis.RedisError) -> None:
        now = time.monotonic()
        self._down_until = now + RETRY_REDIS_S
        if now - self._last_warning >= FAILURE_LOG_EVERY_S:
            self._last_warning = now
            log.warning("failed shared rate limiter on %s: %s: %s (limiting this host alone)", self.where,
                        type(exc).__name__, redact_url(str(exc)))

    def close(self) -> None:
        if self._script is not None and self._pid == os.getpid():
            self._script.registered_client.close()
        self._script = None
        self.fallback.close()
