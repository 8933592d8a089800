"""The supervisor's pidfile, guarded by an flock so two starts cannot race.

The lock, not the pid written in the file, says whether a supervisor is alive: the kernel drops
it when the process dies however it dies, so a stale file (kill -9, power loss) is recovered
and a reused pid cannot fool us.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from transfer_daemon.errors import AlreadyRunning
from transfer_daemon.state import read_pid


class PidFile:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.fd: int | None = None

    def acquire(self) -> int | None:
        """Lock and claim the pidfile; returns the pid of a stale file it recovered, if any.

        Raises AlreadyRunning when a live supervisor holds it.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                raise AlreadyRunning(
                    f"already running (pid {read_pid(self.path) or '?'}, pidfile {self.path})"
                ) from None
            # The owner may have unlinked the file between our open and our lock: retry on the new one.
            if self._same_file(fd):
                break
            os.close(fd)
        self.fd = fd
        stale = read_pid(self.path)
        self.write(os.getpid())
        return stale

    def _same_file(self, fd: int) -> bool:
        try:
            on_disk = os.stat(self.path)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (on_disk.st_dev, on_disk.st_ino) == (mine.st_dev, mine.st_ino)

    def write(self, pid: int) -> None:
        """(Re)write our pid, e.g. after --detach forked us into a new process."""
        assert self.fd is not None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{pid}\n".encode(), 0)

    def close_inherited(self) -> None:
        """In a forked child: drop our copy of the descriptor so the lock dies with the supervisor."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def release(self) -> None:
        """Remove the file, then unlock (in that order, so no one locks a file we then delete)."""
        if self.fd is None:
            return
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        os.close(self.fd)
        self.fd = None
