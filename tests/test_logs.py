"""The logging pipeline: redaction, formats, parsing, the per-child pipe, and `logs` (tail/follow)."""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from transfer_daemon.config import parse_config
from transfer_daemon.daemon.logs import (
    ContextFilter,
    JsonFormatter,
    LogPipeline,
    RedactingFilter,
    TextFormatter,
    parse_line,
    secrets_from_config,
)
from transfer_daemon.daemon.logtail import tail_logs

CONTRACT = "0x" + "22" * 20


def _config(tmp_path: Path, log_format: str = "text", key_env: str = "TD_LOGS_KEY"):
    document = {
        "daemon": {"data_dir": str(tmp_path), "log_file": str(tmp_path / "log" / "td.log"),
                   "log_format": log_format},
        "chains": [
            {"id": 1, "name": "ethereum", "kind": "etherscan", "base_url": "https://api.example/v2/api",
             "api_key_env": key_env, "contracts": [CONTRACT]},
            {"id": 25, "name": "cronos", "kind": "rpc_logs", "rpc_url": "https://rpc.example",
             "contracts": [CONTRACT]},
        ],
    }
    return parse_config(document, {})


def _record(msg: str, *args, level: int = logging.INFO, **extra) -> logging.LogRecord:
    record = logging.LogRecord("transfer_daemon.test", level, __file__, 1, msg, args, None)
    record.__dict__.update(extra)
    ContextFilter().filter(record)
    return record


def test_secrets_from_config_reads_the_named_variables_only(tmp_path):
    config = _config(tmp_path)
    assert secrets_from_config(config, {"TD_LOGS_KEY": "abcd1234", "OTHER": "zzzzzzzz"}) == {"abcd1234"}
    assert secrets_from_config(config, {"TD_LOGS_KEY": "ab"}) == set(), "too short to redact usefully"
    assert secrets_from_config(config, {}) == set()


@pytest.mark.parametrize(("message", "expected"), [
    ("GET https://api.example/v2/api?module=account&apikey=ABC123&page=2",
     "GET https://api.example/v2/api?module=account&apikey=***&page=2"),
    ("connect postgresql://ingest:s3cr3t@db:5432/t failed", "connect postgresql://ingest:***@db:5432/t failed"),
    ("key TOPSECRETVALUE leaked in a header", "key *** leaked in a header"),
    ("token=abc&x=1", "token=***&x=1"),
])
def test_redacting_filter(message, expected):
    record = _record("%s", message)
    assert RedactingFilter({"TOPSECRETVALUE"}).filter(record)
    assert record.getMessage() == expected


