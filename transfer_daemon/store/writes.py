"""The write path: a batch of transfers with its cursor and event in one transaction, reorg
repair, events.

Every function takes a psycopg Connection. Writers open and commit their own transaction, so
they need a connection outside a transaction (the pools from `db.pool` are autocommit).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from operator import attrgetter

import psycopg
from psycopg.types.json import Jsonb
from psycopg.types.string import BytesBinaryDumper

from transfer_daemon.db import partitions
from transfer_daemon.model import Cursor, Halt, IngestEvent, Pause, Quarantined, Transfer

log = logging.getLogger(__name__)

#: pg_advisory_xact_lock class serializing writers of one chain (second key: the chain id).
WRITE_LOCK_CLASS = 0x74640003
#: events whose recording counts as a commit (`last_ingested_at`; freshness is `synced_at`).
SUCCESS_STATUSES = frozenset({"ingested", "reorg"})
#: the columns of `transfers` in table order (migration 0004), as COPY sends them
_COPY_TYPES = ["int8", "int8", "int4", "int4", "int2", "bytea", "bytea", "bytea", "numeric", "bytea", "bytea"]
_contract, _time_stamp, _block = attrgetter("contract_address"), attrgetter("time_stamp"), attrgetter("block_number")
_log_index = attrgetter("log_index")
_INT4 = (-(2**31), 2**31 - 1)
# A plan cached while a table was small or empty (a seq scan) would stay in use as the table grows,
# until an ANALYZE replans it, and every call would read the whole table. So the reads of `blocks`
# and `transfers` are planned on each call (psycopg's `prepare=False`), but for the two a write
# transaction makes for every batch: those stay prepared (planning them would cost 0.15 ms a batch),
# and the transaction sets `enable_seqscan = off` first, so whenever Postgres plans them, the cached
# plan included, it reads the index.




class _DatabaseCache:
    """What this process already knows exists in one database: stream ids, partitions, and the
    block range it last stored per chain (a guess at whether the next batch repeats stored keys)."""

    def __init__(self) -> None:
        self.streams: dict[tuple[int, bytes], int] = {}
        self.months: set[tuple[int, int]] = set()
        self.last_span: dict[int, _Span] = {}


_caches: dict[tuple[str, int, str], _DatabaseCache] = {}
_staged: weakref.WeakSet[psycopg.Connection] = weakref.WeakSet()


def _cache(conn: psycopg.Connection) -> _DatabaseCache:
    key = (conn.info.host, conn.info.port, conn.info.dbname)
    if key not in _caches:
        _caches[key] = _DatabaseCache()
    return _caches[key]


def forget_partitions(conn: psycopg.Connection) -> None:
    """The partitions this connection knows of changed (a month was dropped): ask again."""
    _cache(conn).months.clear()


def require_idle(conn: psycopg.Connection) -> None:
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise RuntimeError("store writers need a connection outside a transaction (autocommit or committed)")


def _stream_ids(conn: psycopg.Connection, chain_id: int, contracts: Iterable[bytes]) -> dict[bytes, int]:
    """contract -> stream_id, creating missing streams in their own short transaction."""
    cache = _cache(conn)
    wanted = set(contracts)
    missing = [c for c in wanted if (chain_id, c) not in cache.streams]
    if missing:
        with conn.transaction():
            conn.execute(
                "INSERT INTO streams (chain_id, contract) SELECT %s, unnest(%s::bytea[]) ON CONFLICT DO NOTHING",
                (chain_id, missing),
            )
            for stream_id, contract in conn.execute(
                "SELECT stream_id, contract FROM streams WHERE chain_id = %s", (chain_id,)
            ):
                cache.streams[(chain_id, bytes(contract))] = stream_id
    return {c: cache.streams[(chain_id, c)] for c in wanted}


@dataclass(frozen=True, slots=True)
class _Span:
    """The key range of a batch: its first and last time stamp and block."""

    first_time: int
    last_time: int
    first_block: int
    last_block: int

    @classmethod
    def of(cls, transfers: Sequence[Transfer]) -> _Span:
        stamps, blocks = list(map(_time_stamp, transfers)), list(map(_block, transfers))
        return cls(min(stamps), max(stamps), min(blocks), max(blocks))

    def overlaps(self, other: _Span) -> bool:
        return self.first_block <= other.last_block and other.first_block <= self.last_block


def _ensure_partitions(conn: psycopg.Connection, span: _Span | None) -> None:
    if span is None:
        return
    cache = _cache(conn)
    months = set(partitions.months_between(span.first_time, span.last_time))
    if months - cache.months:
        created = partitions.create(conn, months)
        if created:
            log.info("created partitions %s", ", ".join(created))
        cache.months |= months


def _ensure_staging(conn: psycopg.Connection) -> None:
    """The session's staging table, emptied by every commit."""
    if conn not in _staged:
        with conn.transaction():
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS td_staging (LIKE transfers) ON COMMIT DELETE ROWS")
        _staged.add(conn)


