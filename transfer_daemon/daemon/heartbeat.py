"""A heartbeat shared between the supervisor and one forked worker.

Eight bytes of anonymous shared memory (MAP_SHARED survives fork) hold the worker's last
`time.monotonic()`; CLOCK_MONOTONIC is system-wide on Linux, so the supervisor compares it with
its own clock. No file, no syscall per beat: workers may call it as often as they like.
"""

from __future__ import annotations

import mmap
import struct
import time

_DOUBLE = struct.Struct("d")


class Heartbeat:
    def __init__(self) -> None:
        self._memory = mmap.mmap(-1, _DOUBLE.size)
        self.beat()

    def beat(self) -> None:
        """Called by the worker: 'I am making progress'."""
        _DOUBLE.pack_into(self._memory, 0, time.monotonic())

    __call__ = beat

    def last(self) -> float:
        """Monotonic time of the last beat (the spawn time until the worker beats)."""
        return _DOUBLE.unpack_from(self._memory, 0)[0]

    def close(self) -> None:
        self._memory.close()
