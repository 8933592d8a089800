"""The supervisor's published state, as every other process reads it: whether a supervisor is alive
(its pidfile's lock, see `daemon.pidfile`), and its state file, `<data_dir>/supervisor-state.json`.

Written atomically (temp file + rename) after every child transition, so readers in any
process see either the old document or the new one. Shape (times are unix seconds):

    {"version": 1, "pid": 4242, "state": "running" | "stopping" | "stopped",
     "started_at": 1.0, "updated_at": 2.0, "config": "etc/transfer-daemon.toml",
     "children": {"worker[ethereum]": {"name", "chain", "pid", "state", "since", "restarts",
                  "failures", "next_start_at", "last_exit": {"status", "reason", "at"} | null,
                  "queued_jobs", "backfill_span"}, …}}

`queued_jobs` (jobs running or due) and `backfill_span` (blocks per backfill window) are what a
live worker published beside its heartbeat (`daemon.heartbeat`); absent until it has.

`state` of a child is STARTING | RUNNING | BACKOFF | FATAL | STOPPING | STOPPED (EXITED is only
passed through). A FATAL child is one the supervisor gave up on; it is retried every 5 minutes.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

from transfer_daemon.config import Config

STATE_FILENAME = "supervisor-state.json"
VERSION = 1


def read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def is_locked(path: Path) -> bool:
    """True while some live process holds the pidfile lock."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def running_pid(path: Path) -> int | None:
    """The pid of the live supervisor that owns `path`, else None."""
    pid = read_pid(path)
    return pid if pid is not None and is_locked(path) else None


def pid_alive(pid: int) -> bool:
    """True for a live process; a zombie (exited, not yet reaped by its parent) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] != "Z"


def state_path(config: Config) -> Path:
    return Path(config.daemon.data_dir) / STATE_FILENAME


def write_state(path: Path, document: dict[str, Any]) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(document, indent=1, sort_keys=True))
    os.replace(temporary, path)


def read_state(config: Config) -> dict[str, Any] | None:
    """The last state the supervisor wrote, plus `alive`: whether that supervisor still runs.

    None when no supervisor ever wrote one in this data directory.
    """
    try:
        document = json.loads(state_path(config).read_text())
    except (OSError, ValueError):
        return None
    document["alive"] = running_pid(config.daemon.pidfile) == document.get("pid")
    return document


def worker_state(document: dict[str, Any] | None, chain_name: str) -> dict[str, Any] | None:
    """The entry of the worker of `chain_name` (state, pid, restarts, last_exit …), if any."""
    if not document:
        return None
    return document.get("children", {}).get(f"worker[{chain_name}]")
