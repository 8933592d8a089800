"""Reads of the ingest state: cursors, stored block hashes and keys, events, freshness, stats.

The reads of `blocks` and `transfers` here run once per cycle, not per batch, so they are planned
on each call (`prepare=False`): a plan cached while a table was empty would seq-scan it forever.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import psycopg

from transfer_daemon.db import partitions
from transfer_daemon.model import Cursor, Halt, Pause, Transfer


@dataclass(frozen=True, slots=True)
class Freshness:
    """A chain's freshness (DESIGN "Contract: freshness") as the store knows it."""

    chain_id: int
    last_ingested_at: float | None  # unix seconds: a sync last finished up to the upstream's head
    newest_transfer_at: int | None  # unix seconds of the newest stored transfer
    lag_seconds: float | None  # now - last_ingested_at; None before the first completed sync
    complete_from: int | None = None  # unix seconds: the store holds every transfer from then on
    history_complete: bool = False  # backfill reached its target


@dataclass(frozen=True, slots=True)
class ChainStats:
    chain_id: int
    rows: int
    oldest_block: int | None
    newest_block: int | None
    oldest_time: int | None
    newest_time: int | None

@dataclass(frozen=True, slots=True)
class StorageStats:
    database: str
    size_bytes: int
    oldest_month: int | None  # unix seconds: start of the oldest monthly partition
    newest_month: int | None  # unix seconds: start of the newest (partitions are made ahead)


def get_cursor(conn: psycopg.Connection, chain_id: int) -> Cursor:
    row = conn.execute(
        "SELECT synced_block, backfilled_block, backfill_target_block, backfill_done, synced_hash"
        " FROM ingest_cursors WHERE chain_id = %s",
        (chain_id,),
    ).fetchone()
    if row is None:
        return Cursor(chain_id)
    *head, synced_hash = row
    return Cursor(chain_id, *head, synced_hash=None if synced_hash is None else bytes(synced_hash))


def get_stops(conn: psycopg.Connection, chain_id: int) -> tuple[Halt | None, Pause | None]:
    """The chain's recorded halt and pause (None each when it has none)."""
    row = conn.execute(
        "SELECT extract(epoch FROM halted_at)::float8, halted_reason, paused_reason,"
        " extract(epoch FROM paused_at)::float8, extract(epoch FROM paused_until)::float8, paused_message,"
        " paused_config, extract(epoch FROM paused_probed_at)::float8 FROM ingest_cursors WHERE chain_id = %s",
        (chain_id,),
    ).fetchone()
    if row is None:
        return None, None
    halted_at, halted_reason, reason, since, until, message, config, probed_at = row
    halt = None if halted_at is None else Halt(halted_reason or "", halted_at)
    pause = None if reason is None else Pause(reason, since, until, message or "", config or "", probed_at)
    return halt, pause


def stream_id(conn: psycopg.Connection, chain_id: int, contract: bytes) -> int | None:
    """The id the store orders a (chain, contract)'s rows by among equal keys; None before its first row."""
    row = conn.execute("SELECT stream_id FROM streams WHERE chain_id = %s AND contract = %s",
                       (chain_id, contract)).fetchone()
    return None if row is None else row[0]


def stored_block_hashes(conn: psycopg.Connection, chain_id: int, from_block: int, to_block: int) -> dict[int, bytes]:
    rows = conn.execute(
        "SELECT block_number, block_hash FROM blocks"
        " WHERE chain_id = %s AND block_number BETWEEN %s AND %s AND block_hash IS NOT NULL",
        (chain_id, from_block, to_block), prepare=False,
    )
    return {number: bytes(block_hash) for number, block_hash in rows}


def known_transfer_keys(conn: psycopg.Connection, chain_id: int, from_block: int,
                        to_block: int) -> set[tuple[bytes, int, bytes]]:
    """(tx_hash, log_index, contract) of the chain's stored transfers in [from_block, to_block]."""
    rows = conn.execute(
        "SELECT t.tx_hash, t.log_index, s.contract FROM streams s JOIN transfers t ON t.stream_id = s.stream_id"
        " WHERE s.chain_id = %(c)s AND t.block_number BETWEEN %(a)s AND %(b)s"
        " AND t.time_stamp >= (SELECT time_stamp FROM blocks WHERE chain_id = %(c)s AND block_number >= %(a)s"
        "  ORDER BY block_number LIMIT 1)"
        " AND t.time_stamp <= (SELECT time_stamp FROM blocks WHERE chain_id = %(c)s AND block_number <= %(b)s"
        "  ORDER BY block_number DESC LIMIT 1)",
        {"c": chain_id, "a": from_block, "b": to_block}, prepare=False,
    )
    return {(bytes(tx), log_index, bytes(contract)) for tx, log_index, contract in rows}