def _method_int(method_id: str) -> int:
    """"0xa9059cbb" -> the selector as a signed int4 (its stored form, migration 0004)."""
    return int.from_bytes(bytes.fromhex(method_id[2:]), "big", signed=True)


def _copy(conn: psycopg.Connection, table: str, streams: dict[bytes, int], transfers: Sequence[Transfer]) -> None:
    methods: dict[str | None, int | None] = {None: None}
    with conn.cursor() as cur:
        # By oid psycopg picks its DB-API `Binary` dumper for bytea, written in Python; this one is C.
        cur.adapters.register_dumper(bytes, BytesBinaryDumper)
        with cur.copy(f"COPY {table} FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(_COPY_TYPES)
            write = copy.write_row
            for t in transfers:
                method, used, price = t.method_id, t.gas_used, t.gas_price
                if method not in methods:
                    methods[method] = _method_int(method)
                # gas columns hold minimal big-endian bytes: 0 is b""
                write((t.time_stamp, t.block_number, t.log_index, methods[method], streams[t.contract_address],
                       t.tx_hash, t.from_address, t.to_address, t.value,
                       None if used is None else used.to_bytes((used.bit_length() + 7) >> 3, "big"),
                       None if price is None else price.to_bytes((price.bit_length() + 7) >> 3, "big")))


def _stored_keys(conn: psycopg.Connection, span: _Span, streams: dict[bytes, int]) -> psycopg.Cursor:
    """Keys already stored in the batch's key range (streams x time span x block span): for a
    sync batch only the few rows it repeats. Returns the cursor (it may ride in a pipeline)."""
    return conn.execute(
        "SELECT stream_id, time_stamp, block_number, log_index FROM transfers WHERE stream_id = ANY(%s)"
        " AND time_stamp BETWEEN %s AND %s AND block_number BETWEEN %s AND %s",
        (sorted(set(streams.values())), span.first_time, span.last_time, span.first_block, span.last_block),
    )


def _new_rows(rows: Sequence[Transfer], streams: dict[bytes, int],
              stored: set[tuple[int, int, int, int]]) -> list[Transfer]:
    if not stored:
        return list(rows)
    low, high = min(k[1] for k in stored), max(k[1] for k in stored)
    return [t for t in rows if not low <= t.time_stamp <= high
            or (streams[t.contract_address], t.time_stamp, t.block_number, t.log_index) not in stored]


def _insert_rows(conn: psycopg.Connection, streams: dict[bytes, int], rows: Sequence[Transfer],
                 stored: set[tuple[int, int, int, int]] | None) -> int:
    """Insert, skipping stored keys; returns how many rows were new.

    With `stored` (the keys already in the batch's range, read under the chain's write lock,
    which keeps that range ours until commit) the other rows are COPYed straight into
    `transfers`; a duplicate inside the batch then fails the COPY, and the caller retries with
    `stored=None`: COPY into the session's staging table and one INSERT … ON CONFLICT DO NOTHING.
    """
    if stored is not None:
        fresh = _new_rows(rows, streams, stored)
        if fresh:
            _copy(conn, "transfers", streams, fresh)
        return len(fresh)
    _copy(conn, "td_staging", streams, rows)
    with conn.cursor() as cur:
        cur.execute("INSERT INTO transfers SELECT * FROM td_staging"
                    " ORDER BY stream_id, time_stamp, block_number, log_index ON CONFLICT DO NOTHING")
        return cur.rowcount


_INSERT_BLOCKS = ("INSERT INTO blocks AS b (chain_id, block_number, time_stamp, block_hash)"
                  " SELECT %b, * FROM unnest(%b::int8[], %b::int8[], %b::bytea[])")
#: a stored block keeps its hash when the new row has none; a changed time or hash replaces it
_ON_STORED_BLOCK = (" ON CONFLICT (chain_id, block_number) DO UPDATE"
                    " SET time_stamp = EXCLUDED.time_stamp, block_hash = COALESCE(EXCLUDED.block_hash, b.block_hash)"
                    " WHERE b.time_stamp <> EXCLUDED.time_stamp"
                    " OR b.block_hash IS DISTINCT FROM COALESCE(EXCLUDED.block_hash, b.block_hash)")


def _upsert_blocks(conn: psycopg.Connection, chain_id: int, transfers: Sequence[Transfer], new_range: bool) -> None:
    """The batch's blocks; `new_range`: none of them is stored (checked under the chain's write
    lock), so a plain INSERT does, cheaper than the upsert's speculative insertion."""
    by_block = {t.block_number: t for t in transfers}
    if any(t.block_hash is None for t in by_block.values()):  # a row that knows the hash wins
        by_block.update({t.block_number: t for t in transfers if t.block_hash is not None})
    conn.execute(
        _INSERT_BLOCKS if new_range else _INSERT_BLOCKS + _ON_STORED_BLOCK,
        (chain_id, list(by_block), [t.time_stamp for t in by_block.values()],
         [t.block_hash for t in by_block.values()]),
    )


def _update_chain_state(conn: psycopg.Connection, chain_id: int, cursor: Cursor | None,
                        row_delta: int, changed: bool, synced_to_head: bool = False) -> None:
    """One row per chain: cursor, exact row count, data version, last commit, and when a sync
    last reached the upstream's head (`synced_at`, the freshness every view reports)."""
    c = cursor or Cursor(chain_id)
    keep = cursor is None
    conn.execute(
        "INSERT INTO ingest_cursors AS k (chain_id, synced_block, synced_hash, backfilled_block,"
        " backfill_target_block, backfill_done, data_version, row_count, last_ingested_at, synced_at, updated_at)"
        " VALUES (%(chain)s, %(synced)s, %(synced_hash)s, %(backfilled)s, %(target)s, %(done)s, %(bump)s,"
        " %(rows)s, now(), CASE WHEN %(at_head)s THEN now() END, now())"
        " ON CONFLICT (chain_id) DO UPDATE SET"
        " synced_block = CASE WHEN %(keep)s THEN k.synced_block ELSE EXCLUDED.synced_block END,"
        " synced_hash = CASE WHEN %(keep)s THEN k.synced_hash ELSE EXCLUDED.synced_hash END,"
        " backfilled_block = CASE WHEN %(keep)s THEN k.backfilled_block ELSE EXCLUDED.backfilled_block END,"
        " backfill_target_block = CASE WHEN %(keep)s THEN k.backfill_target_block"
        " ELSE EXCLUDED.backfill_target_block END,"
        " backfill_done = CASE WHEN %(keep)s THEN k.backfill_done ELSE EXCLUDED.backfill_done END,"
        " data_version = k.data_version + EXCLUDED.data_version,"
        " row_count = k.row_count + EXCLUDED.row_count,"
        " last_ingested_at = EXCLUDED.last_ingested_at,"
        " synced_at = COALESCE(EXCLUDED.synced_at, k.synced_at),"
        " updated_at = now()",
        {"chain": chain_id, "synced": c.synced_block, "synced_hash": c.synced_hash, "backfilled": c.backfilled_block,
         "target": c.backfill_target_block, "done": c.backfill_done, "bump": int(changed),
         "rows": row_delta, "at_head": synced_to_head, "keep": keep},
    )


#: in JSON text, what jsonb may refuse inside a string: NUL, and UTF-16 surrogates (a lone one; a
#: row with a paired one, such as an emoji, is kept as text too, which costs nothing but a lookup)
_JSONB_UNSAFE = re.compile(r"\\u(0000|d[89a-f])", re.IGNORECASE)
#: fields of an upstream row that change while the row stays the same (tokentx counts confirmations)
_VOLATILE_FIELDS = frozenset({"confirmations"})


def _quarantine_detail(row: Quarantined) -> dict:
    """The event detail of a quarantined row: `raw`, the row itself, or, when it holds what jsonb
    cannot store (NUL), `raw_json`, its exact JSON text; the `block` it belongs to, when known; a
    `digest` of the row without its volatile fields, which keeps one event per row."""
    text = json.dumps(row.raw)
    stable = row.raw
    if isinstance(stable, dict) and _VOLATILE_FIELDS & stable.keys():
        stable = {key: value for key, value in stable.items() if key not in _VOLATILE_FIELDS}
    digest = hashlib.sha256(json.dumps(stable, sort_keys=True).encode()).hexdigest()
    detail: dict = {"digest": digest, "block": row.block_number}
    detail.update({"raw_json": text} if _JSONB_UNSAFE.search(text) else {"raw": row.raw})
    return detail


def _insert_events(conn: psycopg.Connection, event: IngestEvent | None, quarantined: Sequence[Quarantined]) -> None:
    with conn.cursor() as cur:
        if quarantined:
            cur.executemany(
                "INSERT INTO ingest_events (chain_id, status, message, rows, detail)"
                " VALUES (%s, 'quarantined', %s, 1, %s)"
                " ON CONFLICT (chain_id, (detail ->> 'digest')) WHERE status = 'quarantined' DO NOTHING",
                [(q.chain_id, q.reason.replace("\0", "\\0"), Jsonb(_quarantine_detail(q))) for q in quarantined],
            )
        if event is not None:
            cur.execute(
                "INSERT INTO ingest_events (chain_id, status, message, rows, detail) VALUES (%s, %s, %s, %s, %s)",
                (event.chain_id, event.status, event.message, event.rows, Jsonb(event.detail)),
            )


def _delete_from_block(conn: psycopg.Connection, chain_id: int, fork_block: int) -> int:
    row = conn.execute(
        "SELECT time_stamp FROM blocks WHERE chain_id = %s AND block_number >= %s ORDER BY block_number LIMIT 1",
        (chain_id, fork_block), prepare=False,
    ).fetchone()
    if row is None:
        return 0
    streams = [r[0] for r in conn.execute("SELECT stream_id FROM streams WHERE chain_id = %s", (chain_id,))]
    deleted = conn.execute(  # counted by a query, not rowcount: this may run in pipeline mode
        "WITH gone AS (DELETE FROM transfers WHERE stream_id = ANY(%s) AND time_stamp >= %s AND block_number >= %s"
        " RETURNING 1) SELECT count(*) FROM gone",
        (streams, row[0], fork_block), prepare=False,
    ).fetchone()[0]
    conn.execute("DELETE FROM blocks WHERE chain_id = %s AND block_number >= %s", (chain_id, fork_block),
                 prepare=False)
    return deleted


def _begin_and_read(conn: psycopg.Connection, chain_id: int, streams: dict[bytes, int], span: _Span | None,
                    fork_block: int | None, staged: bool) -> tuple[int, set | None, bool]:
    """BEGIN, the chain's write lock, the reorg delete, and what the batch's range already holds, in
    one round trip (two when the batch unexpectedly reaches a stored block): (rows deleted, stored
    keys or None for the staging path, whether no block of the range is stored)."""
    # A batch overlapping the block range this process stored last (sync) repeats keys: read them
    # at once. Otherwise (backfill) only ask whether any block of its range is stored. Every
    # stored transfer has its `blocks` row (same transaction): no stored block, no stored key.
    # Were that ever untrue, the COPY would meet the key and the batch would go through staging.
    last = _cache(conn).last_span.get(chain_id)
    keys = overlap = None
    with conn.pipeline():
        conn.execute("BEGIN")
        conn.execute("SET LOCAL enable_seqscan = off")  # see the note at the top
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (WRITE_LOCK_CLASS, chain_id & 0x7FFFFFFF))
        deleted = 0 if fork_block is None else _delete_from_block(conn, chain_id, fork_block)
        if span is not None and not staged:
            if last is not None and span.overlaps(last):
                keys = _stored_keys(conn, span, streams)
            else:
                overlap = conn.execute(
                    "SELECT EXISTS (SELECT FROM blocks WHERE chain_id = %s AND block_number BETWEEN %s AND %s)",
                    (chain_id, span.first_block, span.last_block))
    if overlap is not None:
        if not overlap.fetchone()[0]:
            return deleted, set(), True
        keys = _stored_keys(conn, span, streams)
    return deleted, None if keys is None else set(keys.fetchall()), False


