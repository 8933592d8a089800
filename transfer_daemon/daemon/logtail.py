"""`transfer-daemon logs`: the last matching lines of the daemon log, and following it across rotations."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from transfer_daemon.config import Config
from transfer_daemon.daemon.logs import parse_line
from transfer_daemon.errors import TransferDaemonError

_FIRST_WINDOW = 256 * 1024


class LineFilter:
    """Keeps the lines of one chain at or above a level; continuation lines follow their record."""

    def __init__(self, chain: str | None, level: str | None) -> None:
        self.chain = chain
        self.minimum = logging.getLevelName(level.upper()) if level else logging.NOTSET
        self._keep = chain is None and not self.minimum

    def __call__(self, line: str) -> bool:
        parsed = parse_line(line)
        if parsed is None:
            return self._keep or (self.chain is None and not self.minimum)
        self._keep = (self.chain is None or parsed.chain == self.chain) and parsed.level >= self.minimum
        return self._keep


def _tail(handle: IO[bytes], size: int, count: int, chain: str | None, level: str | None) -> list[str]:
    """The last `count` kept lines, reading ever larger windows from the end of the file."""
    window = _FIRST_WINDOW
    while True:
        start = max(0, size - window)
        handle.seek(start)
        lines = handle.read(size - start).decode("utf-8", "replace").split("\n")
        if start:
            lines = lines[1:]  # the first line of a window is usually cut
        if lines and lines[-1] == "":
            lines.pop()
        keep = LineFilter(chain, level)
        kept = [line for line in lines if keep(line)]
        if len(kept) >= count or not start:
            return kept[-count:] if count else []
        window *= 4


def _follow(path: Path, position: int, poll: float) -> Iterator[str]:
    """New complete lines appended to `path`, across logrotate's rename or copytruncate."""
    handle = open(path, "rb")
    handle.seek(position)
    identity = os.fstat(handle.fileno()).st_ino
    pending = b""
    try:
        while True:
            chunk = handle.read()
            if chunk:
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    yield line.decode("utf-8", "replace")
                continue
            time.sleep(poll)
            try:
                current = os.stat(path)
            except FileNotFoundError:
                continue
            if current.st_ino != identity or current.st_size < handle.tell():
                for line in (pending + handle.read()).split(b"\n"):  # what came before the rename
                    if line and current.st_ino != identity:
                        yield line.decode("utf-8", "replace")
                handle.close()
                handle, pending = open(path, "rb"), b""
                identity = os.fstat(handle.fileno()).st_ino
    finally:
        handle.close()


def tail_logs(config: Config, *, follow: bool = False, chain: str | None = None, level: str | None = None,
              echo: Callable[[str], None] = print, lines: int = 200, poll: float = 0.25) -> int:
    """Print the last `lines` log lines of `chain` at `level` or above, then follow with -f."""
    if not config.daemon.log_file:
        raise TransferDaemonError("daemon.log_file is empty: the daemon logs to stderr only")
    path = Path(config.daemon.log_file)
    if chain is not None:
        try:
            chain = config.chain(chain).name
        except KeyError:
            pass  # a chain removed from the config still has lines in the log
    if not path.exists():
        raise TransferDaemonError(f"no log file at {path}")
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        for line in _tail(handle, size, lines, chain, level):
            echo(line)
    if not follow:
        return 0
    keep = LineFilter(chain, level)
    try:
        for line in _follow(path, size, poll):
            if keep(line):
                echo(line)
    except KeyboardInterrupt:
        pass
    return 0
