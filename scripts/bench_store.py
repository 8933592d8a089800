"""Benchmark of the store (not a test): write path vs raw COPY, query latency, bytes per row.

    python scripts/bench_store.py [--url URL] [--rows 1000000] [--query-rows 5000000]

(a) write_batch (rows + cursor + event in one transaction) in batches of 1,000 and 10,000, beside
    a raw binary COPY of the same rows into the same table, in the same run;
(b) p50/p99 of query_transfers: page 1 of a chain, aggregate page 1, a cursor page 10,000 rows
    deep, an address filter — on --query-rows rows loaded with SQL;
(c) bytes per stored transfer: heap + indexes (+ the per-block table).
Uses a throwaway embedded Postgres unless --url names a server (a database `td_bench` is
created on it and dropped at the end).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg.types.string import BytesBinaryDumper

from transfer_daemon import store
from transfer_daemon.db.bootstrap import EmbeddedPostgres
from transfer_daemon.db.migrate import migrate
from transfer_daemon.model import Cursor, IngestEvent, Transfer

NOW = int(time.time())
TOKENS = {1: [bytes([1, k]) * 10 for k in range(3)], 25: [bytes([25, k]) * 10 for k in range(2)]}


def synthetic(chain_id: int, count: int, batch: int, per_block: int, seed: int) -> Iterator[list[Transfer]]:
    """Batches of transfers ending now: `per_block` rows per 12-second block, skewed addresses."""
    rng = random.Random(seed)
    addresses = [rng.randbytes(20) for _ in range(50_000)]
    first_block = 10_000_000
    blocks = count // per_block + 1
    for start in range(0, count, batch):
        rows = []
        for i in range(start, min(start + batch, count)):
            block = first_block + i // per_block
            rows.append(Transfer(
                chain_id, block, NOW - (blocks - i // per_block) * 12, rng.randbytes(32), i % per_block,
                addresses[int(len(addresses) * rng.random() ** 3)], addresses[rng.randrange(len(addresses))],
                rng.randrange(10**24), TOKENS[chain_id][i % len(TOKENS[chain_id])], block.to_bytes(32, "big"),
                rng.randrange(21_000, 200_000), rng.randrange(10**9, 10**11), "0xa9059cbb",
            ))
        yield rows


def reset(conn: psycopg.Connection) -> None:
    """Each pass starts from the same state: empty tables and a checkpoint just done. Without the
    checkpoint, a new cluster keeps every WAL segment it writes and zero-fills a new 16 MB file for
    each one (9 % of the server's time in a 1,000-row COPY); a server in its steady state renames
    the segments a checkpoint has freed instead."""
    conn.execute("TRUNCATE transfers, blocks, ingest_cursors, ingest_events")
    conn.execute("VACUUM ANALYZE")
    conn.execute("CHECKPOINT")


def chunks(rows: list[Transfer], size: int) -> Iterator[list[Transfer]]:
    return (rows[start:start + size] for start in range(0, len(rows), size))


def timed_write_batch(conn: psycopg.Connection, rows_in: list[Transfer], batch: int, overlap: int) -> float:
    """With `overlap`, every batch also repeats the previous batch's last rows (as sync does)."""
    reset(conn)
    spent = 0.0
    previous: list[Transfer] = []
    for fresh in chunks(rows_in, batch):
        rows = previous[-overlap:] + fresh if overlap else fresh
        previous = fresh
        began = time.perf_counter()
        store.write_batch(conn, 1, rows, cursor=Cursor(1, synced_block=rows[-1].block_number),
                          event=IngestEvent(1, "ingested", rows=len(rows)))
        spent += time.perf_counter() - began
    return spent


def timed_raw_copy(conn: psycopg.Connection, rows_in: list[Transfer], batch: int) -> float:
    reset(conn)
    streams = {bytes(c): s for s, c in conn.execute("SELECT stream_id, contract FROM streams WHERE chain_id = 1")}
    types = ["int8", "int8", "int4", "int4", "int2", "bytea", "bytea", "bytea", "numeric", "bytea", "bytea"]
    method = int.from_bytes(bytes.fromhex("a9059cbb"), "big", signed=True)
    spent = 0.0
    for rows in chunks(rows_in, batch):
        began = time.perf_counter()
        with conn.transaction(), conn.cursor() as cur:
            cur.adapters.register_dumper(bytes, BytesBinaryDumper)  # the C bytea dumper, as the store uses
            with cur.copy("COPY transfers FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(types)
                for t in rows:
                    used, price = t.gas_used, t.gas_price  # in their stored form, as the store writes them
                    copy.write_row((t.time_stamp, t.block_number, t.log_index, method, streams[t.contract_address],
                                    t.tx_hash, t.from_address, t.to_address, t.value,
                                    used.to_bytes((used.bit_length() + 7) >> 3, "big"),
                                    price.to_bytes((price.bit_length() + 7) >> 3, "big")))
        spent += time.perf_counter() - began
    return spent


def sizes(conn: psycopg.Connection) -> tuple[int, dict[str, int]]:
    rows = conn.execute("SELECT count(*) FROM transfers").fetchone()[0]
    parts = dict(conn.execute(
        "SELECT 'heap', sum(pg_table_size(c.oid)) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'transfers'::regclass"
        " UNION ALL SELECT p.relname, sum(pg_relation_size(ci.inhrelid)) FROM pg_inherits ci"
        " JOIN pg_class p ON p.oid = ci.inhparent WHERE p.relname IN"
        " ('transfers_key', 'transfers_from_idx', 'transfers_to_idx') GROUP BY p.relname"
        " UNION ALL SELECT 'blocks', pg_total_relation_size('blocks')"
    ).fetchall())
    return rows, {k: int(v or 0) for k, v in parts.items()}


def print_sizes(label: str, conn: psycopg.Connection) -> None:
    rows, parts = sizes(conn)
    total = sum(parts.values())
    detail = " ".join(f"{k}={v / rows:.1f}" for k, v in parts.items())
    print(f"(c) bytes/row {label}: {total / rows:.1f} total over {rows:,} rows ({detail}); target <= 300")


LOAD_SQL = """
INSERT INTO {target} (time_stamp, block_number, stream_id, log_index, tx_hash, from_address, to_address,
                      value, gas_used, gas_price, method_id)
SELECT %(now)s - (%(n)s / %(pb)s - i / %(pb)s) * %(bt)s, 20000000 + i / %(pb)s,
       (%(streams)s::int[])[1 + i %% cardinality(%(streams)s::int[])], (i %% %(pb)s)::int,
       sha256(int8send(i * 100 + %(chain)s)),
       substr(sha256(int8send((200000 * random() ^ 3)::bigint)), 1, 20),
       substr(sha256(int8send((200000 * random())::bigint)), 1, 20),
       floor(random() * 1e24)::numeric, td_uint_bytes((21000 + random() * 180000)::bigint),
       td_uint_bytes((1e9 + random() * 1e11)::bigint), x'a9059cbb'::integer
FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) i
"""


def load_query_set(conn: psycopg.Connection, total: int, per_block: int) -> None:
    """`total` rows over two chains, straight into the tables with SQL (fast, not the write path)."""
    reset(conn)
    for chain, tokens in TOKENS.items():
        conn.execute("INSERT INTO streams (chain_id, contract) SELECT %s, unnest(%s::bytea[]) ON CONFLICT DO NOTHING",
                     (chain, tokens))
    share = {1: total * 7 // 10, 25: total - total * 7 // 10}
    block_time = {1: 12, 25: 6}
    for chain, n in share.items():
        streams = [sid for sid, in conn.execute("SELECT stream_id FROM streams WHERE chain_id = %s", (chain,))]
        span = (n // per_block + 1) * block_time[chain]
        from transfer_daemon.db import partitions

        partitions.ensure_months(conn, NOW - span - 86400, NOW + 86400)
        params = {"now": NOW, "n": n, "pb": per_block, "bt": block_time[chain], "streams": streams, "chain": chain}
        step = 500_000
        for lo in range(0, n, step):
            with conn.transaction():
                conn.execute(LOAD_SQL.format(target="transfers"), {**params, "lo": lo, "hi": min(lo + step, n) - 1})
            print(f"    loaded chain {chain}: {min(lo + step, n):,}/{n:,}", file=sys.stderr)
        conn.execute(
            "INSERT INTO blocks SELECT %s, block_number, min(time_stamp), sha256(int8send(block_number))"
            " FROM transfers WHERE stream_id = ANY(%s) GROUP BY block_number", (chain, streams))
        conn.execute("INSERT INTO ingest_cursors (chain_id, last_ingested_at) VALUES (%s, now())", (chain,))
    conn.execute("VACUUM ANALYZE")


def percentiles(conn: psycopg.Connection, make_query, runs: int) -> tuple[float, float]:
    samples = []
    for i in range(runs):
        query = make_query(i)
        began = time.perf_counter()
        store.query_transfers(conn, query)
        samples.append((time.perf_counter() - began) * 1000)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.99))]


def bench_queries(conn: psycopg.Connection, runs: int) -> None:
    from transfer_daemon.store import TransferQuery

    deep, cursor = 0, None
    while deep < 10_000:
        page = store.query_transfers(conn, TransferQuery((1,), page_size=100, cursor=cursor))
        cursor, deep = page.next_cursor, deep + 100
    addresses = [bytes(a) for a, in conn.execute(
        "SELECT from_address FROM transfers TABLESAMPLE SYSTEM (1) LIMIT %s", (runs,))]
    hot = conn.execute("SELECT substr(sha256(int8send(0::bigint)), 1, 20)").fetchone()[0]
    shapes = {
        "page 1 chain 1": lambda i: TransferQuery((1,)),
        "page 1 chain 25": lambda i: TransferQuery((25,)),
        "aggregate page 1": lambda i: TransferQuery(()),
        "aggregate page 1 asc": lambda i: TransferQuery((), sort="asc"),
        "cursor 10,000 deep": lambda i: TransferQuery((1,), cursor=cursor),
        "address (sampled)": lambda i: TransferQuery((), address=addresses[i % len(addresses)]),
        "address (hottest)": lambda i: TransferQuery((), address=bytes(hot)),
        "contract + block range": lambda i: TransferQuery((1,), contract=TOKENS[1][1],
                                                           from_block=20_100_000, to_block=20_200_000),
    }
    for name, make in shapes.items():
        percentiles(conn, make, 20)  # warm the cache and the prepared statements
        p50, p99 = percentiles(conn, make, runs)
        print(f"(b) {name:<24} p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  (target p99 <= 5 ms)")


def _with_db(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a server URL (default: a throwaway embedded Postgres)")
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows for the write path")
    parser.add_argument("--query-rows", type=int, default=5_000_000, help="rows for the query benchmark")
    parser.add_argument("--batches", default="1000,10000", help="write_batch sizes")
    parser.add_argument("--per-block", type=int, default=10, help="transfers per block")
    parser.add_argument("--runs", type=int, default=500, help="queries per shape")
    args = parser.parse_args()
    embedded = None
    server_url = args.url
    if server_url is None:
        embedded = EmbeddedPostgres(tempfile.mkdtemp(prefix="tdb-", dir="/tmp"))
        server_url = embedded.start()
    try:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute("DROP DATABASE IF EXISTS td_bench WITH (FORCE)")
            admin.execute("CREATE DATABASE td_bench")
        url = _with_db(server_url, "td_bench")
        migrate(url)
        with psycopg.connect(url, autocommit=True) as conn:
            run(conn, args)
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute("DROP DATABASE IF EXISTS td_bench WITH (FORCE)")
    finally:
        if embedded is not None:
            embedded.stop()
            import shutil

            shutil.rmtree(Path(embedded.pgdata).parent, ignore_errors=True)


def run(conn: psycopg.Connection, args) -> None:
    print(f"store benchmark: {args.rows:,} write rows, {args.query_rows:,} query rows, "
          f"{args.per_block} transfers/block, server {conn.info.server_version}")
    if args.rows:
        store.write_batch(conn, 1, next(synthetic(1, 10, 10, args.per_block, seed=9)), cursor=None, event=None)
        # Generated once, before any timed loop, so that raw COPY and write_batch write the very same
        # rows and generating a batch (6 ms of Python per 1,000 rows) does not sit between two timed
        # writes, leaving the server idle and both processes' caches cold for the next one.
        rows = [t for batch in synthetic(1, args.rows, 10_000, args.per_block, seed=1) for t in batch]
        # One untimed pass first: the first write into a new cluster also creates its WAL segments
        # (recycled by the passes after it, see reset) and warms both processes.
        began = time.perf_counter()
        timed_raw_copy(conn, rows, 10_000)
        print(f"    warm-up pass (raw COPY, untimed) in {time.perf_counter() - began:.0f} s", file=sys.stderr)
        for batch in (int(b) for b in args.batches.split(",")):
            # Each way is run twice, in the order new, raw, overlap, overlap, raw, new: this machine's
            # speed drifts over a minute, and the mirrored order gives each way the same share of it
            # (and leaves the table as write_batch wrote it, for the sizes below).
            spent: dict[str | int, list[float]] = {"raw": [], 0: [], 1: []}
            for way in (0, "raw", 1, 1, "raw", 0):
                spent[way].append(timed_raw_copy(conn, rows, batch) if way == "raw"
                                  else timed_write_batch(conn, rows, batch, way))
            rates = {way: (2 * args.rows / sum(times), " and ".join(f"{args.rows / t:,.0f}" for t in times))
                     for way, times in spent.items()}
            raw_rate, raw_passes = rates["raw"]
            print(f"(a) raw binary COPY        {batch:>6,}/tx: {raw_rate:10,.0f} rows/s"
                  f" (baseline; passes {raw_passes})")
            for overlap in (0, 1):
                rate, passes = rates[overlap]
                path = "overlapping: stored keys skipped" if overlap else "new key range"
                print(f"(a) write_batch+cursor+event {batch:>6,}/tx: {rate:10,.0f} rows/s = {rate / raw_rate:.2f} x "
                      f"raw COPY [{path}; passes {passes}] (targets >= 75,000 rows/s, >= 0.75 x)")
        print_sizes("after write_batch (open month: not compacted)", conn)
    if args.query_rows:
        began = time.perf_counter()
        load_query_set(conn, args.query_rows, args.per_block)
        print(f"    loaded {args.query_rows:,} rows in {time.perf_counter() - began:.0f} s", file=sys.stderr)
        print_sizes("query set, as loaded", conn)
        began = time.perf_counter()
        compacted = store.compact_closed_partitions(conn, NOW)
        print_sizes(f"query set, closed months compacted ({', '.join(compacted)}, "
                    f"{time.perf_counter() - began:.0f} s)", conn)
        bench_queries(conn, args.runs)


if __name__ == "__main__":
    main()
