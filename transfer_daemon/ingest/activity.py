"""What the sync job tells a person tailing the log: one INFO line a minute per chain at most.

Every sync cycle is a DEBUG line. The INFO line sums the cycles since the last one — rows stored,
the blocks covered — and comes when a minute has passed and something was stored, so a healthy
idle chain writes one line a minute (or none when nothing arrived), never one per timer tick.
`Activity` is pure: it is handed `now` and returns the line's arguments when one is due.
"""

from __future__ import annotations

from dataclasses import dataclass

SUMMARY_EVERY_S = 60.0


@dataclass
class Activity:
    every_s: float = SUMMARY_EVERY_S
    cycles: int = 0
    rows: int = 0
    quarantined: int = 0
    first_block: int | None = None
    last_block: int | None = None
    since: float | None = None

    def note(self, now: float, lo: int, hi: int, new: int, quarantined: int) -> dict | None:
        """Count one committed cycle; the summary to log when one is due, else None."""
        if self.since is None:
            self.since = now
        self.cycles += 1
        self.rows += new
        self.quarantined += quarantined
        self.first_block = lo if self.first_block is None else min(self.first_block, lo)
        self.last_block = hi if self.last_block is None else max(self.last_block, hi)
        if now - self.since < self.every_s or not (self.rows or self.quarantined):
            return None
        summary = {"cycles": self.cycles, "rows": self.rows, "quarantined": self.quarantined,
                   "first_block": self.first_block, "last_block": self.last_block, "seconds": now - self.since}
        self.cycles = self.rows = self.quarantined = 0
        self.first_block = self.last_block = None
        self.since = now
        return summary
