"""`transfer-daemon start`: private files, the pidfile, detaching, the log pipeline, then the
supervisor's loop until it stops."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from transfer_daemon.config import Config, dotenv_world_readable, load_config
from transfer_daemon.daemon.alert_monitor import AlertMonitor
from transfer_daemon.daemon.alert_sinks import build_sinks
from transfer_daemon.daemon.child import RestartPolicy
from transfer_daemon.daemon.children import SpecBuilder, database_plan
from transfer_daemon.daemon.logs import LogPipeline
from transfer_daemon.daemon.pidfile import PidFile
from transfer_daemon.daemon.private import make_private
from transfer_daemon.daemon.supervisor import Supervisor
from transfer_daemon.errors import TransferDaemonError

log = logging.getLogger(__name__)


def _detach() -> tuple[int | None, int | None]:
    """Double-fork away from the terminal.

    The original process gets (daemon pid, or 0 if it failed before being ready; None); the
    daemon gets (None, fd to write its pid on once ready).
    """
    read_fd, write_fd = os.pipe()
    first = os.fork()
    if first:
        os.close(write_fd)
        os.waitpid(first, 0)
        with os.fdopen(read_fd) as pipe:
            text = pipe.read().strip()
        return (int(text) if text.isdigit() else 0), None
    os.close(read_fd)
    os.setsid()
    if os.fork():
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    return None, write_fd


def _report_permissions(config: Config, opened: list[tuple[Path, int]]) -> None:
    exposed = dotenv_world_readable(config)
    if exposed:
        log.warning("insecure permissions on %s: other users can read the secrets in it; run chmod 600 %s",
                    exposed, exposed)
    for path, mode in opened:
        log.warning("closed %s to other users: its mode was %o, now %o", path, mode, mode & 0o700)


def run_start(config: Config, *, foreground: bool = True, announce: Callable[[str], None] = print,
              build_specs: SpecBuilder | None = None, policy: RestartPolicy | None = None) -> int:
    """`transfer-daemon start`: pidfile, logging, database, children; returns the exit status."""
    build_sinks(config.alerts)  # a receiver's variable unset: ConfigError naming it, before anything starts
    opened = make_private(config.daemon.data_dir, *filter(None, [config.daemon.log_file]))
    pidfile = PidFile(config.daemon.pidfile)
    try:
        stale = pidfile.acquire()
    except OSError as exc:
        raise TransferDaemonError(f"cannot lock pidfile {config.daemon.pidfile}: {exc}") from None
    ready_fd = None
    if not foreground:
        daemon_pid, ready_fd = _detach()
        if daemon_pid is not None:
            if not daemon_pid:
                raise TransferDaemonError(f"start failed; see {config.daemon.log_file or 'the log'}")
            announce(f"transfer-daemon started (pid {daemon_pid}); log: {config.daemon.log_file}")
            return 0
        pidfile.write(os.getpid())
    try:
        pipeline = LogPipeline(config, to_stderr=foreground)
    except OSError as exc:
        pidfile.release()
        raise TransferDaemonError(f"cannot open log file {config.daemon.log_file}: {exc}") from None
    pipeline.install()
    _report_permissions(config, opened)
    if stale:
        log.warning("recovered stale pidfile %s (pid %d was not running)", config.daemon.pidfile, stale)

    def ready() -> None:
        if ready_fd is not None:
            os.write(ready_fd, f"{os.getpid()}\n".encode())
            os.close(ready_fd)

    supervisor = Supervisor(config, build_specs=build_specs or database_plan(), load=lambda: load_config(config.path),
                            pipeline=pipeline, pidfile=pidfile, policy=policy, on_ready=ready,
                            monitor=AlertMonitor if build_specs is None else None)
    return supervisor.run()