def recent_events(conn: psycopg.Connection, chain_id: int | None = None, limit: int = 50,
                  statuses: Sequence[str] | None = None) -> list[dict]:
    """Newest first: {id, chain_id, status, message, rows, detail, occurred_at (unix seconds)}."""
    rows = conn.execute(
        "SELECT id, chain_id, status, message, rows, detail, extract(epoch FROM occurred_at)::float8"
        " FROM ingest_events WHERE (%(chain)s::bigint IS NULL OR chain_id = %(chain)s)"
        " AND (%(statuses)s::text[] IS NULL OR status = ANY(%(statuses)s))"
        " ORDER BY id DESC LIMIT %(limit)s",
        {"chain": chain_id, "statuses": list(statuses) if statuses is not None else None, "limit": limit},
    )
    keys = ("id", "chain_id", "status", "message", "rows", "detail", "occurred_at")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def last_event(conn: psycopg.Connection, chain_id: int, statuses: Sequence[str]) -> dict | None:
    """The chain's newest event with one of `statuses`, or None (reads one index entry per status)."""
    events = recent_events(conn, chain_id, limit=1, statuses=statuses)
    return events[0] if events else None


def count_recent_events(conn: psycopg.Connection, chain_id: int, statuses: Sequence[str], since: float,
                        at_most: int = 1000) -> int:
    """How many of the chain's events with one of `statuses` occurred at or after `since` (unix
    seconds), counting at most `at_most` of the newest."""
    row = conn.execute(
        "SELECT count(*) FROM (SELECT occurred_at FROM ingest_events WHERE chain_id = %(chain)s"
        "  AND status = ANY(%(statuses)s) ORDER BY id DESC LIMIT %(limit)s) e"
        " WHERE e.occurred_at >= to_timestamp(%(since)s)",
        {"chain": chain_id, "statuses": list(statuses), "limit": at_most, "since": since},
    ).fetchone()
    return int(row[0]) if row else 0


def last_ingests(conn: psycopg.Connection, chain_id: int, instants: Sequence[float]) -> list[float | None]:
    """For each of `instants` (unix seconds), the chain's last `ingested` event at or before it (unix
    seconds; None if there is none): one index probe each, however many events there are."""
    rows = conn.execute(
        "SELECT (SELECT extract(epoch FROM e.occurred_at)::float8 FROM ingest_events e"
        "  WHERE e.chain_id = %(chain)s AND e.status = 'ingested' AND e.occurred_at <= to_timestamp(s.at)"
        "  ORDER BY e.occurred_at DESC LIMIT 1)"
        " FROM unnest(%(instants)s::float8[]) WITH ORDINALITY AS s(at, n) ORDER BY s.n",
        {"chain": chain_id, "instants": list(instants)},
    ).fetchall()
    return [at for at, in rows]


def freshness(conn: psycopg.Connection, chain_ids: Iterable[int], now: float | None = None) -> dict[int, Freshness]:
    """Per chain: when a sync last reached the head and the lag since, the newest stored transfer,
    and how far back the history is complete.

    The store is complete from the backfilled block on; its time is that of the first stored block
    at or above it (blocks without transfers are not stored, so this errs late, never early).
    """
    current = time.time() if now is None else now
    rows = conn.execute(
        "SELECT c.id, extract(epoch FROM k.synced_at)::float8,"
        " (SELECT b.time_stamp FROM blocks b WHERE b.chain_id = c.id ORDER BY b.block_number DESC LIMIT 1),"
        " (SELECT b.time_stamp FROM blocks b WHERE b.chain_id = c.id AND b.block_number >= k.backfilled_block"
        "  ORDER BY b.block_number LIMIT 1),"
        " coalesce(k.backfill_done, false)"
        " FROM unnest(%s::bigint[]) AS c(id) LEFT JOIN ingest_cursors k ON k.chain_id = c.id",
        (list(chain_ids),), prepare=False,
    )
    return {
        chain: Freshness(chain, last, newest, None if last is None else max(0.0, current - last), complete_from, done)
        for chain, last, newest, complete_from, done in rows
    }


