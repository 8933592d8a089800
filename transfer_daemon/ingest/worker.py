"""The per-chain worker process: advisory lock, scheduler, jobs, heartbeat, graceful stop.

`run_worker` is the target the supervisor forks. Everything that holds a socket or a thread —
the lock connection, the pool, the upstream session, the scheduler — is created here, after
the fork, never inherited. A worker that cannot take the chain's lock stands by and retries
every poll interval; when the holder dies, Postgres releases its lock and a standby takes over.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from transfer_daemon import metrics, store
from transfer_daemon.config import Config
from transfer_daemon.errors import AlreadyRunning, TransferDaemonError
from transfer_daemon.ingest import backfill as backfill_job
from transfer_daemon.ingest import context, planning, upkeep
from transfer_daemon.ingest import sync as sync_job
from transfer_daemon.ingest.lock import ChainLock
from transfer_daemon.model import Cursor
from transfer_daemon.upstream.http import RetryPolicy

log = logging.getLogger(__name__)


def _not_an_expected_skip(record: logging.LogRecord) -> bool:
    # max_instances=1 is deliberate (a job never overlaps itself): its skips are not news
    return "maximum number of running instances reached" not in record.getMessage()

#: `publish(queued_jobs, backfill_span)`: the worker's backlog, for the supervisor's state file
Publish = Callable[[int, int], None]
HOUR = 3600
DAY = 86400
#: Seconds between the main loop's heartbeats and lock checks.
TICK_S = 1.0
#: Seconds between the runs of an unfinished nightly verify pass.
VERIFY_RESUME_S = 60.0


def _install_signal_handlers(stopping: threading.Event) -> None:
    """SIGTERM/SIGINT only set the flag; the main loop does the stopping."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())


def run_worker(config: Config, chain_name: str, database_url: str, heartbeat: Callable[[], None],
               *, stopping: threading.Event | None = None, publish: Publish | None = None) -> None:
    """Ingest one chain until SIGTERM (or `stopping`, for callers running it in a thread).

    Holds the chain's advisory lock while ingesting; stands by while another process holds it.
    `publish(queued_jobs, backfill_span)` is called every tick while ingesting (the supervisor
    shows it in its state file).
    """
    chain = config.chain(chain_name)
    stopping = stopping or threading.Event()
    _install_signal_handlers(stopping)
    _init_metrics(config)
    lock = ChainLock(database_url, chain.id, chain.name)
    standing_by = False
    try:
        while not stopping.is_set():
            heartbeat()
            if lock.try_acquire():
                log.info("acquired chain=%s lock, ingesting (pid %d)", chain.name, os.getpid())
                standing_by = False
                _ingest_while_held(config, chain_name, database_url, heartbeat, stopping, lock, publish)
                continue
            if not standing_by:
                log.info("standby chain=%s another worker holds the lock; retrying every %ss",
                         chain.name, chain.poll_interval_s)
                standing_by = True
            _wait(stopping, chain.poll_interval_s, heartbeat)
    finally:
        lock.release()
    log.info("stopped chain=%s worker", chain.name)


def _wait(stopping: threading.Event, seconds: float, heartbeat: Callable[[], None]) -> None:
    deadline = time.monotonic() + seconds
    while not stopping.is_set() and time.monotonic() < deadline:
        stopping.wait(min(TICK_S, max(0.0, deadline - time.monotonic())))
        heartbeat()


def _init_metrics(config: Config) -> None:
    """Point prometheus-client at the shared files when the supervisor enabled multiprocess mode."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    from transfer_daemon import metrics

    metrics.init_multiprocess(config.daemon.data_dir)


def retry_policy(poll_interval_s: float) -> RetryPolicy:
    """A worker's upstream retries wait at most one poll interval (2 s at least) between attempts: an
    upstream that comes back after an outage is read again within about a poll interval, not after a
    backoff grown to a minute. A 429's Retry-After is still honoured in full."""
    return RetryPolicy(maximum_s=max(2.0, min(RetryPolicy.maximum_s, poll_interval_s)))


