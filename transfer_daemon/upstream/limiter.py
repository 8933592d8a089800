"""A token bucket per API key (per RPC URL), shared by every process that uses the key.

The bucket is kept as GCRA state — one float, the "theoretical arrival time" (TAT) of the next
call — in a small file in `limiter_dir`, read and written under `fcntl.flock`. A caller reserves
the next slot under the lock and sleeps outside it, so waiting processes queue in order and the
lock is held for microseconds. Any stream it lets through holds at most `burst + rate × T` calls in
any window of T seconds, across all processes. Hand-written: diskcache's `throttle` wraps a
function and polls, and cannot report the wait; this is one lock, one read, one write, one sleep.
Hosts that share a key share its bucket in Redis instead (`redis_limiter.py`, the same arithmetic).

The clock is the wall clock (`time.time`), the only one every process on the host agrees on
across restarts; a TAT implausibly far ahead (a clock step back, a copied file) is reset.

A caller that cannot wait long (an API request) bounds its waits with `waiting_at_most(seconds)`:
a call that would wait longer takes no slot and raises `LimiterBusy` at once.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from transfer_daemon.errors import UpstreamError

_STATE = struct.Struct("<d")
MAX_QUEUE_S = 3600.0  # a TAT further ahead than this is a clock step, not a queue


class LimiterBusy(UpstreamError):
    """The key's bucket would make this call wait longer than its caller allows; no slot was taken."""

    def __init__(self, allowed: float) -> None:
        super().__init__(f"rate limiter busy: no slot within {allowed:.2f}s", retryable=False)


def reserve(tat: float, now: float, interval: float, burst: int) -> tuple[float, float]:
    """GCRA: (stored TAT, now) -> (new TAT, seconds to wait before the call may go)."""
    if tat - now > MAX_QUEUE_S:
        tat = now
    tolerance = (burst - 1) * interval
    start = max(tat, now)
    wait = max(0.0, start - tolerance - now)
    return start + interval, wait


def bucket_name(key: str) -> str:
    """What a key's bucket is stored under: a digest, so neither a file name nor a Redis key shows it."""
    return hashlib.sha256(key.encode()).hexdigest()[:24]


class BoundedWaits:
    """`acquire()` over a bucket's `take_slot`; waits are bounded per thread by `waiting_at_most`."""

    _sleep: Callable[[float], None]

    def __init__(self) -> None:
        self._local = threading.local()

    def take_slot(self, max_wait: float | None) -> float | None:
        """Reserve the next slot: the seconds until it, or None (nothing reserved) beyond `max_wait`."""
        raise NotImplementedError

    @contextmanager
    def waiting_at_most(self, seconds: float) -> Iterator[None]:
        """The calls this thread makes inside the block wait at most `seconds` in all."""
        outer = getattr(self._local, "left", None)
        self._local.left = seconds if outer is None else min(outer, seconds)
        try:
            yield
        finally:
            self._local.left = outer

    def acquire(self) -> float:
        """Block until this process may make one call; returns the seconds it waited."""
        left = getattr(self._local, "left", None)
        wait = self.take_slot(left)
        if wait is None:
            raise LimiterBusy(left or 0.0)
        if left is not None:
            self._local.left = left - wait
        if wait > 0:
            self._sleep(wait)
        return wait


class Limiter(BoundedWaits):
    """The bucket of `key` in a file under `directory`, shared by the processes of one host."""

    def __init__(self, directory: str | os.PathLike, key: str, rate_per_sec: float, burst: int = 1, *,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep) -> None:
        if rate_per_sec <= 0 or burst < 1:
            raise ValueError("rate_per_sec must be > 0 and burst >= 1")
        super().__init__()
        self.path = Path(directory) / f"{bucket_name(key)}.bucket"
        self.interval = 1.0 / rate_per_sec
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._thread_lock = threading.Lock()  # flock does not exclude threads sharing one descriptor
        self._fd: int | None = None
        self._pid = 0

    def _descriptor(self) -> int:
        # A descriptor inherited through fork shares its flock with the parent: open our own.
        if self._fd is None or self._pid != os.getpid():
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            self._pid = os.getpid()
        return self._fd

    def take_slot(self, max_wait: float | None) -> float | None:
        with self._thread_lock:
            fd = self._descriptor()
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                raw = os.pread(fd, _STATE.size, 0)
                tat = _STATE.unpack(raw)[0] if len(raw) == _STATE.size else 0.0
                tat, wait = reserve(tat, self._clock(), self.interval, self.burst)
                if max_wait is not None and wait > max_wait:
                    return None
                os.pwrite(fd, _STATE.pack(tat), 0)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        return wait

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None
