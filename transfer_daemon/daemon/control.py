"""`transfer-daemon stop` and `resume`: signal a running supervisor through its pidfile."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import psycopg

from transfer_daemon import store
from transfer_daemon.config import Config
from transfer_daemon.errors import TransferDaemonError
from transfer_daemon.model import IngestEvent
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


def resume_chain(config: Config, chain_name: str, *, echo: Callable[[str], None] = print) -> int:
    """Clear a chain's recorded halt and pause, then make a running supervisor reload (SIGHUP), which
    also reads a fixed `.env` again. The chain's worker adopts the cleared record at its next sync,
    within one poll interval, without a restart; a worker restarted by the reload starts cleared."""
    from transfer_daemon.db.bootstrap import migrate, resolve_database_url

    chain = config.chain(chain_name)
    url = resolve_database_url(config)
    migrate(url)
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        halt, pause = store.get_stops(conn, chain.id)
        store.save_halt(conn, chain.id, None)
        store.save_pause(conn, chain.id, None)
        cleared = [f"halted ({halt.reason})"] if halt else []
        cleared += [f"paused ({pause.reason})"] if pause else []
        if cleared:
            store.record_event(conn, IngestEvent(chain.id, "resumed", f"resumed by operator: was {', '.join(cleared)}",
                                                 detail={"by": "operator"}))
    pid = running_pid(config.daemon.pidfile)
    running = pid is not None and pid_alive(pid)
    if running:
        os.kill(pid, signal.SIGHUP)
    state = f"was {' and '.join(cleared)}" if cleared else "was neither halted nor paused"
    where = f"its worker resumes within {chain.poll_interval_s}s" if running else "no supervisor is running"
    echo(f"resumed {chain.name}: {state}; {where}")
    return 0
