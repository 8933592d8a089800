"""Delivery of alert transitions: always a log line and an `alert` event row, then each configured receiver.

`deliver()` logs (ERROR on fire, INFO on resolve) and enqueues; it never waits on a network or the
database, so a receiver that is down cannot slow the supervisor's loop. Each sink has a thread and
a bounded queue of its own: a slow mail server does not hold back the webhook, and within a sink
messages go out in order (a resolve never overtakes its fire). A failed message is retried with
`Backoff` (1, 2, 4 … 60 s, jitter) until it is delivered or has had `max_attempts` attempts or
`give_up_after_s` seconds, then dropped with one ERROR line. A full queue drops its oldest message
and counts the drop. A sink going down and coming back is logged once each way, not per attempt.

Alertmanager resolves on its own any alert not re-sent within its `resolve_timeout` (5 min by
default), so the Alertmanager sink alone re-posts everything still firing every
`resend_interval_s` (60 s) when idle; a failed re-post is not retried, the next one follows. The
webhook and e-mail get each transition exactly once: a person is not paged again every minute.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from transfer_daemon.backoff import Backoff
from transfer_daemon.daemon.alert_sinks import DeliveryError, EventSink, Sink
from transfer_daemon.daemon.alerts import AlertTransition

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    initial_s: float = 1.0
    maximum_s: float = 60.0
    max_attempts: int = 100
    give_up_after_s: float = 3600.0
    queue_size: int = 100  # messages waiting per sink; beyond it the oldest is dropped
    resend_interval_s: float = 60.0  # Alertmanager re-posts of what is still firing


@dataclass
class SinkStats:
    delivered: int = 0
    resent: int = 0
    failed_attempts: int = 0
    dropped: int = 0
    gave_up: int = 0
    pending: int = 0


@dataclass
class _Message:
    batch: tuple[AlertTransition, ...]
    queued_at: float
    retry: bool = True  # False for an Alertmanager re-post: the next one is due soon anyway
    attempts: int = 0


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.1f}".rstrip("0").rstrip(".")
    return "null" if value is None else str(value)


def _about(batch: Sequence[AlertTransition]) -> str:
    chains = ",".join(dict.fromkeys(t.chain for t in batch))
    return f"chain={chains} alerts=" + ",".join(f"{t.name}:{t.state}" for t in batch)


class _SinkWorker:
    """One sink's queue and thread. The lock guards the queue, `_current`, timers and stats."""

    def __init__(self, sink: Sink, policy: RetryPolicy, clock: Callable[[], float],
                 firing: Callable[[], tuple[AlertTransition, ...]]) -> None:
        self.sink, self._policy, self._clock, self._firing = sink, policy, clock, firing
        self.stats = SinkStats()
        self._queue: deque[_Message] = deque()
        self._current: _Message | None = None  # taken off the queue, waiting for its retry
        self._retry_at = 0.0
        self._next_resend = clock() + policy.resend_interval_s if sink.resends else math.inf
        self._backoff = Backoff(initial=policy.initial_s, maximum=policy.maximum_s, jitter=0.1)
        self._failing = False
        self._stopping = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=f"alerts[{sink.name}]", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def put(self, batch: tuple[AlertTransition, ...]) -> None:
        now, dropped = self._clock(), []
        with self._cond:
            for part in ([(t,) for t in batch] if self.sink.per_alert else [batch]):
                if len(self._queue) >= self._policy.queue_size:
                    dropped.append(self._queue.popleft())
                self._queue.append(_Message(part, now))
            self.stats.dropped += len(dropped)
            total = self.stats.dropped
            self._cond.notify()
        for message in dropped:
            log.warning("alert dropped sink=%s %s: queue full (%d waiting), %d dropped so far", self.sink.name,
                        _about(message.batch), self._policy.queue_size, total)

    def stop(self, timeout_s: float) -> None:
        """Deliver what is queued once more, without waiting for retries, for at most `timeout_s`."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        with self._cond:
            left = len(self._queue) + (self._current is not None)
        if left:
            log.warning("alert delivery stopped sink=%s with %d message(s) undelivered", self.sink.name, left)

    def snapshot(self) -> SinkStats:
        with self._cond:
            pending = len(self._queue) + (self._current is not None)
            return SinkStats(**{**vars(self.stats), "pending": pending})

    def _run(self) -> None:
        while (message := self._take()) is not None:
            try:
                self.sink.send(message.batch)
            except DeliveryError as exc:
                self._failed(message, str(exc))
            except Exception as exc:  # a sink's bug must not end its thread; the message is retried
                self._failed(message, self.sink.redact(f"{type(exc).__name__}: {exc}"))
            else:
                self._succeeded(message)

    def _take(self) -> _Message | None:
        """The next message to attempt, once due; None when stopping and nothing is left."""
        with self._cond:
            while True:
                now = self._clock()
                if self._current is not None and (self._stopping or now >= self._retry_at):
                    return self._current
                if self._current is None and self._queue:
                    self._current = self._queue.popleft()
                    return self._current
                if self._stopping:
                    return None
                if self._current is None and now >= self._next_resend:
                    self._next_resend = now + self._policy.resend_interval_s
                    firing = self._firing()
                    if firing:
                        return _Message(firing, now, retry=False)
                    continue
                wake = self._retry_at if self._current is not None else self._next_resend
                self._cond.wait(None if math.isinf(wake) else max(0.0, wake - now))

    def _succeeded(self, message: _Message) -> None:
        now = self._clock()
        with self._cond:
            if message.retry:
                self.stats.delivered += 1
            else:
                self.stats.resent += 1
            if message is self._current:
                self._current = None
            self._backoff.succeeded()
            if self.sink.resends:
                self._next_resend = now + self._policy.resend_interval_s
            recovered, self._failing = self._failing, False
        if recovered:
            log.info("alert delivery recovered sink=%s %s", self.sink.name, _about(message.batch))

    def _failed(self, message: _Message, error: str) -> None:
        now = self._clock()
        with self._cond:
            self.stats.failed_attempts += 1
            message.attempts += 1
            first, self._failing = not self._failing, True
            gave_up = message.retry and (self._stopping or message.attempts >= self._policy.max_attempts
                                         or now - message.queued_at >= self._policy.give_up_after_s)
            if gave_up:
                self._current = None
                self.stats.gave_up += 1
            elif message.retry:
                self._retry_at = now + self._backoff.failed(now)
            delay = self._retry_at - now
        if gave_up:
            log.error("alert delivery gave up sink=%s %s after %d attempt(s) in %.0fs: %s", self.sink.name,
                      _about(message.batch), message.attempts, now - message.queued_at, error)
        elif first:
            log.warning("alert delivery failing sink=%s %s: %s; %s", self.sink.name, _about(message.batch), error,
                        "retrying with backoff" if message.retry else "the next re-send follows")
        else:
            log.debug("alert delivery failed sink=%s %s attempt=%d retry_in=%.1fs: %s", self.sink.name,
                      _about(message.batch), message.attempts, delay, error)


class AlertDispatcher:
    """Logs every transition and hands it to each sink's queue; see the module docstring.

    `record_event`, when given, stores the `alert` event row; it runs on a dispatcher thread (open
    its own connection or use a pool, never the caller's connection) and is retried like a receiver.
    `deliver` is meant for one caller thread (the supervisor's loop). A dispatcher replacing another
    (receivers changed on reload) takes `firing=evaluator.firing()`, so Alertmanager keeps getting
    what still fires without anything being logged or sent as new.
    """

    def __init__(self, sinks: Sequence[Sink], record_event: Callable[[AlertTransition], None] | None = None,
                 policy: RetryPolicy | None = None, clock: Callable[[], float] = time.monotonic,
                 firing: Iterable[AlertTransition] = ()) -> None:
        policy = policy or RetryPolicy()
        every = [*sinks, *([EventSink(record_event)] if record_event else [])]
        self._firing = {(t.name, t.chain): t for t in firing}
        self._firing_now = tuple(self._firing.values())
        self._workers = [_SinkWorker(sink, policy, clock, lambda: self._firing_now) for sink in every]

    def start(self) -> None:
        for worker in self._workers:
            worker.start()

    def deliver(self, transitions: Iterable[AlertTransition]) -> None:
        batch = tuple(transitions)
        if not batch:
            return
        for t in batch:
            _log_transition(t)
            if t.state == "firing":
                self._firing[(t.name, t.chain)] = t
            else:
                self._firing.pop((t.name, t.chain), None)
        self._firing_now = tuple(self._firing.values())  # one assignment: the sink threads read it unlocked
        for worker in self._workers:
            worker.put(batch)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Try what is queued once more, then stop; waits at most `timeout_s` in all."""
        deadline = time.monotonic() + timeout_s
        for worker in self._workers:
            worker.stop(max(0.0, deadline - time.monotonic()))

    def stats(self) -> dict[str, SinkStats]:
        return {worker.sink.name: worker.snapshot() for worker in self._workers}

    def __enter__(self) -> AlertDispatcher:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _log_transition(t: AlertTransition) -> None:
    if t.state == "firing":
        log.error("alert firing name=%s chain=%s value=%s threshold=%s: %s", t.name, t.chain, _fmt(t.value),
                  _fmt(t.threshold), t.summary, extra={"chain": t.chain})
    else:
        log.info("alert resolved name=%s chain=%s value=%s threshold=%s after=%.0fs: %s", t.name, t.chain,
                 _fmt(t.value), _fmt(t.threshold), (t.ends_at or t.starts_at) - t.starts_at, t.summary,
                 extra={"chain": t.chain})
