"""Benchmark the API server (gunicorn, as `start` runs it) with wrk against N stored transfers.

    python scripts/bench_api.py [--rows 5000000] [--database-url URL | --embedded DIR] [--seconds 5]

Loads `--rows` synthetic transfers over two chains through the store's bulk path (skipped when the
bench database already holds them; migrations added since it was loaded are applied to it, their
time printed), one wallet (BUSY) in a tenth of them, nearly all on chain 1. Starts run_api with a
/_bench/static route serving a static JSON body as large as a warm page 1, warms the cache, then
runs wrk at 10 and 50 connections per query kind. It measures a server in its steady state: the
table vacuumed (as autovacuum leaves a table that has stopped growing: no first read sets hint
bits, which with data checksums costs a full-page WAL record) and every distinct request of a kind
answered once before that kind is timed (its pages read into memory, as on a server that has been
serving for a while); that cold first pass is printed too, as a comment line. Prints throughput,
p50 and p99 per kind, each kind's throughput as a ratio of the static body's, measured in the same
run on the same server, and the CPU time per request of the API workers and of their Postgres
backends (utime + stime from /proc, so the server must run on this host): on a shared machine a
steadier figure than requests/s.
Needs `wrk` on PATH (Debian: apt-get install wrk).
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from transfer_daemon import cache, store
from transfer_daemon.config import parse_config
from transfer_daemon.db.bootstrap import EmbeddedPostgres
from transfer_daemon.db.migrate import available_migrations, migrate
from transfer_daemon.model import Cursor, Transfer
from transfer_daemon.redact import redact_url

CHAINS = ((1, "ethereum"), (25, "cronos"))
ADDRESSES = [random.Random(i).randbytes(20) for i in range(20_000)]
#: the busiest wallet: sender or recipient of a fifth of chain 1's rows, of one in 10,000 on chain 25
BUSY = bytes.fromhex("b5" * 16) + bytes.fromhex("0badf00d")
BUSY_SHARE = {1: 0.2, 25: 0.0001}
CONTRACT = bytes.fromhex("aa" * 20)
BATCH = 100_000
WRK_LUA = r"""
local paths, i = {}, 0
for line in io.lines(os.getenv("BENCH_PATHS")) do paths[#paths + 1] = line end
request = function()
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT requests=%d seconds=%.3f errors=%d non2xx=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.duration / 1e6,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status, latency:percentile(50), latency:percentile(99)))
end
"""


def schema_stamp(rows: int, upto: int | None = None) -> str:
    """What the bench database holds: row count, data version, and the migrations applied to it
    (how many, and a digest of their text: one edited in place changes it, and the data is
    reloaded under the new schema)."""
    applied = [text for version, _, text in available_migrations() if upto is None or version <= upto]
    digest = hashlib.sha256("".join(applied).encode()).hexdigest()[:16]
    latest = max(v for v, _, _ in available_migrations()) if upto is None else upto
    return f"bench_api rows={rows} data=v3 migrations={latest} schema={digest}"


def _reusable(url: str, rows: int, found: str | None) -> bool:
    """Whether the stamped database holds `rows` under the packaged migrations up to the one it
    was stamped with; migrations added since are applied here (and timed) instead of reloading."""
    match = re.search(r"migrations=(\d+)", found or "")
    if match is None or found != schema_stamp(rows, int(match.group(1))):
        return False
    if found != schema_stamp(rows):
        started = time.monotonic()
        applied = migrate(url)
        print(f"# applied {applied} new migration(s) to the loaded store in {time.monotonic() - started:.1f} s")
    return True


def bench_database(server_url: str, rows: int) -> tuple[str, bool]:
    """(url, reusable): database `td_bench` beside the given one, recreated unless it holds `rows`
    loaded under the current schema or an earlier one (its COMMENT records which)."""
    url = urlunsplit(urlsplit(server_url)._replace(path="/td_bench"))
    with psycopg.connect(server_url, autocommit=True) as conn:
        found = conn.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database"
                             " WHERE datname = 'td_bench'").fetchone()
    if found is not None and _reusable(url, rows, found[0]):
        mark_loaded(server_url, rows)
        return url, True
    with psycopg.connect(server_url, autocommit=True) as conn:
        if found is not None:
            conn.execute("DROP DATABASE td_bench WITH (FORCE)")
        conn.execute("CREATE DATABASE td_bench")
    migrate(url)
    return url, False


def mark_loaded(server_url: str, rows: int) -> None:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("COMMENT ON DATABASE td_bench IS {}").format(sql.Literal(schema_stamp(rows))))


def _party(chain_id: int, rng: random.Random) -> tuple[bytes, bytes]:
    """(from, to): BUSY on one side of BUSY_SHARE of a chain's rows, random wallets otherwise."""
    sender, recipient = rng.choice(ADDRESSES), rng.choice(ADDRESSES)
    roll = rng.random()
    if roll < BUSY_SHARE[chain_id]:
        return (BUSY, recipient) if roll < BUSY_SHARE[chain_id] / 2 else (sender, BUSY)
    return sender, recipient


