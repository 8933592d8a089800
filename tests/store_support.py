"""Synthetic transfers for the store tests: deterministic, many rows per second and per block."""

from __future__ import annotations

import random

import psycopg

from transfer_daemon.db import partitions
from transfer_daemon.model import Transfer

BASE_TS = 1_700_000_000


def make_transfers(chain_id: int, count: int, *, seed: int = 1, start_block: int = 1000, per_block: int = 7,
                   blocks_per_second: int = 3, contracts: int = 3, addresses: int = 40,
                   base_ts: int = BASE_TS) -> list[Transfer]:
    """`count` transfers; several blocks share a second and several rows share a block."""
    rng = random.Random(seed * 1_000_003 + chain_id)
    pool = [rng.randbytes(20) for _ in range(addresses)]
    tokens = [bytes([chain_id % 256, k]) * 10 for k in range(contracts)]
    rows = []
    for i in range(count):
        block = start_block + i // per_block
        rows.append(Transfer(
            chain_id=chain_id, block_number=block, time_stamp=base_ts + (block - start_block) // blocks_per_second,
            tx_hash=rng.randbytes(32), log_index=i % per_block, from_address=rng.choice(pool),
            to_address=rng.choice(pool), value=rng.randrange(0, 10**24), contract_address=rng.choice(tokens),
            block_hash=block.to_bytes(32, "big"), gas_used=rng.randrange(21000, 300000),
            gas_price=rng.randrange(10**9, 10**11), method_id="0xa9059cbb",
        ))
    return rows


def stream_ids(conn: psycopg.Connection) -> dict[tuple[int, bytes], int]:
    return {(c, bytes(k)): s for s, c, k in conn.execute("SELECT stream_id, chain_id, contract FROM streams")}


def sort_key(t: Transfer, streams: dict[tuple[int, bytes], int]) -> tuple:
    """The store's total order: time, block, log index, then stream."""
    return (t.time_stamp, t.block_number, t.log_index, streams[(t.chain_id, t.contract_address)])


def count_rows(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT count(*) FROM transfers").fetchone()[0]


def old_months(conn: psycopg.Connection, first: int, last: int) -> None:
    """Monthly partitions as releases before migration 0008 made them: statistics on the address and
    its last 4 bytes (td_addr32), the address key of their indexes."""
    for year, month in partitions.months_between(first, last):
        name = partitions.partition_name(year, month)
        start, end = partitions.month_bounds(year, month)
        conn.execute(f"CREATE TABLE {name} PARTITION OF transfers FOR VALUES FROM ({start}) TO ({end})")
        for column in ("from_address", "to_address"):
            conn.execute(f"CREATE STATISTICS {name}_{column[:-8]}_stx (dependencies)"
                         f" ON {column}, td_addr32({column}) FROM {name}")
