"""What the daemon writes is its user's alone from the moment it exists: the process umask makes
every new directory 0700 and every new file 0600 (data directory, log, pidfile, state file, cache,
limiter buckets, the demo's config); what an earlier version left open is closed at start.

A directory may keep its group's search bit: run as root, the embedded Postgres's own user
reaches pgdata through it (db.bootstrap), and it lists nothing."""

from __future__ import annotations

import os
import stat
from pathlib import Path

PRIVATE_UMASK = 0o077
_OPEN_FILE = 0o077
_OPEN_DIRECTORY = 0o067  # group search (x) alone is not open


def make_private(data_dir: str | os.PathLike, *files: str | os.PathLike) -> list[tuple[Path, int]]:
    """Set the umask, create `data_dir` (0700) and close it and `files` (when they exist) to
    group and others; returns (path, old mode) of each one that was open, for the log."""
    os.umask(PRIVATE_UMASK)
    directory = Path(data_dir)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    tightened = []
    for path in (directory, *map(Path, files)):
        try:
            status = path.stat()
        except FileNotFoundError:
            continue
        mode, opened = stat.S_IMODE(status.st_mode), _OPEN_DIRECTORY if stat.S_ISDIR(status.st_mode) else _OPEN_FILE
        if mode & opened:
            path.chmod(mode & 0o700)
            tightened.append((path, mode))
    return tightened
