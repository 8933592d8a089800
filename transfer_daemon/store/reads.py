"""Reads of the ingest state: cursors, stored block hashes and keys, events, freshness, stats.

The reads of `blocks` and `transfers` here run once per cycle, not per batch, so they are planned
on each call (`prepare=False`): a plan cached while a table was empty would seq-scan it forever.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import psycopg

from transfer_daemon.model import Cursor


@dataclass(frozen=True, slots=True)
class Freshness:
    chain_id: int
    last_ingested_at: float | None  # unix seconds of the last successful ingest commit
    newest_transfer_at: int | None  # unix seconds of the newest stored transfer
    lag_seconds: float | None  # now - last_ingested_at


@dataclass(frozen=True, slots=True)
class ChainStats:
    chain_id: int
    rows: int
    oldest_block: int | None
    newest_block: int | None
    oldest_time: int | None
    newest_time: int | None

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
    """Per chain: the last successful ingest, the newest stored transfer, and the lag since."""
    current = time.time() if now is None else now
    rows = conn.execute(
        "SELECT c.id, extract(epoch FROM k.last_ingested_at)::float8,"
        " (SELECT b.time_stamp FROM blocks b WHERE b.chain_id = c.id ORDER BY b.block_number DESC LIMIT 1)"
        " FROM unnest(%s::bigint[]) AS c(id) LEFT JOIN ingest_cursors k ON k.chain_id = c.id",
        (list(chain_ids),), prepare=False,
    )
    return {
        chain: Freshness(chain, last, newest, None if last is None else max(0.0, current - last))
        for chain, last, newest in rows
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
