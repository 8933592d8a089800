"""Pure exponential backoff with jitter, handed `now`.

The same class paces child restarts in the supervisor and retries of upstream calls:
1, 2, 4, 8 … capped at `maximum` seconds, each delay scaled by a random factor in
[1 - jitter, 1 + jitter], and reset once a run has been stable for `reset_after` seconds.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


def backoff_delay(attempt: int, initial: float = 1.0, maximum: float = 60.0) -> float:
    """Delay before retry number `attempt` (0-based), without jitter."""
    return min(maximum, initial * (2 ** min(attempt, 62)))


@dataclass
class Backoff:
    initial: float = 1.0
    maximum: float = 60.0
    jitter: float = 0.1
    reset_after: float = 60.0
    rng: random.Random = field(default_factory=random.Random, repr=False)
    attempt: int = 0
    started_at: float | None = None

    def started(self, now: float) -> None:
        """A run (child process, upstream call) began at `now`."""
        self.started_at = now

    def failed(self, now: float) -> float:
        """The run failed at `now`: return the delay before the next one.

        A run that lasted `reset_after` seconds or more counts as stable and resets the series.
        """
        if self.started_at is not None and now - self.started_at >= self.reset_after:
            self.attempt = 0
        delay = backoff_delay(self.attempt, self.initial, self.maximum)
        self.attempt += 1
        spread = delay * self.jitter
        return max(0.0, min(self.maximum * (1 + self.jitter), delay + self.rng.uniform(-spread, spread)))

    def succeeded(self) -> None:
        self.attempt = 0
        self.started_at = None
