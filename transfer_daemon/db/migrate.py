"""Numbered migrations (`migrations/NNNN_name.sql`), applied once each, in order.

Safe when several processes migrate at once: the runner holds a session advisory lock for the
whole run, so the second one waits and then finds nothing left to apply.
"""

from __future__ import annotations

import logging
import re
import time
from importlib import resources

import psycopg

from transfer_daemon.db import partitions

log = logging.getLogger(__name__)

#: pg_advisory_lock key (two int4 halves) reserved for the migration runner.
MIGRATE_LOCK = (0x7464, 1)
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
#: months of partitions created ahead of the current one.
MONTHS_AHEAD = 2


def available_migrations() -> list[tuple[int, str, str]]:
    """(version, file name, SQL) for every packaged migration, ascending."""
    found = []
    for entry in resources.files("transfer_daemon.db.migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text()))
    return sorted(found)


def migrate(url: str, now: float | None = None) -> int:
    """Apply every pending migration and make sure this month's and the next partitions exist.

    Returns how many migrations were applied (0 when the schema was already current).
    """
    applied = 0
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s, %s)", MIGRATE_LOCK)
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
            for version, name, sql in available_migrations():
                if version in done:
                    continue
                with conn.transaction():
                    conn.execute(sql)
                    conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name))
                log.info("migrated schema to %s", name)
                applied += 1
            current = time.time() if now is None else now
            partitions.ensure_months(conn, current - 31 * 86400, current + MONTHS_AHEAD * 31 * 86400)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s, %s)", MIGRATE_LOCK)
    return applied


def is_migrated(conn: psycopg.Connection) -> bool:
    """True when every packaged migration is recorded in the database."""
    latest = available_migrations()[-1][0]
    row = conn.execute(
        "SELECT to_regclass('schema_migrations') IS NOT NULL"
    ).fetchone()
    if not row or not row[0]:
        return False
    found = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
    return bool(found and found[0] is not None and found[0] >= latest)
