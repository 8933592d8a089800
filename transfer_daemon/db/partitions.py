"""Monthly range partitions of `transfers` (time_stamp = unix seconds, UTC months).

Partitions are created ahead of time (migrate, retention job) and on demand for any month a
batch touches (a backfill reaching 2019 creates 2019's months). Retention drops whole months.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import psycopg

#: pg_advisory_xact_lock key serializing partition DDL between processes.
PARTITION_LOCK = (0x7464, 2)
_NAME = re.compile(r"^transfers_p(\d{4})(\d{2})$")


def month_of(unix_seconds: int) -> tuple[int, int]:
    moment = datetime.fromtimestamp(unix_seconds, UTC)
    return moment.year, moment.month


def month_bounds(year: int, month: int) -> tuple[int, int]:
    """[start, end) of a UTC month in unix seconds."""
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
    return int(start.timestamp()), int(end.timestamp())


def partition_name(year: int, month: int) -> str:
    return f"transfers_p{year:04d}{month:02d}"


def months_between(first: float, last: float) -> list[tuple[int, int]]:
    year, month = month_of(int(first))
    end = month_of(int(last))
    months = []
    while (year, month) <= end:
        months.append((year, month))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return months


def existing(conn: psycopg.Connection) -> dict[tuple[int, int], str]:
    """Partitions present now, keyed by (year, month)."""
    rows = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'transfers'::regclass"
    ).fetchall()
    found = {}
    for (name,) in rows:
        match = _NAME.match(name)
        if match:
            found[(int(match.group(1)), int(match.group(2)))] = name
    return found


def create(conn: psycopg.Connection, months: set[tuple[int, int]]) -> list[str]:
    """Create the missing partitions among `months` in one short transaction; returns names created."""
    created = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", PARTITION_LOCK)
        present = existing(conn)
        for year, month in sorted(months - set(present)):
            start, end = month_bounds(year, month)
            name = partition_name(year, month)
            conn.execute(
                f"CREATE TABLE {name} PARTITION OF transfers FOR VALUES FROM ({start}) TO ({end})"
            )
            for column in ("from_address", "to_address"):
                # The address index key is a function of the address: without this the planner
                # multiplies both selectivities, underestimates a busy address, and sorts all of
                # its rows instead of reading the address index in time order.
                conn.execute(f"CREATE STATISTICS {name}_{column[:-8]}_stx (dependencies)"
                             f" ON {column}, td_addr64({column}) FROM {name}")
            created.append(name)
    return created


def ensure_months(conn: psycopg.Connection, first: float, last: float) -> list[str]:
    """Every month from `first` to `last` (unix seconds) has a partition; returns names created."""
    return create(conn, set(months_between(first, last)))
