"""One supervised child's restart policy: a small pure state machine handed `now`.

STOPPED ─spawn→ STARTING ─(alive `running_after` s)→ RUNNING
STARTING/RUNNING ─exit→ EXITED ─→ BACKOFF (delay 1, 2, 4 … 60 s with jitter) ─due→ STARTING
                              └─→ FATAL after `max_failures` exits without a stable run;
                                  retried every `fatal_retry` s, never hot-looped
any live state ─stop/replace→ STOPPING ─exit→ STOPPED (then the replacement spec starts at once)

The supervisor does the I/O (fork, kill, waitpid, logs); this module only decides.
"""

from __future__ import annotations

import enum
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from transfer_daemon.backoff import Backoff


class State(enum.Enum):
    STOPPED = "STOPPED"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    EXITED = "EXITED"
    BACKOFF = "BACKOFF"
    FATAL = "FATAL"
    STOPPING = "STOPPING"


LIVE = (State.STARTING, State.RUNNING, State.STOPPING)


@dataclass(frozen=True)
class ChildSpec:
    """What to run in a forked child: `target(*args)`, plus `heartbeat` appended when asked."""

    name: str
    target: Callable[..., Any]
    args: tuple = ()
    config_fingerprint: str = ""
    chain: str | None = None
    heartbeat: bool = False
    secrets_fingerprint: str = ""  # digest of the secret values the child reads (set by the supervisor)


@dataclass(frozen=True)
class RestartPolicy:
    """Timings of the restart policy; tests shrink them (initial=0.05 …)."""

    initial: float = 1.0
    maximum: float = 60.0
    jitter: float = 0.1
    stable_after: float = 60.0
    running_after: float = 1.0
    max_failures: int = 5
    fatal_retry: float = 300.0


@dataclass(frozen=True)
class ExitInfo:
    status: int | None  # Popen style: exit code, or -signal number; None when fork failed
    reason: str
    at: float


def describe_status(status: int | None) -> str:
    if status is None:
        return "not started"
    if status < 0:
        try:
            return f"killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    return f"exit {status}"


@dataclass
class Child:
    spec: ChildSpec
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    state: State = State.STOPPED
    since: float = 0.0
    pid: int | None = None
    restarts: int = 0
    failures: int = 0
    wanted: bool = True
    next_start_at: float = 0.0
    started_at: float | None = None
    stop_deadline: float | None = None
    kill_reason: str | None = None
    last_exit: ExitInfo | None = None
    replacement: ChildSpec | None = None
    backoff: Backoff = field(init=False)

    def __post_init__(self) -> None:
        p = self.policy
        self.backoff = Backoff(initial=p.initial, maximum=p.maximum, jitter=p.jitter, reset_after=p.stable_after)

    def _set(self, state: State, now: float) -> None:
        self.state, self.since = state, now

    def due(self, now: float) -> bool:
        """Should the supervisor fork this child now?"""
        waiting = self.state in (State.STOPPED, State.BACKOFF, State.FATAL)
        return self.wanted and waiting and now >= self.next_start_at

    def spawned(self, pid: int, now: float) -> None:
        self.pid, self.started_at, self.kill_reason = pid, now, None
        self.backoff.started(now)
        self._set(State.STARTING, now)

    def tick(self, now: float) -> bool:
        """Time-driven transitions; True when the state changed."""
        if self.state is State.RUNNING and self.failures and now - self.since >= self.policy.stable_after:
            self.failures = 0
            self.backoff.succeeded()
        if self.state is State.STARTING and now - (self.started_at or now) >= self.policy.running_after:
            self._set(State.RUNNING, now)
            return True
        return False

    def exited(self, status: int | None, now: float) -> State:
        """The process is gone (reaped, or fork failed): decide what comes next."""
        self.last_exit = ExitInfo(status, self.kill_reason or describe_status(status), now)
        self.pid, self.kill_reason, self.stop_deadline = None, None, None
        self._set(State.EXITED, now)
        if self.replacement is not None:
            self._take_replacement(now)
        elif not self.wanted:
            self._set(State.STOPPED, now)
        else:
            self._schedule_restart(now)
        return self.state

    def _take_replacement(self, now: float) -> None:
        self.spec, self.replacement = self.replacement, None
        self.wanted, self.failures, self.next_start_at = True, 0, now
        self.backoff.succeeded()
        self._set(State.STOPPED, now)

    def _schedule_restart(self, now: float) -> None:
        if self.started_at is not None and now - self.started_at >= self.policy.stable_after:
            self.failures = 0
        self.failures += 1
        self.restarts += 1
        delay = self.backoff.failed(now)
        if self.failures >= self.policy.max_failures:
            self.next_start_at = now + self.policy.fatal_retry
            self._set(State.FATAL, now)
        else:
            self.next_start_at = now + delay
            self._set(State.BACKOFF, now)

    def stop(self, now: float, grace: float, replacement: ChildSpec | None = None) -> bool:
        """Ask the child to stop (for good, or to come back as `replacement`).

        True when a live process must be sent SIGTERM now.
        """
        self.wanted = False
        self.replacement = replacement
        if self.pid is None:
            if replacement is not None:
                self._take_replacement(now)
            else:
                self._set(State.STOPPED, now)
            return False
        if self.state is State.STOPPING:
            return False
        self.stop_deadline = now + grace
        self._set(State.STOPPING, now)
        return True

    def must_kill(self, now: float) -> bool:
        """A stopping child outlived its grace: SIGKILL it (once)."""
        if self.state is State.STOPPING and self.stop_deadline is not None and now >= self.stop_deadline:
            self.stop_deadline = None
            return True
        return False

    def heartbeat_expired(self, last_beat: float, now: float, timeout: float) -> bool:
        """A live worker that has not beaten for `timeout` s (and is not being killed already)."""
        live = self.state in (State.STARTING, State.RUNNING) and self.kill_reason is None
        return live and now - last_beat > timeout

    def snapshot(self, wall_offset: float) -> dict[str, Any]:
        """The state-file entry; monotonic times are turned into unix seconds by `wall_offset`."""
        last = self.last_exit
        return {
            "name": self.spec.name,
            "chain": self.spec.chain,
            "pid": self.pid,
            "state": self.state.value,
            "since": round(self.since + wall_offset, 3),
            "restarts": self.restarts,
            "failures": self.failures,
            "next_start_at": round(self.next_start_at + wall_offset, 3) if self.state in (
                State.BACKOFF, State.FATAL) else None,
            "last_exit": None if last is None else {
                "status": last.status, "reason": last.reason, "at": round(last.at + wall_offset, 3)},
        }