def chain_stats(conn: psycopg.Connection, chain_id: int) -> ChainStats:
    row = conn.execute(
        "SELECT (SELECT row_count FROM ingest_cursors WHERE chain_id = %(c)s),"
        " o.block_number, n.block_number, o.time_stamp, n.time_stamp FROM"
        " (SELECT 1) one"
        " LEFT JOIN LATERAL (SELECT block_number, time_stamp FROM blocks WHERE chain_id = %(c)s"
        "  ORDER BY block_number LIMIT 1) o ON true"
        " LEFT JOIN LATERAL (SELECT block_number, time_stamp FROM blocks WHERE chain_id = %(c)s"
        "  ORDER BY block_number DESC LIMIT 1) n ON true",
        {"c": chain_id}, prepare=False,
    ).fetchone()
    assert row is not None
    return ChainStats(chain_id, row[0] or 0, *row[1:])


def data_version(conn: psycopg.Connection, chain_id: int) -> int:
    """Bumps in the same transaction as every write that changes the chain's transfers."""
    row = conn.execute("SELECT data_version FROM ingest_cursors WHERE chain_id = %s", (chain_id,)).fetchone()
    return 0 if row is None else row[0]


def stored_transfers(conn: psycopg.Connection, chain_id: int, contracts: Sequence[bytes], from_block: int,
                     to_block: int) -> list[Transfer]:
    """The chain's stored transfers of `contracts` in [from_block, to_block], without block hash
    and gas fields (what verify compares)."""
    rows = conn.execute(
        "SELECT t.block_number, t.time_stamp, t.tx_hash, t.log_index, t.from_address, t.to_address, t.value,"
        " s.contract FROM streams s JOIN transfers t ON t.stream_id = s.stream_id"
        " WHERE s.chain_id = %(c)s AND s.contract = ANY(%(contracts)s) AND t.block_number BETWEEN %(a)s AND %(b)s"
        " AND t.time_stamp >= (SELECT time_stamp FROM blocks WHERE chain_id = %(c)s AND block_number >= %(a)s"
        "  ORDER BY block_number LIMIT 1)"
        " AND t.time_stamp <= (SELECT time_stamp FROM blocks WHERE chain_id = %(c)s AND block_number <= %(b)s"
        "  ORDER BY block_number DESC LIMIT 1)",
        {"c": chain_id, "contracts": list(contracts), "a": from_block, "b": to_block}, prepare=False,
    )
    return [Transfer(chain_id, block, stamp, bytes(tx), log_index, bytes(sender), bytes(recipient), int(value),
                     bytes(contract))
            for block, stamp, tx, log_index, sender, recipient, value, contract in rows]


def blocks_around(conn: psycopg.Connection, chain_id: int, at: int
                  ) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
    """(block, time) of the newest stored block older than unix time `at`, and of the stored block
    after it; None where there is none. Read backward from the newest block: cheap for a recent `at`."""
    row = conn.execute(
        "SELECT o.block_number, o.time_stamp, n.block_number, n.time_stamp FROM (SELECT 1) one"
        " LEFT JOIN LATERAL (SELECT block_number, time_stamp FROM blocks WHERE chain_id = %(c)s"
        "  AND time_stamp < %(at)s ORDER BY block_number DESC LIMIT 1) o ON true"
        " LEFT JOIN LATERAL (SELECT block_number, time_stamp FROM blocks WHERE chain_id = %(c)s"
        "  AND block_number > o.block_number ORDER BY block_number LIMIT 1) n ON true",
        {"c": chain_id, "at": at}, prepare=False,
    ).fetchone()
    before = None if row[0] is None else (row[0], row[1])
    after = None if row[2] is None else (row[2], row[3])
    return before, after


def storage_stats(conn: psycopg.Connection) -> StorageStats:
    """The database's size on disk and the span of the monthly partitions."""
    name, size = conn.execute("SELECT current_database(), pg_database_size(current_database())").fetchone()
    months = sorted(partitions.existing(conn))
    if not months:
        return StorageStats(name, size, None, None)
    return StorageStats(name, size, partitions.month_bounds(*months[0])[0], partitions.month_bounds(*months[-1])[0])