def _ingest_while_held(config: Config, chain_name: str, database_url: str, heartbeat: Callable[[], None],
                       stopping: threading.Event, lock: ChainLock, publish: Publish | None) -> None:
    from transfer_daemon.db.pool import open_pool
    from transfer_daemon.upstream import make_source

    chain = config.chain(chain_name)
    pool = open_pool(database_url, config.database.pool_min, max(2, config.database.pool_max),
                     f"worker[{chain.name}]")
    ctx = context.IngestContext(config=config, chain=chain, pool=pool, source=None, stopping=threading.Event())
    ctx.source = make_source(chain, limiter_dir=str(Path(config.daemon.data_dir) / "limiter"),
                             retry=retry_policy(chain.poll_interval_s), on_attempt=ctx.progress)
    runner = JobRunner(ctx, config)
    try:
        runner.start()
        while not stopping.is_set() and lock.alive():
            if not runner.stuck(config.daemon.heartbeat_timeout / 2):
                heartbeat()
            runner.tick(publish)
            stopping.wait(TICK_S)
        if not stopping.is_set():
            log.error("lost chain=%s lock (database connection gone); stopping jobs", chain.name)
    finally:
        runner.stop(config.daemon.shutdown_timeout * 0.75)
        pool.close()
        lock.release()


class JobRunner:
    """The scheduler and its jobs for one chain. Each job has max_instances=1 and coalesce, so
    no job overlaps itself and missed runs collapse into one."""

    def __init__(self, ctx: context.IngestContext, config: Config) -> None:
        self.ctx = ctx
        self.config = config
        self.running: dict[str, float] = {}  # job id -> monotonic start
        self.started_at = time.time()
        self.synced_at: float | None = None  # a sync last reached the head (store's synced_at)
        self._lock = threading.Lock()
        # retention has a thread of its own: a month's REINDEX must not hold up sync for its duration
        executors = {"default": ThreadPoolExecutor(max_workers=config.ingest.concurrency),
                     "upkeep": ThreadPoolExecutor(max_workers=1)}
        defaults = {"max_instances": 1, "coalesce": True, "misfire_grace_time": None}
        self.scheduler = BackgroundScheduler(executors=executors, job_defaults=defaults, timezone="UTC")
        ctx.on_changed = lambda: self._run_soon("warm")

    def start(self) -> None:
        chain = self.ctx.chain
        context.refresh_stops(self.ctx)  # a halt or pause recorded before this worker started
        now = datetime.now().astimezone()
        logging.getLogger("apscheduler.scheduler").addFilter(_not_an_expected_skip)

        def add(job_id: str, body: Callable[[context.IngestContext], object], *trigger, **options) -> None:
            self.scheduler.add_job(self._tracked(job_id, body), *trigger, id=job_id,
                                   name=f"{job_id} chain={chain.name}", **options)

        add("sync", self._sync, "interval", seconds=chain.poll_interval_s, next_run_time=now)
        add("backfill", self._backfill, "interval", seconds=1, next_run_time=now + timedelta(seconds=0.1))
        add("warm", upkeep.warm, "interval", seconds=HOUR)
        add("retention", upkeep.retention, "interval", seconds=DAY, next_run_time=now + timedelta(seconds=5),
            executor="upkeep")
        # nightly, spread over the hour by chain so several chains don't verify at once
        add("verify", self._verify, "cron", hour=3, minute=chain.id % 60)
        self._read_synced_at()
        self.scheduler.start()

    def _read_synced_at(self) -> None:
        with self.ctx.pool.connection() as conn:
            self.synced_at = store.freshness(conn, (self.ctx.chain_id,))[self.ctx.chain_id].last_ingested_at

    def _sync(self, ctx: context.IngestContext) -> None:
        sync_job.sync(ctx)
        self._read_synced_at()

    def _backfill(self, ctx: context.IngestContext) -> None:
        progress = metrics.BACKFILL_PROGRESS.labels(ctx.chain.name)
        with ctx.pool.connection() as conn:  # the share syncs added since, before a window commits
            progress.set(planning.backfill_share(store.get_cursor(conn, ctx.chain_id)))
        # bounded by the poll interval so a sync sharing the one executor thread is never starved
        if backfill_job.backfill(ctx, budget_s=ctx.chain.poll_interval_s,
                                 progress=lambda cursor: progress.set(planning.backfill_share(cursor))):
            progress.set(1.0)
            self.scheduler.reschedule_job("backfill", trigger="interval", seconds=HOUR)

    def _verify(self, ctx: context.IngestContext) -> None:
        # bounded like backfill so a sync sharing the executor thread is never starved; an
        # unfinished pass resumes shortly, and once the day is covered the cron waits for the next night
        if not upkeep.verify(ctx, budget_s=ctx.chain.poll_interval_s):
            self._run_soon("verify", delay_s=VERIFY_RESUME_S)

    def _tracked(self, name: str, body: Callable[[context.IngestContext], object]) -> Callable[[], None]:
        def run() -> None:
            with self._lock:
                self.running[name] = time.monotonic()
            metrics.JOB_RUNS.labels(self.ctx.chain.name, name).inc()
            try:
                # sync runs every poll interval: it adopts recorded stops and probes a paused upstream
                context.run_guarded(self.ctx, name, body, gate=name == "sync")
            except Exception:
                metrics.JOB_FAILURES.labels(self.ctx.chain.name, name).inc()
                log.exception("failed chain=%s job=%s", self.ctx.chain.name, name)
            finally:
                with self._lock:
                    self.running.pop(name, None)

        return run

    def _run_soon(self, job_id: str, delay_s: float = 0.0) -> None:
        job = self.scheduler.get_job(job_id)
        if job is not None:
            job.modify(next_run_time=datetime.now().astimezone() + timedelta(seconds=delay_s))

    def queued_jobs(self, now: datetime) -> int:
        """Jobs running or due (their next run time has passed): the chain's backlog."""
        due = {job.id for job in self.scheduler.get_jobs() if job.next_run_time and job.next_run_time <= now}
        with self._lock:
            return len(due | set(self.running))

    def tick(self, publish: Publish | None) -> None:
        """Every tick: the lag gauge keeps moving while syncs fail, the backlog is published.
        Before the first completed sync the lag counts from the worker's start (a lower bound)."""
        chain = self.ctx.chain.name
        queued = self.queued_jobs(datetime.now().astimezone())
        metrics.INGEST_LAG.labels(chain).set(max(0.0, time.time() - (self.synced_at or self.started_at)))
        metrics.QUEUED_JOBS.labels(chain).set(queued)
        if publish is not None:
            publish(queued, self.ctx.backfill_span)

    def stuck(self, limit_s: float) -> bool:
        """A job running with no progress (`IngestContext.progress`) for `limit_s`: stop the
        heartbeat so the supervisor restarts us. Slow work that progresses is not stuck: one
        call may retry for minutes, and every attempt counts."""
        now = time.monotonic()
        with self._lock:
            return any(now - max(started, self.ctx.last_progress) > limit_s for started in self.running.values())

    def stop(self, grace_s: float) -> None:
        """Stop scheduling; let the current batches finish or abandon atomically within `grace_s`."""
        self.ctx.stopping.set()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        deadline = time.monotonic() + grace_s
        while self.running and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.running:
            log.warning("abandoned chain=%s jobs=%s still running at stop", self.ctx.chain.name,
                        ",".join(sorted(self.running)))


