"""The supervisor: forks one worker per chain and the API, keeps them alive, stops them cleanly.

Shaped like gunicorn's arbiter: signal handlers only queue the signal (and wake the loop through
`signal.set_wakeup_fd`); one short loop waits on that pipe and on the children's log pipes, then
dispatches signals, reaps, kills the stale and spawns what is due. Restart decisions live in the
pure `child.Child` state machine; this module does the I/O.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import os
import selectors
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, NoReturn

import setproctitle

from transfer_daemon.config import Config, ConfigError
from transfer_daemon.daemon.alert_monitor import AlertMonitor
from transfer_daemon.daemon.child import Child, ChildSpec, RestartPolicy, State
from transfer_daemon.daemon.children import SpecBuilder, secrets_fingerprint
from transfer_daemon.daemon.heartbeat import Heartbeat
from transfer_daemon.daemon.logs import LogPipeline
from transfer_daemon.daemon.pidfile import PidFile
from transfer_daemon.errors import TransferDaemonError
from transfer_daemon.metrics import init_multiprocess, mark_process_dead
from transfer_daemon.redact import redact_url
from transfer_daemon.state import VERSION, state_path, write_state

log = logging.getLogger(__name__)

_HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)
_PR_SET_PDEATHSIG = 1
DATABASE_CHECK_S = 5.0


def _changed(child: Child, spec: ChildSpec) -> str | None:
    """What about a running child's spec changed on reload ("config", "secrets"), or None."""
    if child.spec.config_fingerprint != spec.config_fingerprint or not child.wanted:
        return "config"
    if child.spec.secrets_fingerprint != spec.secrets_fingerprint:
        return "secrets"
    return None


class Reviving(threading.Thread):
    """One check of the embedded Postgres, restarting it if it died, off the supervisor's loop:
    a restart runs crash recovery (seconds, minutes for a big WAL) while the loop must go on
    reaping children, answering signals and reading their log pipes. The loop polls `done`."""

    def __init__(self, config: Config) -> None:
        super().__init__(name="revive-database", daemon=True)
        self.config = config
        self.done = threading.Event()

    def run(self) -> None:
        from transfer_daemon.db import bootstrap

        try:
            bootstrap.revive_embedded(self.config)
        except Exception as exc:
            log.exception("failed to check the embedded postgres: %s", exc)
        finally:
            self.done.set()


