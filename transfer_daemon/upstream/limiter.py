"""A token bucket per API key (per RPC URL), shared by every process that uses the key.

The bucket is kept as GCRA state — one float, the "theoretical arrival time" (TAT) of the next
call — in a small file in `limiter_dir`, read and written under `fcntl.flock`. A caller reserves
the next slot under the lock and sleeps outside it, so waiting processes queue in order and the
lock is held for microseconds. Any stream it lets through holds at most `burst + rate × T` calls in
any window of T seconds, across all processes. Hand-written: diskcache's `throttle` wraps a
function and polls, and cannot report the wait; this is one lock, one read, one write, one sleep.

The clock is the wall clock (`time.time`), the only one every process on the host agrees on
across restarts; a TAT implausibly far ahead (a clock step back, a copied file) is reset.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

_STATE = struct.Struct("<d")
MAX_QUEUE_S = 3600.0  # a TAT further ahead than this is a clock step, not a queue


def reserve(tat: float, now: float, interval: float, burst: int) -> tuple[float, float]:
    """GCRA: (stored TAT, now) -> (new TAT, seconds to wait before the call may go)."""
    if tat - now > MAX_QUEUE_S:
        tat = now
    tolerance = (burst - 1) * interval
    start = max(tat, now)
    wait = max(0.0, start - tolerance - now)
    return start + interval, wait


class Limiter:
    """`acquire()` blocks until this process may make one call; returns the seconds it waited."""

    def __init__(self, directory: str | os.PathLike, key: str, rate_per_sec: float, burst: int = 1, *,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep) -> None:
        if rate_per_sec <= 0 or burst < 1:
            raise ValueError("rate_per_sec must be > 0 and burst >= 1")
        self.path = Path(directory) / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.bucket"
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
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            self._pid = os.getpid()
        return self._fd

    def _reserve(self) -> float:
        with self._thread_lock:
            fd = self._descriptor()
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                raw = os.pread(fd, _STATE.size, 0)
                tat = _STATE.unpack(raw)[0] if len(raw) == _STATE.size else 0.0
                tat, wait = reserve(tat, self._clock(), self.interval, self.burst)
                os.pwrite(fd, _STATE.pack(tat), 0)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        return wait

    def acquire(self) -> float:
        wait = self._reserve()
        if wait > 0:
            self._sleep(wait)
        return wait

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None