def backfill_foreground(config: Config, chain_name: str, days: int | None,
                        progress_callback: Callable[[Cursor, float], None] | None = None) -> Cursor:
    """`transfer-daemon backfill`: run one chain's backfill to completion in this process.

    `days` overrides backfill_days (and start_block). Takes the chain's advisory lock, so it
    refuses to run beside a worker that is ingesting the chain (that worker backfills already).
    `progress_callback(cursor, share)` is called after every committed window.
    """
    from transfer_daemon.db.bootstrap import migrate, resolve_database_url
    from transfer_daemon.db.pool import open_pool
    from transfer_daemon.upstream import make_source

    chain = config.chain(chain_name)
    if days is not None:
        chain = replace(chain, backfill_days=days, start_block=None)
        config = replace(config, chains=tuple(chain if c.id == chain.id else c for c in config.chains))
    database_url = resolve_database_url(config)
    migrate(database_url)
    lock = ChainLock(database_url, chain.id, chain.name)
    if not lock.try_acquire():
        raise AlreadyRunning(f"chain {chain.name} is being ingested by a running worker, which backfills it")
    pool = open_pool(database_url, 1, 2, f"backfill[{chain.name}]")
    try:
        source = make_source(chain, limiter_dir=str(Path(config.daemon.data_dir) / "limiter"))
        ctx = context.IngestContext(config=config, chain=chain, pool=pool, source=source)

        def report(cursor: Cursor) -> None:
            if progress_callback is not None:
                progress_callback(cursor, planning.backfill_share(cursor))

        _refuse_if_stopped(ctx)
        backfill_job.backfill(ctx, progress=report)
        with pool.connection() as conn:
            return store.get_cursor(conn, chain.id)
    finally:
        pool.close()
        lock.release()


def _refuse_if_stopped(ctx: context.IngestContext) -> None:
    """A foreground backfill respects the chain's recorded halt or pause as the worker does."""
    context.refresh_stops(ctx)
    if ctx.halted or ctx.pause is not None:
        stopped = "halted" if ctx.halted else f"paused ({ctx.pause.reason})"
        raise TransferDaemonError(f"chain {ctx.chain.name} is {stopped}; `transfer-daemon resume --chain "
                                  f"{ctx.chain.name}` clears it")