class Supervisor:
    def __init__(self, config: Config, *, build_specs: SpecBuilder, load: Callable[[], Config],
                 pipeline: LogPipeline, pidfile: PidFile, policy: RestartPolicy | None = None,
                 on_ready: Callable[[], None] | None = None,
                 monitor: Callable[[Config, Callable[[], dict]], AlertMonitor] | None = None) -> None:
        self.config = config
        self._new_monitor = monitor
        self.monitor: AlertMonitor | None = None
        self.build_specs = build_specs
        self.load = load
        self.pipeline = pipeline
        self.pidfile = pidfile
        self.policy = policy or RestartPolicy()
        self.on_ready = on_ready
        self.children: dict[str, Child] = {}
        self.heartbeats: dict[str, Heartbeat] = {}
        self.stopping = False
        self._signals: list[int] = []
        self._selector = selectors.DefaultSelector()
        self._wakeup_r, self._wakeup_w = os.pipe()
        self._pid = os.getpid()
        self._started_at = time.time()
        self._wall_offset = time.time() - time.monotonic()
        self._published: dict[str, Any] | None = None
        self._database_checked_at = time.monotonic()
        self._reviving: Reviving | None = None

    # --- the loop ---------------------------------------------------------------------------

    def run(self) -> int:
        """Supervise until SIGTERM/SIGINT; returns the exit status (0)."""
        self._install_signals()
        try:
            self._start()
            while not (self.stopping and all(c.pid is None for c in self.children.values())):
                self._wait(self._timeout(time.monotonic()))
                self._dispatch_signals()
                self._reap()
                self._manage(time.monotonic())
                self._watch_database(time.monotonic())
                self._publish()
            log.info("stopped: every child has exited")
        finally:
            if self.monitor is not None:
                self.monitor.stop(timeout_s=min(5.0, self.config.daemon.shutdown_timeout))
            self._kill_leftovers()
            self.pipeline.close_channels()
            self._publish(final=True)
            self.pidfile.release()
        return 0

    def _start(self) -> None:
        # metric files of an earlier run would be summed into this one's totals
        init_multiprocess(self.config.daemon.data_dir, wipe=True)
        try:
            specs = self.build_specs(self.config)
        except Exception as exc:
            log.exception("start failed: %s", exc)
            raise TransferDaemonError(f"start failed: {redact_url(str(exc))}") from None
        self._apply_specs(specs, time.monotonic())
        log.info("started supervisor (pid %d) with %d children", self._pid, len(self.children))
        if self._new_monitor is not None:
            self.monitor = self._new_monitor(self.config, lambda: dict((self._published or {}).get("children", {})))
            self.monitor.start()
        if self.on_ready:
            self.on_ready()

    def _install_signals(self) -> None:
        os.set_blocking(self._wakeup_w, False)
        os.set_blocking(self._wakeup_r, False)
        self._selector.register(self._wakeup_r, selectors.EVENT_READ)
        signal.set_wakeup_fd(self._wakeup_w, warn_on_full_buffer=False)
        for signum in _HANDLED:
            signal.signal(signum, lambda signum, frame: self._signals.append(signum))

    def _timeout(self, now: float) -> float:
        """Sleep until the next thing due, at most 1 s (heartbeats are checked every wake-up)."""
        moments = [now + 1.0]
        for child in self.children.values():
            if child.state in (State.STOPPED, State.BACKOFF, State.FATAL) and child.wanted:
                moments.append(child.next_start_at)
            if child.state is State.STARTING:
                moments.append((child.started_at or now) + self.policy.running_after)
            if child.stop_deadline is not None:
                moments.append(child.stop_deadline)
        return min(1.0, max(0.005, min(moments) - now))

    def _wait(self, timeout: float) -> None:
        for key, _ in self._selector.select(timeout):
            if key.fd == self._wakeup_r:
                self._drain_wakeup()
            elif not self.pipeline.drain(key.fd):
                self._selector.unregister(key.fd)

    def _drain_wakeup(self) -> None:
        try:
            while os.read(self._wakeup_r, 512):
                pass
        except BlockingIOError:
            pass

    def _dispatch_signals(self) -> None:
        while self._signals:
            signum = self._signals.pop(0)
            name = signal.Signals(signum).name
            if signum in (signal.SIGTERM, signal.SIGINT):
                if self.stopping:
                    self._kill_all(f"{name} received again")
                else:
                    self._begin_stop(name, time.monotonic())
            elif signum == signal.SIGHUP and not self.stopping:
                self._reload(time.monotonic())

    def _reap(self) -> None:
        for child in list(self.children.values()):
            if child.pid is None:
                continue
            try:
                pid, status = os.waitpid(child.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status = child.pid, None
            if pid:
                code = None if status is None else os.waitstatus_to_exitcode(status)
                self._on_exit(child, code, time.monotonic())

    def _manage(self, now: float) -> None:
        for child in list(self.children.values()):
            if child.must_kill(now):
                child.kill_reason = "killed by SIGKILL after the stop grace"
                log.warning("killing %s (pid %d): still alive %.1fs after SIGTERM", child.spec.name, child.pid,
                            self.config.daemon.shutdown_timeout, extra={"chain": child.spec.chain})
                self._send(child, signal.SIGKILL)
            self._check_heartbeat(child, now)
            if child.tick(now):
                log.info("running %s (pid %d)", child.spec.name, child.pid, extra={"chain": child.spec.chain})
            if not self.stopping and child.due(now):
                self._spawn(child, now)

    def _watch_database(self, now: float) -> None:
        """Every few seconds: an embedded Postgres that died is started again (its URL stays the same),
        in a Reviving thread; the next check is due a few seconds after the last one ended."""
        if self._reviving is not None:
            if not self._reviving.done.is_set():
                return
            self._reviving, self._database_checked_at = None, now
        if self.stopping or now < self._database_checked_at + DATABASE_CHECK_S:
            return
        self._reviving = Reviving(self.config)
        self._reviving.start()

    def _check_heartbeat(self, child: Child, now: float) -> None:
        beat = self.heartbeats.get(child.spec.name)
        timeout = self.config.daemon.heartbeat_timeout
        if beat is None or not child.heartbeat_expired(beat.last(), now, timeout):
            return
        child.kill_reason = "killed by SIGKILL: heartbeat timeout"
        log.warning("killing %s (pid %d): no heartbeat for %.1fs", child.spec.name, child.pid,
                    now - beat.last(), extra={"chain": child.spec.chain})
        self._send(child, signal.SIGKILL)

    def _send(self, child: Child, signum: int) -> None:
        if child.pid is not None:
            try:
                os.kill(child.pid, signum)
            except ProcessLookupError:
                pass

    # --- child lifecycle ------------------------------------------------------------------

    def _spawn(self, child: Child, now: float) -> None:
        spec = child.spec
        beat = Heartbeat() if spec.heartbeat else None
        read_fd, write_fd = self.pipeline.open_channel(spec.name, spec.chain)
        self._selector.register(read_fd, selectors.EVENT_READ)
        self.pipeline.flush()
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            pid = os.fork()
        except OSError as exc:
            os.close(write_fd)
            log.error("fork failed for %s: %s", spec.name, exc, extra={"chain": spec.chain})
            self._on_exit(child, None, now)
            return
        if pid == 0:
            self._child_main(spec, write_fd, beat)
        os.close(write_fd)
        if beat is not None:
            self.heartbeats[spec.name] = beat
        child.spawned(pid, now)
        log.info("spawned %s (pid %d)", spec.name, pid, extra={"chain": spec.chain})

    def _child_main(self, spec: ChildSpec, write_fd: int, beat: Heartbeat | None) -> NoReturn:
        code = 1
        try:
            self._reset_in_child(beat)
            self.pipeline.become_child(write_fd, spec.name, spec.chain)
            setproctitle.setproctitle(f"transfer-daemon: {spec.name}")
            spec.target(*spec.args, *((beat,) if beat else ()))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        except BaseException as exc:
            logging.getLogger(__name__).exception("crashed %s: %s", spec.name, exc)
        finally:
            for handler in logging.getLogger().handlers:
                handler.flush()
            os._exit(code)

    def _reset_in_child(self, beat: Heartbeat | None) -> None:
        """Undo what the child inherited: signal handlers, wake-up pipe, pidfile lock, others' memory."""
        signal.set_wakeup_fd(-1)
        for signum in _HANDLED:
            signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)
        # Own process group: a terminal's Ctrl-C reaches the supervisor only, which stops us in order.
        os.setpgid(0, 0)
        if sys.platform.startswith("linux"):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != self._pid:
            raise SystemExit(1)
        self._selector.close()
        os.close(self._wakeup_r)
        os.close(self._wakeup_w)
        self.pidfile.close_inherited()
        for other in self.heartbeats.values():
            if other is not beat:
                other.close()

    def _on_exit(self, child: Child, code: int | None, now: float) -> None:
        pid, name, extra = child.pid, child.spec.name, {"chain": child.spec.chain}
        if pid is not None:
            mark_process_dead(pid)
        beat = self.heartbeats.pop(name, None)
        if beat is not None:
            beat.close()
        replacing = child.replacement is not None
        state = child.exited(code, now)
        reason = child.last_exit.reason if child.last_exit else "?"
        if state is State.BACKOFF:
            log.warning("exited %s (pid %s): %s; restarting in %.2fs (failure %d of %d)", name, pid, reason,
                        child.next_start_at - now, child.failures, self.policy.max_failures, extra=extra)
        elif state is State.FATAL:
            log.error("gave up on %s (pid %s): %s; %d failures without a stable run, retrying every %.0fs",
                      name, pid, reason, child.failures, self.policy.fatal_retry, extra=extra)
        else:
            log.info("stopped %s (pid %s): %s%s", name, pid, reason, "; starting it again" if replacing else "",
                     extra=extra)
            if not child.wanted and not self.stopping:
                del self.children[name]

    # --- stop, reload ---------------------------------------------------------------------

    def _begin_stop(self, why: str, now: float) -> None:
        self.stopping = True
        grace = self.config.daemon.shutdown_timeout
        log.info("stopping: %s received; children have %.1fs to exit", why, grace)
        for child in self.children.values():
            if child.stop(now, grace):
                self._send(child, signal.SIGTERM)

    def _kill_all(self, why: str) -> None:
        log.warning("killing every child: %s", why)
        for child in self.children.values():
            if child.pid is not None:
                child.kill_reason = "killed by SIGKILL at shutdown"
                self._send(child, signal.SIGKILL)

    def _kill_leftovers(self) -> None:
        """On the way out (normally none are left): never leave an orphan behind."""
        for child in self.children.values():
            if child.pid is not None:
                self._send(child, signal.SIGKILL)
                try:
                    os.waitpid(child.pid, 0)
                except ChildProcessError:
                    pass
                child.exited(-signal.SIGKILL, time.monotonic())

    def _reload(self, now: float) -> None:
        log.info("reloading config %s", self.config.path)
        try:
            config = self.load()
            specs = self.build_specs(config)
            if self.monitor is not None:
                self.monitor.reload(config)
        except ConfigError as exc:
            log.error("reload failed: %s; keeping the running config", exc)
            return
        except Exception as exc:
            log.exception("reload failed: %s; keeping the running config", exc)
            return
        self.config = config
        self.pipeline.update(config)
        started, restarted, stopped = self._apply_specs(specs, now)
        log.info("reloaded config: %d started, %d restarted, %d stopped", started, restarted, stopped)

    def _apply_specs(self, specs: list[ChildSpec], now: float) -> tuple[int, int, int]:
        """Make the children match `specs`: start new names, restart changed ones, stop removed ones."""
        wanted = {spec.name: dataclasses.replace(spec, secrets_fingerprint=secrets_fingerprint(self.config, spec))
                  for spec in specs}
        grace = self.config.daemon.shutdown_timeout
        started = restarted = stopped = 0
        for name, child in list(self.children.items()):
            if name not in wanted and child.wanted:
                stopped += 1
                log.info("stopping %s: removed from the config", name, extra={"chain": child.spec.chain})
                if child.stop(now, grace):
                    self._send(child, signal.SIGTERM)
                elif child.state is State.STOPPED:
                    del self.children[name]
        for name, spec in wanted.items():
            child = self.children.get(name)
            if child is None:
                self.children[name] = Child(spec, self.policy, next_start_at=now)
                started += 1
            elif (why := _changed(child, spec)) is not None:
                restarted += 1
                log.info("restarting %s: its %s changed", name, why, extra={"chain": spec.chain})
                if child.stop(now, grace, replacement=spec):
                    self._send(child, signal.SIGTERM)
        return started, restarted, stopped

    # --- state file -----------------------------------------------------------------------

    def _backlog(self, name: str) -> dict[str, Any]:
        """What a live worker published beside its heartbeat (queued jobs, backfill span)."""
        beat = self.heartbeats.get(name)
        return beat.load() if beat is not None else {}

    def _publish(self, final: bool = False) -> None:
        """Write the state file when anything an operator sees has changed."""
        document = {
            "version": VERSION, "pid": self._pid, "config": self.config.path,
            "state": "stopped" if final else "stopping" if self.stopping else "running",
            "started_at": round(self._started_at, 3),
            "children": {name: {**c.snapshot(self._wall_offset), **self._backlog(name)}
                         for name, c in self.children.items()},
        }
        if document == self._published:
            return
        self._published = document
        try:
            write_state(state_path(self.config), {**document, "updated_at": round(time.time(), 3)})
        except OSError as exc:
            log.warning("state file not written: %s", exc)