def _write_once(conn: psycopg.Connection, chain_id: int, streams: dict[bytes, int], rows: Sequence[Transfer],
                span: _Span | None, cursor: Cursor | None, event: IngestEvent | None,
                quarantined: Sequence[Quarantined], fork_block: int | None, staged: bool,
                synced_to_head: bool) -> tuple[int, int]:
    """One transaction in four round trips: BEGIN with the lock and the reads it guards, the COPY,
    the statements that need no answer with COMMIT. (BEGIN/COMMIT are sent by hand to ride in the
    pipelines; `conn.transaction()` would spend a round trip on each.)"""
    try:
        deleted, stored, new_range = _begin_and_read(conn, chain_id, streams, span, fork_block, staged)
        inserted = _insert_rows(conn, streams, rows, stored) if rows else 0
        with conn.pipeline():
            if rows:
                _upsert_blocks(conn, chain_id, rows, new_range)
            _update_chain_state(conn, chain_id, cursor, inserted - deleted, bool(inserted or deleted), synced_to_head)
            _insert_events(conn, event, quarantined)
            conn.execute("COMMIT")
    except BaseException:
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.execute("ROLLBACK")
        raise
    if span is not None:
        _cache(conn).last_span[chain_id] = span
    return inserted, deleted


def _write(conn: psycopg.Connection, chain_id: int, transfers: Sequence[Transfer], cursor: Cursor | None,
           event: IngestEvent | None, quarantined: Sequence[Quarantined], fork_block: int | None,
           synced_to_head: bool) -> tuple[int, int]:
    require_idle(conn)
    if transfers and not _INT4[0] <= min(map(_log_index, transfers)) <= max(map(_log_index, transfers)) <= _INT4[1]:
        # the binary COPY would wrap it into the int4 range (2**32 arrives as 0), past the CHECK, into
        # a wrong key; normalization quarantines such rows, so one here is a bug to stop at
        raise ValueError("a log index outside the int4 range reached the store")
    streams = _stream_ids(conn, chain_id, set(map(_contract, transfers)))
    span = _Span.of(transfers) if transfers else None
    _ensure_partitions(conn, span)
    # Grouped by stream (one per contract): each stream's index range is touched in one run.
    rows = sorted(transfers, key=_contract)
    staged = False
    for attempt in (1, 2, 3):
        try:
            return _write_once(conn, chain_id, streams, rows, span, cursor, event, quarantined, fork_block, staged,
                               synced_to_head)
        except psycopg.errors.UniqueViolation:
            # The batch repeats a key within itself, or meets one the block check did not
            # foresee: redo it through the staging table.
            if staged or attempt == 3:
                raise
            staged = True
            _ensure_staging(conn)
        except psycopg.errors.CheckViolation:
            # A partition this process created earlier was dropped by retention elsewhere.
            if attempt == 3:
                raise
            forget_partitions(conn)
            _ensure_partitions(conn, span)
    raise AssertionError("unreachable")