def generate(chain_id: int, start: int, count: int, total: int, now: int, span_s: int,
             rng: random.Random) -> list[Transfer]:
    """Rows `start`..`start + count` of a chain's `total`, spread evenly over the `span_s` before `now`,
    a block every 2 rows (both rows of a block share its time)."""
    out = []
    total_blocks = 10_000_000
    for n in range(start, start + count):
        sender, recipient = _party(chain_id, rng)
        out.append(Transfer(
            chain_id=chain_id, block_number=total_blocks + n // 2,
            time_stamp=now - span_s + n // 2 * 2 * span_s // total,
            tx_hash=rng.randbytes(32), log_index=n % 2, from_address=sender,
            to_address=recipient, value=rng.getrandbits(80), contract_address=CONTRACT,
            block_hash=rng.randbytes(32), gas_used=21000, gas_price=10**9, method_id="0xa9059cbb",
        ))
    return out


def load(url: str, rows: int) -> None:
    now, span = int(time.time()) - 3600, 60 * 86400
    per_chain = rows // len(CHAINS)
    rng = random.Random(7)
    started = time.monotonic()
    with psycopg.connect(url, autocommit=True) as conn:
        for chain_id, _ in CHAINS:
            for start in range(0, per_chain, BATCH):
                # every chain's rows span the same 60 days; n // 2 keeps whole blocks per batch
                batch = generate(chain_id, start, min(BATCH, per_chain - start), per_chain, now, span, rng)
                top = batch[-1].block_number
                store.write_batch(conn, chain_id, batch, cursor=Cursor(chain_id, synced_block=top), event=None)
    print(f"# loaded {per_chain * len(CHAINS)} transfers in {time.monotonic() - started:.0f} s")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(base: str, path: str) -> bytes:
    with urllib.request.urlopen(base + path, timeout=60) as response:
        return response.read()


def deep_cursors(base: str, rng: random.Random, count: int) -> list[str]:
    """nextCursor values of pages that start at random points deep in history."""
    import json

    out = []
    now = int(time.time())
    for _ in range(count):
        chain_id = rng.choice([c for c, _ in CHAINS])
        until = now - rng.randint(5, 55) * 86400
        page = json.loads(get(base, f"/api/transfers?chainId={chain_id}&until={until}&pageSize=25"))
        out.append(f"/api/transfers?chainId={chain_id}&until={until}&cursor={page['nextCursor']}")
    return out


def query_kinds(base: str) -> dict[str, list[str]]:
    rng = random.Random(11)
    return {
        "static": ["/_bench/static"],
        "page1_chain": [f"/api/transfers?chainId={c}" for c, _ in CHAINS],
        "page1_aggregate": ["/api/transfers"],
        # page 1 straight from the store: since=0 bounds nothing but makes it a filtered (uncached) query
        "page1_uncached": [f"/api/transfers?chainId={c}&since=0" for c, _ in CHAINS],
        "aggregate_uncached": ["/api/transfers?since=0"],
        "cursor_deep": deep_cursors(base, rng, 200),
        "address": [f"/api/transfers?chainId={rng.choice([0, 1, 25])}&address=0x{rng.choice(ADDRESSES).hex()}"
                    for _ in range(500)],
        # addresses that end like BUSY: the key of the address indexes before migration 0008 (its last
        # 4 bytes), which anyone could match; after it they share nothing with BUSY
        "address_collision": [f"/api/transfers?chainId={rng.choice([0, 1])}&address=0x{rng.randbytes(16).hex()}"
                              f"{BUSY[-4:].hex()}" for _ in range(20)],
        # BUSY on the chain where it has few rows
        "address_other_chain": [f"/api/transfers?chainId=25&{name}=0x{BUSY.hex()}&sort={sort}"
                                for name in ("address", "from", "to") for sort in ("desc", "asc")],
    }


