"""The per-chain Postgres advisory lock: exactly one worker ingests a chain at a time.

A session-level lock lives as long as the connection that took it, so it is held on a
dedicated connection for the life of the worker. When the holder dies, Postgres drops its
connection and the lock with it, and a standby's next `pg_try_advisory_lock` succeeds.
"""

from __future__ import annotations

import hashlib
import logging
import os

import psycopg

from transfer_daemon.redact import redact_url

log = logging.getLogger(__name__)

#: Keepalives make a silently dead server (or a cut network) show up as a broken connection.
_CONNECT_OPTIONS = {"connect_timeout": 5, "keepalives": 1, "keepalives_idle": 10,
                    "keepalives_interval": 5, "keepalives_count": 3}


def advisory_key(chain_id: int) -> int:
    """A signed 64-bit key per chain, namespaced so other applications' locks can't collide."""
    digest = hashlib.blake2b(f"transfer-daemon:chain:{chain_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class ChainLock:
    """Try/hold/release the chain's advisory lock on a connection of its own."""

    def __init__(self, database_url: str, chain_id: int, chain_name: str) -> None:
        self.database_url = database_url
        self.chain_id = chain_id
        self.chain_name = chain_name
        self.key = advisory_key(chain_id)
        self._conn: psycopg.Connection | None = None

    @property
    def held(self) -> bool:
        return self._conn is not None

    def try_acquire(self) -> bool:
        """True when this process now holds the lock; False when another session does or the
        database cannot be reached (the caller retries on its next poll)."""
        if self._conn is not None:
            return True
        try:
            # the pid in application_name tells operators (and tests) which process holds the chain
            name = f"transfer-daemon lock {self.chain_name} pid {os.getpid()}"
            conn = psycopg.connect(self.database_url, autocommit=True, application_name=name, **_CONNECT_OPTIONS)
        except psycopg.Error as exc:
            log.warning("failed chain=%s lock: cannot connect to %s: %s", self.chain_name,
                        redact_url(self.database_url), type(exc).__name__)
            return False
        try:
            got = conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()[0]
        except psycopg.Error as exc:
            log.warning("failed chain=%s lock: %s", self.chain_name, type(exc).__name__)
            got = False
        if not got:
            conn.close()
            return False
        self._conn = conn
        return True

    def alive(self) -> bool:
        """Whether the holding connection (hence the lock) still exists."""
        if self._conn is None:
            return False
        try:
            self._conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            self._drop()
            return False

    def release(self) -> None:
        if self._conn is None:
            return
        try:
            self._conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
        except psycopg.Error:
            pass  # a broken connection has released the lock already
        self._drop()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