def write_batch(conn: psycopg.Connection, chain_id: int, transfers: Sequence[Transfer], *,
                cursor: Cursor | None, event: IngestEvent | None,
                quarantined: Sequence[Quarantined] = (), synced_to_head: bool = False) -> int:
    """Insert transfers (duplicates skipped), the cursor and the events in one transaction.

    Returns how many transfers were new. The chain's data version bumps when any row was new.
    `synced_to_head`: this commit ends a sync that reached the upstream's head, so the chain is
    fresh as of now (backfill windows and syncs stopped short leave its freshness alone).
    """
    inserted, _ = _write(conn, chain_id, transfers, cursor, event, quarantined, None, synced_to_head)
    return inserted


def replace_from_block(conn: psycopg.Connection, chain_id: int, fork_block: int, transfers: Sequence[Transfer], *,
                       cursor: Cursor | None, event: IngestEvent | None,
                       quarantined: Sequence[Quarantined] = (), synced_to_head: bool = False) -> tuple[int, int]:
    """Reorg repair in one transaction: delete the chain's rows from `fork_block` on, insert
    `transfers`, store the cursor, the event and the quarantined rows. Returns (deleted, inserted).
    `synced_to_head` as in `write_batch`: the repair reached the upstream's head."""
    inserted, deleted = _write(conn, chain_id, transfers, cursor, event, quarantined, fork_block, synced_to_head)
    log.info("replaced chain=%s from_block=%d deleted=%d inserted=%d", chain_id, fork_block, deleted, inserted)
    return deleted, inserted


