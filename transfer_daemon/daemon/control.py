"""`transfer-daemon stop`: signal a running supervisor through its pidfile and wait for it."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

from transfer_daemon.config import Config
from transfer_daemon.errors import TransferDaemonError
from transfer_daemon.state import pid_alive, running_pid

STOP_MARGIN_S = 5.0


def stop_daemon(config: Config, *, echo: Callable[[str], None] = print, poll: float = 0.1) -> int:
    """SIGTERM the supervisor and wait until it is gone (shutdown_timeout + 5 s at most)."""
    path = config.daemon.pidfile
    pid = running_pid(path)
    if pid is None or not pid_alive(pid):
        raise TransferDaemonError(f"not running (no live supervisor holds {path})")
    os.kill(pid, signal.SIGTERM)
    echo(f"stopping transfer-daemon (pid {pid})")
    wait = config.daemon.shutdown_timeout + STOP_MARGIN_S
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            echo("stopped")
            return 0
        time.sleep(poll)
    raise TransferDaemonError(f"pid {pid} still running {wait:.0f}s after SIGTERM")