def run_wrk(base: str, paths: list[str], connections: int, seconds: int, workdir: Path) -> dict[str, float]:
    paths_file, lua = workdir / "paths.txt", workdir / "bench.lua"
    paths_file.write_text("\n".join(paths) + "\n")
    lua.write_text(WRK_LUA)
    threads = min(2, connections)
    result = subprocess.run(
        # a timeout as long as the server's, so that slow answers are measured rather than dropped
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "30s", "-s", str(lua), base],
        capture_output=True, text=True, env={**os.environ, "BENCH_PATHS": str(paths_file)}, check=True,
    )
    match = re.search(r"RESULT (.*)", result.stdout)
    if not match:
        raise RuntimeError(f"wrk printed no result: {result.stdout} {result.stderr}")
    figures = {k: float(v) for k, v in (pair.split("=") for pair in match.group(1).split())}
    figures["rps"] = figures["requests"] / figures["seconds"]
    return figures


def _cpu_seconds(pids: list[int]) -> float:
    """utime + stime of `pids` (a process that has exited counts 0)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of stat(5)
    return total / os.sysconf("SC_CLK_TCK")


def server_pids(server_pid: int, conn: psycopg.Connection) -> tuple[list[int], list[int]]:
    """(gunicorn workers, Postgres backends of the bench database other than `conn`'s)."""
    children = Path(f"/proc/{server_pid}/task/{server_pid}/children").read_text().split()
    backends = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                            " AND pid <> pg_backend_pid()").fetchall()
    return [int(pid) for pid in children], [pid for pid, in backends]


def cpu_times(server_pid: int, conn: psycopg.Connection) -> dict[int, float]:
    workers, backends = server_pids(server_pid, conn)
    return {**{pid: _cpu_seconds([pid]) for pid in workers}, **{-pid: _cpu_seconds([pid]) for pid in backends}}


def cpu_per_request(before: dict[int, float], after: dict[int, float], requests: float) -> tuple[float, float]:
    """(API µs, Postgres µs) per request; backends are keyed by -pid, those opened during the run start at 0."""
    used = {key: after[key] - before.get(key, 0.0) for key in after}
    api = sum(v for k, v in used.items() if k > 0)
    pg = sum(v for k, v in used.items() if k < 0)
    return api / requests * 1e6, pg / requests * 1e6


def with_static_route(static_body: bytes):
    """An app factory: the product's app plus GET /_bench/static, the baseline every kind is compared with."""
    from transfer_daemon.api import create_app, json_response

    def factory(config, url: str):
        app = create_app(config, url)
        app.add_url_rule("/_bench/static", "bench_static", lambda: json_response(static_body))
        return app

    return factory


def serve(config, url: str, static_body: bytes) -> multiprocessing.Process:
    from transfer_daemon.api.server import run_api

    process = multiprocessing.get_context("fork").Process(
        target=run_api, args=(config, url), kwargs={"app_factory": with_static_route(static_body)}, daemon=False)
    process.start()
    return process


def wait_ready(base: str, deadline_s: float = 30) -> None:
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            get(base, "/healthz")
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--database-url", default=os.environ.get("TRANSFERS_TEST_DATABASE_URL",
                                                                 "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", default="10,50")
    parser.add_argument("--workers", type=int, default=None, help="api.workers (default: the config default)")
    parser.add_argument("--kinds", default="", help="comma-separated query kinds to run (default: all)")
    parser.add_argument("--threads", type=int, default=None, help="api.threads (default: the config default)")
    parser.add_argument("--embedded", metavar="DIR", help="use the embedded Postgres the product runs by default,"
                        " with its settings, kept in DIR between runs (instead of --database-url)")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("bench_api: wrk not found on PATH; install it (Debian: apt-get install wrk)", file=sys.stderr)
        return 2
    if args.embedded is None:
        return bench(args)
    embedded = EmbeddedPostgres(args.embedded)
    args.database_url = embedded.start()
    try:
        return bench(args)
    finally:
        embedded.stop()