def record_event(conn: psycopg.Connection, event: IngestEvent) -> None:
    """Store one event; an `ingested`/`reorg` event also counts as a commit (`last_ingested_at`).

    Inside a caller's transaction it joins it (savepoint); otherwise it commits on its own.
    """
    with conn.transaction():
        _insert_events(conn, event, ())
        if event.status in SUCCESS_STATUSES:
            _update_chain_state(conn, event.chain_id, None, 0, False)


def _block_time_bounds(conn: psycopg.Connection, chain_id: int, block: int,
                       transfers: Sequence[Transfer]) -> tuple[int, int] | None:
    """Times a stored row of `block` can carry: from the stored block below it to the one above it
    (block time never decreases with the number), the block's own and the new rows' times
    included. None: nothing is stored around it."""
    stamps = conn.execute(
        "SELECT (SELECT time_stamp FROM blocks WHERE chain_id = %(c)s AND block_number < %(b)s"
        "  ORDER BY block_number DESC LIMIT 1),"
        " (SELECT time_stamp FROM blocks WHERE chain_id = %(c)s AND block_number = %(b)s),"
        " (SELECT time_stamp FROM blocks WHERE chain_id = %(c)s AND block_number > %(b)s"
        "  ORDER BY block_number LIMIT 1)",
        {"c": chain_id, "b": block}, prepare=False,
    ).fetchone()
    known = [t for t in stamps if t is not None] + [t.time_stamp for t in transfers]
    return (min(known), max(known)) if known else None