def test_redacting_filter_scrubs_tracebacks():
    try:
        raise RuntimeError("upstream said no to https://u:pw@host/x?apikey=K")
    except RuntimeError:
        record = logging.LogRecord("t", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    RedactingFilter().filter(record)
    assert "pw@" not in record.exc_text and "apikey=K" not in record.exc_text
    assert "u:***@host" in record.exc_text


def test_text_format_round_trips_through_parse_line():
    record = _record("spawned %s (pid %d)", "worker[ethereum]", 7, tag="supervisor", chain="ethereum")
    line = TextFormatter().format(record)
    assert line.endswith("Z INFO supervisor chain=ethereum transfer_daemon.test: spawned worker[ethereum] (pid 7)")
    assert parse_line(line) == (logging.INFO, "supervisor", "ethereum")
    own = TextFormatter().format(_record("ingested", tag="worker[cronos]", chain="cronos", level=logging.WARNING))
    assert " WARNING worker[cronos] transfer_daemon.test: ingested" in own, "the tag already names the chain"
    assert parse_line(own) == (logging.WARNING, "worker[cronos]", "cronos")


def test_text_format_indents_continuation_lines():
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("t", logging.ERROR, __file__, 1, "two\nlines", None, sys.exc_info())
    ContextFilter().filter(record)
    lines = TextFormatter().format(record).split("\n")
    assert len(lines) > 3 and all(line.startswith("  ") for line in lines[1:])
    assert [parse_line(line) for line in lines[1:]] == [None] * (len(lines) - 1)


def test_json_format_is_one_object_per_line():
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("t", logging.ERROR, __file__, 1, "failed %s", ("x",), sys.exc_info())
    record.tag, record.chain = "api", None
    line = JsonFormatter().format(record)
    assert "\n" not in line
    doc = json.loads(line)
    assert doc["message"] == "failed x" and doc["process"] == "api" and "ValueError: boom" in doc["exc"]
    assert parse_line(line) == (logging.ERROR, "api", None)


def test_pipeline_relays_a_forked_childs_records_and_raw_output(tmp_path):
    config = _config(tmp_path, log_format="json")
    pipeline = LogPipeline(config, to_stderr=False)
    read_fd, write_fd = pipeline.open_channel("worker[ethereum]", "ethereum")
    big = "x" * 100_000
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            pipeline.become_child(write_fd, "worker[ethereum]", "ethereum")
            log = logging.getLogger("transfer_daemon.child_test")
            log.info("hello from %s", "the child")
            log.warning("big %s", big)
            print("raw output", flush=True)
            sys.stderr.write("no newline at the end")
            sys.stderr.flush()
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    deadline = time.monotonic() + 10
    while read_fd in pipeline.channels():
        assert time.monotonic() < deadline
        time.sleep(0.01)
        pipeline.drain(read_fd)
    assert os.waitpid(pid, 0)[1] == 0
    pipeline.flush()
    records = [json.loads(line) for line in Path(config.daemon.log_file).read_text().splitlines()]
    assert [r["message"][:20] for r in records] == ["hello from the child", "big " + "x" * 16, "raw output",
                                                     "no newline at the en"]
    assert len(records[1]["message"]) == len(big) + 4
    assert all(r["process"] == "worker[ethereum]" and r["chain"] == "ethereum" for r in records)
    assert records[0]["pid"] == pid and records[2]["level"] == "WARNING"
    for handler in pipeline.handlers:
        handler.close()


def test_log_file_reopens_after_rotation_by_rename(tmp_path):
    config = _config(tmp_path)
    pipeline = LogPipeline(config, to_stderr=False)
    path = Path(config.daemon.log_file)
    logger = logging.getLogger("transfer_daemon.rotation_test")
    logger.propagate = False
    for handler in pipeline.handlers:
        logger.addHandler(handler)
    try:
        logger.warning("before rotation")
        path.rename(path.with_suffix(".log.1"))
        logger.warning("after rotation")
    finally:
        for handler in pipeline.handlers:
            logger.removeHandler(handler)
            handler.close()
    assert "before rotation" in path.with_suffix(".log.1").read_text()
    assert "after rotation" in path.read_text() and "before" not in path.read_text()


def _write_log(path: Path, config) -> list[str]:
    formatter = TextFormatter()
    lines = []
    for i in range(300):
        tag, chain = ("worker[ethereum]", "ethereum") if i % 2 else ("worker[cronos]", "cronos")
        level = logging.ERROR if i % 10 == 0 else logging.INFO
        lines.append(formatter.format(_record("event %d", i, level=level, tag=tag, chain=chain)))
    try:
        raise ValueError("trace")
    except ValueError:
        record = logging.LogRecord("t", logging.ERROR, __file__, 1, "crashed", None, sys.exc_info())
    record.tag, record.chain = "worker[cronos]", "cronos"
    lines.append(formatter.format(record))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return "\n".join(lines).split("\n")


def test_tail_logs_filters_by_chain_and_level_keeping_tracebacks(tmp_path):
    config = _config(tmp_path)
    written = _write_log(Path(config.daemon.log_file), config)
    out: list[str] = []
    assert tail_logs(config, echo=out.append) == 0
    assert out == written[-200:]
    out.clear()
    tail_logs(config, chain="1", level="error", echo=out.append, lines=5)
    assert out == [line for line in written if "event" in line and " ERROR worker[ethereum]" in line][-5:]
    out.clear()
    tail_logs(config, chain="cronos", level="ERROR", echo=out.append, lines=1000)
    assert out[-1].startswith("  ValueError: trace") and any("crashed" in line for line in out)
    assert all("ethereum" not in line for line in out)


def test_logs_follow_prints_new_lines_across_rotation(tmp_path):
    config = _config(tmp_path)
    config_path = tmp_path / "td.toml"
    config_path.write_text(
        f'[daemon]\ndata_dir = "{tmp_path}"\nlog_file = "{config.daemon.log_file}"\n'
        f'[[chains]]\nid = 25\nname = "cronos"\nkind = "rpc_logs"\nrpc_url = "https://rpc.example"\n'
        f'contracts = ["{CONTRACT}"]\n'
    )
    path = Path(config.daemon.log_file)
    path.parent.mkdir(parents=True)
    formatter = TextFormatter()
    path.write_text(formatter.format(_record("old line", tag="worker[cronos]", chain="cronos")) + "\n")
    follower = subprocess.Popen(
        [sys.executable, "-m", "transfer_daemon.cli", "logs", "--config", str(config_path), "-f", "--chain", "cronos"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert "old line" in follower.stdout.readline()
        with open(path, "a") as handle:
            handle.write(formatter.format(_record("other chain", tag="worker[ethereum]", chain="ethereum")) + "\n")
            handle.write(formatter.format(_record("appended", tag="worker[cronos]", chain="cronos")) + "\n")
        assert "appended" in follower.stdout.readline()
        path.rename(path.with_suffix(".log.1"))
        path.write_text(formatter.format(_record("after rotation", tag="worker[cronos]", chain="cronos")) + "\n")
        assert "after rotation" in follower.stdout.readline()
    finally:
        follower.terminate()
        follower.wait(10)


def test_logs_without_a_log_file_is_a_clear_error(tmp_path):
    config = _config(tmp_path)
    from transfer_daemon.errors import TransferDaemonError

    with pytest.raises(TransferDaemonError, match="no log file at"):
        tail_logs(config, echo=print)


def test_a_child_logging_into_a_full_pipe_never_blocks_and_reports_what_it_dropped(tmp_path):
    config = _config(tmp_path, log_format="json")
    pipeline = LogPipeline(config, to_stderr=False)
    read_fd, write_fd = pipeline.open_channel("api", None)
    looped_r, looped_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            pipeline.become_child(write_fd, "api", None)
            log = logging.getLogger("transfer_daemon.api")
            for n in range(30_000):  # ~5 MB: far beyond any pipe's room, and nobody reads
                log.warning("answered 503 for api: store not ready: database unavailable (%d)", n)
            print("a stray print into the full pipe")
            os.write(looped_w, b"1")
            os.read(go_r, 1)  # the supervisor has read what the pipe held
            log.warning("back to normal")
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    ready = select.select([looped_r], [], [], 30)[0]
    if not ready:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise AssertionError("the child blocked on its log pipe")
    pipeline.drain(read_fd)
    os.write(go_w, b"1")
    deadline = time.monotonic() + 30
    while read_fd in pipeline.channels():
        assert time.monotonic() < deadline
        select.select([read_fd], [], [], 0.1)
        pipeline.drain(read_fd)
    assert os.waitpid(pid, 0)[1] == 0
    pipeline.flush()
    messages = [json.loads(line)["message"] for line in Path(config.daemon.log_file).read_text().splitlines()]
    dropped = [m for m in messages if m.startswith("dropped ")]
    assert len(dropped) == 1 and messages[-2:] == [dropped[0], "back to normal"]
    count = int(dropped[0].split()[1])
    kept = sum(1 for m in messages if m.startswith("answered 503"))
    assert count > 0 and kept > 0 and count + kept == 30_001  # every line kept or counted: the print too
    assert all(m.endswith(f"({n})") for n, m in enumerate(messages[:kept]))
    for handler in pipeline.handlers:
        handler.close()
