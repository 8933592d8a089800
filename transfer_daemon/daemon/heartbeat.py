"""A heartbeat shared between the supervisor and one forked worker, with the worker's backlog.

A few bytes of anonymous shared memory (MAP_SHARED survives fork) hold the worker's last
`time.monotonic()`; CLOCK_MONOTONIC is system-wide on Linux, so the supervisor compares it with
its own clock. Beside it the worker publishes its backlog — jobs running or due, and the span of
its backfill windows — which the supervisor copies into its state file for the report. No file,
no syscall per beat: workers may call it as often as they like. Each field is written whole by
one process and read by the other; a reader may see a beat and a backlog a tick apart, no worse.
"""

from __future__ import annotations

import mmap
import struct
import time
from typing import Any

_LAYOUT = struct.Struct("dqq")  # last beat, queued jobs, backfill span (-1: not published yet)
_UNPUBLISHED = -1


class Heartbeat:
    def __init__(self) -> None:
        self._memory = mmap.mmap(-1, _LAYOUT.size)
        _LAYOUT.pack_into(self._memory, 0, time.monotonic(), _UNPUBLISHED, _UNPUBLISHED)

    def beat(self) -> None:
        """Called by the worker: 'I am making progress'."""
        struct.pack_into("d", self._memory, 0, time.monotonic())

    __call__ = beat

    def publish(self, queued_jobs: int, backfill_span: int) -> None:
        """Called by the worker every tick: jobs running or due, and its backfill window span in
        blocks (0 until its backfill has planned a window)."""
        struct.pack_into("qq", self._memory, 8, queued_jobs, backfill_span)

    def last(self) -> float:
        """Monotonic time of the last beat (the spawn time until the worker beats)."""
        return _LAYOUT.unpack_from(self._memory, 0)[0]

    def load(self) -> dict[str, Any]:
        """What the worker last published, as state-file fields; empty until it publishes."""
        _, queued, span = _LAYOUT.unpack_from(self._memory, 0)
        if queued == _UNPUBLISHED:
            return {}
        return {"queued_jobs": queued, "backfill_span": span}

    def close(self) -> None:
        self._memory.close()