def _delete_absent(conn: psycopg.Connection, chain_id: int, block: int, streams: Sequence[int],
                   transfers: Sequence[Transfer], stream_of: dict[bytes, int]) -> int:
    """Delete the block's rows of `streams` that `transfers` does not hold as they are; returns how many."""
    bounds = _block_time_bounds(conn, chain_id, block, transfers)
    if bounds is None:
        return 0
    rows = [(stream_of[t.contract_address], t.time_stamp, t.log_index, t.tx_hash, t.from_address, t.to_address,
             t.value) for t in transfers]
    kept = [list(column) for column in zip(*rows, strict=True)] if rows else [[] for _ in range(7)]
    return conn.execute(
        "WITH gone AS (DELETE FROM transfers t WHERE t.stream_id = ANY(%s) AND t.time_stamp BETWEEN %s AND %s"
        " AND t.block_number = %s AND NOT EXISTS (SELECT FROM unnest(%s::int2[], %s::int8[], %s::int4[],"
        "  %s::bytea[], %s::bytea[], %s::bytea[], %s::numeric[]) k(stream_id, time_stamp, log_index, tx_hash,"
        "  from_address, to_address, value) WHERE (k.stream_id, k.time_stamp, k.log_index, k.tx_hash,"
        "  k.from_address, k.to_address, k.value) = (t.stream_id, t.time_stamp, t.log_index, t.tx_hash,"
        "  t.from_address, t.to_address, t.value)) RETURNING 1) SELECT count(*) FROM gone",
        (list(streams), *bounds, block, *kept), prepare=False,
    ).fetchone()[0]


