"""Run `transfer-daemon demo` for a while; sample ingest lag per chain and the daemon's memory.

    python scripts/bench_demo.py [--seconds 120] [--interval 3] [--port P]

Lag comes from /api/cache-health every `interval` seconds; "steady" samples are those taken after
the chain's backfill finished. Memory is the RSS (and PSS, which counts shared pages once) summed
over the supervisor and its children (workers, API master and workers) from /proc — the simulator
and the embedded Postgres are reported apart. Baselines measured in the same run: the poll interval
for lag, and a bare interpreter that imports the same modules for memory (per-process floor).
Targets: steady-state lag <= poll interval + 5 s; supervisor + workers + API <= 400 MB RSS.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from transfer_daemon.demo import POLL_INTERVAL_S

LAG_TARGET_S = POLL_INTERVAL_S + 5
RSS_TARGET_MB = 400
_IMPORTS = ("import flask, gunicorn, psycopg, psycopg_pool, apscheduler, transfer_daemon.api,"
            " transfer_daemon.ingest.worker")


def _memory_kb(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in kB; (0, 0) for a process that is gone."""
    try:
        rss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                   if line.startswith("VmRSS:"))
        pss = next((int(line.split()[1]) for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
                    if line.startswith("Pss:")), 0)
    except (OSError, StopIteration):
        return 0, 0
    return rss, pss


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def daemon_tree(root: int) -> tuple[list[int], list[int]]:
    """(daemon pids: supervisor and descendants, simulator pids)."""
    daemon, simulator, todo = [], [], [root]
    while todo:
        pid = todo.pop()
        target = simulator if " simulate " in _command(pid) else daemon
        target.append(pid)
        todo += _children(pid)
    return daemon, simulator


def postgres_pids(data_dir: Path) -> list[int]:
    try:
        postmaster = int((data_dir / "pgdata" / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return []
    return daemon_tree(postmaster)[0]


def _sum_mb(pids: list[int]) -> tuple[float, float]:
    rss, pss = zip(*(_memory_kb(pid) for pid in pids), strict=True) if pids else ((0,), (0,))
    return sum(rss) / 1024, sum(pss) / 1024


def baseline_rss_mb() -> float:
    """RSS of one interpreter that imports what a daemon process imports, and nothing else."""
    probe = subprocess.Popen([sys.executable, "-c", f"{_IMPORTS}; import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)
    time.sleep(3)
    rss = _memory_kb(probe.pid)[0] / 1024
    probe.communicate(b"")
    return rss


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def sample_lag(port: int) -> dict[str, tuple[float | None, bool]]:
    """chain id -> (ingest lag, backfill done); {} while the API is not answering."""
    try:
        body = requests.get(f"http://127.0.0.1:{port}/api/cache-health", timeout=5).json()
    except (requests.RequestException, ValueError):
        return {}
    return {chain_id: (report.get("ingestLagSeconds"), bool((report.get("backfill") or {}).get("done")))
            for chain_id, report in (body.get("chains") or {}).items()}


def run(seconds: float, interval: float, port: int) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="bench-demo-"))
    output = data_dir.parent / f"{data_dir.name}.out"
    env = {k: v for k, v in os.environ.items() if k != "TRANSFERS_DATABASE_URL"}
    with open(output, "wb") as out:
        demo = subprocess.Popen([sys.executable, "-m", "transfer_daemon.cli", "demo", "--port", str(port),
                                 "--data-dir", str(data_dir)], stdout=out, stderr=subprocess.STDOUT, env=env)
    lags: dict[str, list[tuple[float, float | None, bool]]] = {}
    memory: list[tuple[float, float, float, float, float]] = []
    started = time.monotonic()
    try:
        while (elapsed := time.monotonic() - started) < seconds:
            for chain_id, (lag, done) in sample_lag(port).items():
                lags.setdefault(chain_id, []).append((elapsed, lag, done))
            daemon, simulator = daemon_tree(demo.pid)
            memory.append((elapsed, *_sum_mb(daemon), _sum_mb(simulator)[0], _sum_mb(postgres_pids(data_dir))[0]))
            time.sleep(interval)
        count = len(daemon_tree(demo.pid)[0])
    finally:
        stop_started = time.monotonic()
        demo.send_signal(signal.SIGTERM)
        code = demo.wait(60)
        stop_s = time.monotonic() - stop_started
    report(lags, memory, count, baseline_rss_mb(), seconds, code, stop_s)
    shutil.rmtree(data_dir, ignore_errors=True)
    output.unlink(missing_ok=True)


def report(lags: dict, memory: list, processes: int, baseline_mb: float, seconds: float, code: int,
           stop_s: float) -> None:
    print(f"demo ran {seconds:.0f} s; poll_interval_s = {POLL_INTERVAL_S}; lag target <= {LAG_TARGET_S} s")
    for chain_id, samples in sorted(lags.items(), key=lambda item: int(item[0])):
        steady = [lag for _, lag, done in samples if done and lag is not None]
        done_at = next((t for t, _, done in samples if done), None)
        first = "never" if done_at is None else f"{done_at:.0f} s"
        if not steady:
            print(f"chain {chain_id}: backfill done at {first}; no steady-state sample")
            continue
        last = steady[-max(1, len(steady) // 2):]  # the later half: after the first post-backfill catch-up
        print(f"chain {chain_id}: backfill done at {first}; steady lag over {len(steady)} samples:"
              f" median {statistics.median(steady):.0f} s, max {max(steady):.0f} s,"
              f" max of the later half {max(last):.0f} s;"
              f" ratio max/poll_interval {max(steady) / POLL_INTERVAL_S:.2f};"
              f" {'meets' if max(last) <= LAG_TARGET_S else 'misses'} the target")
    final = memory[-1]
    peak = max(memory, key=lambda m: m[1])
    print(f"memory at {final[0]:.0f} s, supervisor + workers + API ({processes} processes):"
          f" RSS {final[1]:.0f} MB (peak {peak[1]:.0f} MB), PSS {final[2]:.0f} MB;"
          f" target RSS <= {RSS_TARGET_MB} MB: {'meets' if peak[1] <= RSS_TARGET_MB else 'misses'}")
    print(f"baseline: one interpreter with the same imports {baseline_mb:.0f} MB RSS;"
          f" ratio daemon RSS / ({processes} x baseline) {final[1] / (processes * baseline_mb):.2f}")
    print(f"apart: simulator RSS {final[3]:.0f} MB, embedded Postgres RSS {final[4]:.0f} MB")
    print(f"stop: SIGTERM -> exit {code} in {stop_s:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--interval", type=float, default=3)
    parser.add_argument("--port", type=int, default=0, help="API port (default: a free one)")
    args = parser.parse_args()
    run(args.seconds, args.interval, args.port or free_port())


if __name__ == "__main__":
    main()
