"""The supervisor's alert monitor: every `alerts.evaluate_interval_s` it reads each chain's report,
evaluates the alerts and hands what changed to the dispatcher, in a thread of its own.

The supervisor's loop never waits on it: the database read (a connection with a 3 s connect
timeout) and the delivery (queued per receiver) happen here. When the facts cannot be read the
evaluation is skipped, never run on partial facts, which would resolve every alert of a chain
it could not see.

With several supervisors on one database (scale-out), one evaluates: the holder of a session-level
advisory lock on the monitor's own connection. When it dies its lock goes with its connection and
another takes over; alerts still true then fire once more from the new holder.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg

from transfer_daemon import metrics, report, store
from transfer_daemon.config import Config
from transfer_daemon.daemon.alert_delivery import AlertDispatcher
from transfer_daemon.daemon.alert_sinks import alert_event, build_sinks
from transfer_daemon.daemon.alerts import AlertEvaluator, AlertTransition, ChainFacts, Thresholds
from transfer_daemon.db.bootstrap import StoreUnreachable, running_database_url

log = logging.getLogger(__name__)

#: pg_advisory_lock keys of the one evaluating monitor among several supervisors
MONITOR_LOCK = (0x74640004, 0)
CONNECT_TIMEOUT_S = 3


def chain_facts(chain_report: dict[str, Any], running_since: float | None) -> ChainFacts:
    """The facts the alerts are evaluated on, from one chain's report."""
    paused = chain_report.get("paused") or {}  # a refused key, the daily cap, a refused endpoint
    verify = chain_report.get("lastVerify") or {}
    return ChainFacts(
        chain=chain_report["name"], chain_id=chain_report["id"], lag_s=chain_report.get("ingestLagSeconds"),
        errors_last_min=chain_report.get("errorsLastMinute") or 0,
        worker_state=chain_report["worker"]["state"], running_since=running_since,
        halted=bool(chain_report.get("halted")), auth_failed=bool(paused.get("reason")),
        drift=verify.get("status") == "drift",
    )


class AlertMonitor:
    def __init__(self, config: Config, children: Callable[[], dict[str, dict]],
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._children = children
        self._clock = clock
        self._started_at = clock()
        self._evaluator = AlertEvaluator(Thresholds.from_config(config.alerts))
        self._dispatcher = self._new_dispatcher(config, ())
        self._conn: psycopg.Connection | None = None
        self._holder = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alert-monitor", daemon=True)
        self._unreadable_logged = False

    def _new_dispatcher(self, config: Config, firing: tuple[AlertTransition, ...]) -> AlertDispatcher:
        return AlertDispatcher(build_sinks(config.alerts), record_event=self._record, firing=firing)

    def start(self) -> None:
        self._dispatcher.start()
        self._thread.start()

    def reload(self, config: Config) -> None:
        """New thresholds at once; new receivers get what is still firing."""
        self._evaluator.thresholds = Thresholds.from_config(config.alerts)
        if config.alerts != self.config.alerts:
            old, self._dispatcher = self._dispatcher, self._new_dispatcher(config, tuple(self._evaluator.firing()))
            self._dispatcher.start()
            old.stop(timeout_s=1)
        self.config = config

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        self._dispatcher.stop(timeout_s=timeout_s)
        if self._conn is not None:
            self._conn.close()

    def _run(self) -> None:
        while not self._stop.wait(self.config.alerts.evaluate_interval_s):
            try:
                self.evaluate_once()
            except Exception:
                log.exception("failed alert evaluation")

    def evaluate_once(self) -> list[AlertTransition]:
        """Read the facts, evaluate, deliver what changed; [] when the facts cannot be read."""
        now = self._clock()
        reports = self._read_reports(now)
        if reports is None:
            return []
        facts = [chain_facts(r, self._started_at) for r in reports]
        changes = self._evaluator.evaluate(now, facts)
        self._dispatcher.deliver(changes)
        metrics.set_alerts_firing((t.name, t.chain) for t in self._evaluator.firing())
        return changes

    def _read_reports(self, now: float) -> list[dict[str, Any]] | None:
        try:
            conn = self._connection()
            if not self._holder:
                self._holder = bool(conn.execute("SELECT pg_try_advisory_lock(%s, %s)", MONITOR_LOCK).fetchone()[0])
                if not self._holder:
                    return None
                log.info("started alert evaluation: this supervisor holds the monitor lock")
            children = (True, self._children())
            reports = report.chain_reports(conn, self.config, now, children)
        except (StoreUnreachable, psycopg.Error) as exc:
            self._forget_connection()
            if not self._unreadable_logged:
                log.warning("skipped alert evaluation: store unreadable: %s", type(exc).__name__)
                self._unreadable_logged = True
            return None
        self._unreadable_logged = False
        return reports

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._holder = False
            self._conn = psycopg.connect(running_database_url(self.config), autocommit=True,
                                         connect_timeout=CONNECT_TIMEOUT_S,
                                         application_name="transfer-daemon alerts")
        return self._conn

    def _forget_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn, self._holder = None, False

    def _record(self, transition: AlertTransition) -> None:
        """The alert event row, on the dispatcher's thread over a connection of its own."""
        with psycopg.connect(running_database_url(self.config), autocommit=True,
                             connect_timeout=CONNECT_TIMEOUT_S) as conn:
            store.record_event(conn, alert_event(transition))