def _forget_empty_block(conn: psycopg.Connection, chain_id: int, block: int) -> None:
    """Delete the block's row unless a transfer of the chain (of any contract) is still stored in it."""
    conn.execute(
        "DELETE FROM blocks b WHERE b.chain_id = %(c)s AND b.block_number = %(b)s AND NOT EXISTS ("
        " SELECT FROM transfers t WHERE t.stream_id IN (SELECT stream_id FROM streams WHERE chain_id = %(c)s)"
        " AND t.time_stamp = b.time_stamp AND t.block_number = b.block_number)",
        {"c": chain_id, "b": block}, prepare=False,
    )


def replace_block(conn: psycopg.Connection, chain_id: int, block: int, transfers: Sequence[Transfer], *,
                  contracts: Iterable[bytes], event: IngestEvent | None) -> tuple[int, int]:
    """Make one stored block hold exactly `transfers` for `contracts` (verify's repair), in one
    transaction under the chain's write lock, so it is safe beside a running worker: stored rows
    not among `transfers` are deleted, missing ones inserted, the block's time and hash replaced
    (the block forgotten when it holds no transfer any more), the event recorded. The cursor and
    the chain's freshness (`synced_at`) are left alone. Returns (deleted, inserted)."""
    if any(t.block_number != block or t.chain_id != chain_id for t in transfers):
        raise ValueError(f"replace_block: every transfer must be of chain {chain_id}, block {block}")
    require_idle(conn)
    stream_of = _stream_ids(conn, chain_id, set(contracts) | set(map(_contract, transfers)))
    _ensure_partitions(conn, _Span.of(transfers) if transfers else None)
    _ensure_staging(conn)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (WRITE_LOCK_CLASS, chain_id & 0x7FFFFFFF))
        deleted = _delete_absent(conn, chain_id, block, sorted(set(stream_of.values())), transfers, stream_of)
        inserted = _insert_rows(conn, stream_of, transfers, None) if transfers else 0
        if transfers:
            _upsert_blocks(conn, chain_id, transfers, new_range=False)
        else:
            _forget_empty_block(conn, chain_id, block)
        _update_chain_state(conn, chain_id, None, inserted - deleted, bool(inserted or deleted))
        _insert_events(conn, event, ())
    log.info("replaced chain=%s block=%d deleted=%d inserted=%d", chain_id, block, deleted, inserted)
    return deleted, inserted


def record_synced(conn: psycopg.Connection, chain_id: int) -> None:
    """A sync found the cursor at the upstream's head, nothing to fetch: the chain is fresh as of now."""
    conn.execute("UPDATE ingest_cursors SET synced_at = now() WHERE chain_id = %s", (chain_id,))


def save_pause(conn: psycopg.Connection, chain_id: int, pause: Pause | None) -> None:
    """Record the chain's pause, or clear it (None)."""
    values = (None,) * 6 if pause is None else (
        pause.reason, pause.since, pause.until, pause.message, pause.config, pause.probed_at)
    conn.execute(
        "INSERT INTO ingest_cursors (chain_id, paused_reason, paused_at, paused_until, paused_message,"
        " paused_config, paused_probed_at) VALUES (%s, %s, to_timestamp(%s), to_timestamp(%s), %s, %s,"
        " to_timestamp(%s))"
        " ON CONFLICT (chain_id) DO UPDATE SET paused_reason = EXCLUDED.paused_reason,"
        " paused_at = EXCLUDED.paused_at, paused_until = EXCLUDED.paused_until,"
        " paused_message = EXCLUDED.paused_message, paused_config = EXCLUDED.paused_config,"
        " paused_probed_at = EXCLUDED.paused_probed_at",
        (chain_id, *values),
    )


def save_halt(conn: psycopg.Connection, chain_id: int, halt: Halt | None) -> None:
    """Record the chain's halt, or clear it (None)."""
    conn.execute(
        "INSERT INTO ingest_cursors (chain_id, halted_at, halted_reason)"
        " VALUES (%s, to_timestamp(%s), %s)"
        " ON CONFLICT (chain_id) DO UPDATE SET halted_at = EXCLUDED.halted_at, halted_reason = EXCLUDED.halted_reason",
        (chain_id, halt.at if halt else None, halt.reason if halt else None),
    )
