"""What the daemon writes is its user's alone from the moment it exists: the process umask makes
every new directory 0700 and every new file 0600 (data directory, log, pidfile, state file, cache,
limiter buckets, the demo's config); what an earlier version left open is closed at start."""

from __future__ import annotations

import os
import stat
from pathlib import Path

PRIVATE_UMASK = 0o077


def make_private(data_dir: str | os.PathLike, *files: str | os.PathLike) -> list[tuple[Path, int]]:
    """Set the umask, create `data_dir` (0700) and close it and `files` (when they exist) to
    group and others; returns (path, old mode) of each one that was open, for the log."""
    os.umask(PRIVATE_UMASK)
    directory = Path(data_dir)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    tightened = []
    for path in (directory, *map(Path, files)):
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:
            continue
        if mode & 0o077:
            path.chmod(mode & 0o700)
            tightened.append((path, mode))
    return tightened
