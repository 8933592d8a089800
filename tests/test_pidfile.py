"""The flock'd pidfile: refusal while a live owner holds it, recovery after it died."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from transfer_daemon.daemon.pidfile import PidFile
from transfer_daemon.errors import AlreadyRunning
from transfer_daemon.state import is_locked, pid_alive, read_pid, running_pid

HOLDER = """
import sys, time
from transfer_daemon.daemon.pidfile import PidFile
PidFile(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(60)
"""


def _holder(path: Path) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "locked"
    return process


def test_acquire_writes_our_pid_and_release_removes_the_file(tmp_path):
    path = tmp_path / "run" / "td.pid"
    pidfile = PidFile(path)
    assert pidfile.acquire() is None
    assert read_pid(path) == os.getpid() and is_locked(path) and running_pid(path) == os.getpid()
    pidfile.release()
    assert not path.exists() and running_pid(path) is None


def test_second_acquire_is_refused_even_in_the_same_process(tmp_path):
    path = tmp_path / "td.pid"
    first = PidFile(path)
    first.acquire()
    with pytest.raises(AlreadyRunning, match=rf"already running \(pid {os.getpid()}, pidfile {path}\)"):
        PidFile(path).acquire()
    first.release()
    second = PidFile(path)
    second.acquire()
    second.release()


def test_live_owner_in_another_process_is_refused_and_its_death_recovered(tmp_path):
    path = tmp_path / "td.pid"
    holder = _holder(path)
    try:
        assert running_pid(path) == holder.pid
        with pytest.raises(AlreadyRunning, match=f"pid {holder.pid}"):
            PidFile(path).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert path.exists() and read_pid(path) == holder.pid and running_pid(path) is None
    pidfile = PidFile(path)
    assert pidfile.acquire() == holder.pid, "the stale pid is reported"
    assert read_pid(path) == os.getpid()
    pidfile.release()


def test_stale_file_with_garbage_is_taken_over(tmp_path):
    path = tmp_path / "td.pid"
    path.write_text("not a pid\n")
    pidfile = PidFile(path)
    assert pidfile.acquire() is None
    assert read_pid(path) == os.getpid()
    pidfile.release()


def test_write_replaces_the_pid_after_detach(tmp_path):
    path = tmp_path / "td.pid"
    pidfile = PidFile(path)
    pidfile.acquire()
    pidfile.write(123456)
    assert path.read_text() == "123456\n"
    pidfile.release()


def test_pid_alive_treats_a_zombie_as_gone():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while pid_alive(child.pid):
        assert time.monotonic() < deadline, "exited child still reported alive"
        time.sleep(0.02)
    child.wait()
    assert pid_alive(os.getpid())
