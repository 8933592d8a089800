"""Run the real supervisor with small child targets, for tests that need real processes and signals.

    python tests/supervisor_launcher.py CONFIG   (env TD_POLICY: JSON RestartPolicy overrides; TD_DETACH=1;
                                                  TD_SLOW_REVIVE=S: each database check takes S seconds)

Each configured chain becomes a worker whose behaviour its name picks (prefix before the first
'-'): ok (beats, exits on SIGTERM), crash (exits 3 at once), hang (never beats), stubborn
(ignores SIGTERM), leaky (logs its secrets, then behaves like ok), busy (publishes a backlog of 2
queued jobs and a backfill span of 500 blocks, then behaves like ok). An `api` child runs like ok.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable

from transfer_daemon.config import Config, ConfigError, load_config
from transfer_daemon.daemon.child import ChildSpec, RestartPolicy
from transfer_daemon.daemon.children import fingerprint
from transfer_daemon.daemon.heartbeat import Heartbeat
from transfer_daemon.daemon.start import run_start
from transfer_daemon.db import bootstrap
from transfer_daemon.errors import TransferDaemonError

log = logging.getLogger("tests.launcher")


def _serve(name: str, heartbeat: Callable[[], None] | None, stop_on_term: bool = True) -> None:
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, (lambda *_: stopping.append(1)) if stop_on_term else signal.SIG_IGN)
    log.info("up %s pid %d", name, os.getpid())
    while not stopping:
        if heartbeat:
            heartbeat()
        time.sleep(0.05)
    log.info("down %s", name)


def run_ok(config: Config, chain: str, url: str, heartbeat: Callable[[], None]) -> None:
    _serve(chain, heartbeat)


def run_crash(config: Config, chain: str, url: str, heartbeat: Callable[[], None]) -> None:
    log.error("crashing on purpose %s", chain)
    sys.exit(3)


def run_hang(config: Config, chain: str, url: str, heartbeat: Callable[[], None]) -> None:
    log.info("hanging %s", chain)
    while True:
        time.sleep(1)


def run_stubborn(config: Config, chain: str, url: str, heartbeat: Callable[[], None]) -> None:
    _serve(chain, heartbeat, stop_on_term=False)


def run_leaky(config: Config, chain: str, url: str, heartbeat: Callable[[], None]) -> None:
    secret = config.chain(chain).api_key(os.environ)
    log.warning("calling https://api.example/v2/api?module=account&apikey=%s for %s", secret, chain)
    log.warning("database postgresql://ingest:hunter2pass@db.internal/transfers for %s", chain)
    log.info("raw key %s in a message for %s", secret, chain)
    print(f"stray print with key {secret}", flush=True)
    _serve(chain, heartbeat)


def run_busy(config: Config, chain: str, url: str, heartbeat: Heartbeat) -> None:
    heartbeat.publish(2, 500)
    _serve(chain, heartbeat)


def run_api(config: Config, url: str) -> None:
    _serve("api", None)


def slow_revive(config: Config) -> bool:
    """A database check stuck in a long crash recovery."""
    log.warning("slow revive started")
    time.sleep(float(os.environ["TD_SLOW_REVIVE"]))
    log.warning("slow revive ended")
    return True


TARGETS = {"ok": run_ok, "crash": run_crash, "hang": run_hang, "stubborn": run_stubborn, "leaky": run_leaky,
           "busy": run_busy}


def build_specs(config: Config) -> list[ChildSpec]:
    specs = [
        ChildSpec(f"worker[{chain.name}]", TARGETS[chain.name.split("-")[0]], (config, chain.name, "postgresql://x"),
                  fingerprint(chain), chain=chain.name, heartbeat=True)
        for chain in config.chains
    ]
    specs.append(ChildSpec("api", run_api, (config, "postgresql://x"), fingerprint(config.api)))
    return specs


def main() -> int:
    policy = RestartPolicy(initial=0.05, maximum=0.4, jitter=0.0, stable_after=3.0, running_after=0.2,
                           max_failures=5, fatal_retry=30.0)
    policy = dataclasses.replace(policy, **json.loads(os.environ.get("TD_POLICY", "{}")))
    try:
        config = load_config(sys.argv[1])
        foreground = os.environ.get("TD_DETACH") != "1"
        if os.environ.get("TD_SLOW_REVIVE"):
            bootstrap.revive_embedded = slow_revive
        return run_start(config, foreground=foreground, build_specs=build_specs, policy=policy)
    except (TransferDaemonError, ConfigError) as exc:
        print(f"transfer-daemon: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