def bench(args: argparse.Namespace) -> int:
    url, reusable = bench_database(args.database_url, args.rows)
    if reusable:
        print(f"# reusing {args.rows} stored transfers in {redact_url(url)}")
    else:
        load(url, args.rows)
        mark_loaded(args.database_url, args.rows)
    vacuum(url)
    workdir = Path(tempfile.mkdtemp(prefix="bench_api_"))
    port = free_port()
    config = parse_config({
        "daemon": {"data_dir": str(workdir / "data"), "log_file": ""},
        "api": {"port": port, **{k: v for k, v in (("workers", args.workers), ("threads", args.threads)) if v}},
        "chains": [{"id": c, "name": n, "kind": "etherscan", "base_url": "http://127.0.0.1:9/api",
                    "contracts": ["0x" + CONTRACT.hex()]} for c, n in CHAINS],
    }, {})
    with psycopg.connect(url, autocommit=True) as conn:
        cache.warm(config, conn)
        page = cache.compute_page(conn, (1,), 25, "desc")
    static_body = b'{"chainId":1,"page":1,"pageSize":25,"source":"store",' + page + b"}"
    base = f"http://127.0.0.1:{port}"
    server = serve(config, url, static_body)
    try:
        wait_ready(base)
        worker_class = "sync" if config.api.threads == 1 else "gthread"
        with psycopg.connect(url, autocommit=True) as monitor:
            report(base, args, workdir, f"{worker_class} workers={config.api.workers} threads={config.api.threads}",
                   lambda: cpu_times(server.pid, monitor))
    finally:
        server.terminate()
        server.join(30)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def vacuum(url: str) -> None:
    """VACUUM (ANALYZE): quick on a table vacuumed before (the visibility map skips its pages)."""
    started = time.monotonic()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")
    print(f"# vacuumed in {time.monotonic() - started:.0f} s")


def first_pass(base: str, paths: list[str]) -> str:
    """Each distinct path requested once, one at a time: the kind's cold pass, as a comment."""
    distinct = list(dict.fromkeys(paths))
    times = []
    for path in distinct:
        began = time.perf_counter()
        get(base, path)
        times.append(time.perf_counter() - began)
    return (f"cold first pass: {len(distinct)} distinct requests in {sum(times):.2f} s,"
            f" max {max(times) * 1000:.1f} ms")


def report(base: str, args: argparse.Namespace, workdir: Path, server: str,
           cpu: Callable[[], dict[int, float]]) -> None:
    kinds = query_kinds(base)
    if args.kinds:
        kinds = {k: v for k, v in kinds.items() if k == "static" or k in args.kinds.split(",")}
    print(f"# rows={args.rows} server=gunicorn {server} seconds={args.seconds} "
          f"static_body_bytes={len(get(base, '/_bench/static'))} load_average={os.getloadavg()[0]:.2f}")
    levels = [int(c) for c in args.connections.split(",")]
    first = levels[0]
    for connections in levels:
        static_rps = None
        for kind, paths in kinds.items():
            if connections == first:
                print(f"# {kind}: {first_pass(base, paths)}", flush=True)
            run_wrk(base, paths, connections, 1, workdir)  # warm-up: pool connections, cache handles
            before = cpu()
            f = run_wrk(base, paths, connections, args.seconds, workdir)
            api_us, pg_us = cpu_per_request(before, cpu(), f["requests"])
            static_rps = f["rps"] if kind == "static" else static_rps
            print(f"{kind:19s} c={connections:<3d} rps={f['rps']:8.0f} p50={f['p50_us'] / 1000:6.2f}ms "
                  f"p99={f['p99_us'] / 1000:6.2f}ms errors={int(f['errors'] + f['non2xx'])} "
                  f"ratio_vs_static={f['rps'] / static_rps:.2f} cpu_us_per_req={api_us + pg_us:5.0f} "
                  f"(api={api_us:4.0f} pg={pg_us:4.0f}) load1={os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
