"""One set of bounds (model.py) for normalization and the schema: a row normalization accepts is
a row the table stores, and a row outside is quarantined alone, never failing its batch.

The pure tests spell the limits as numbers (not the constants) so that a changed constant fails
them; the database tests read the limits back from the schema (its CHECK, the key functions).
"""

from __future__ import annotations

import json
import re
from dataclasses import replace

import psycopg
import pytest
from store_support import make_transfers

from transfer_daemon import store
from transfer_daemon.model import (
    MAX_BLOCK_NUMBER,
    MAX_LOG_INDEX,
    MAX_TIME_STAMP,
    TRANSFER_TOPIC,
    UINT256_MAX,
    IngestEvent,
    InvalidField,
    Quarantined,
    parse_uint,
)
from transfer_daemon.upstream.normalize import normalize_logs, normalize_tokentx

ADDRESS = "0x" + "ab" * 20
CONTRACT = "0x" + "cd" * 20
LIMITS = {"logIndex": 16_777_215, "blockNumber": 549_755_813_887, "timeStamp": 4_294_967_295,
          "value": 2**256 - 1}


def _tokentx(**fields: str) -> dict:
    row = {"blockNumber": "100", "timeStamp": "1700000000", "hash": "0x" + "11" * 32, "from": ADDRESS,
           "to": ADDRESS, "value": "5", "contractAddress": CONTRACT, "blockHash": "0x" + "22" * 32,
           "tokenName": "Token", "confirmations": "7"}
    row.update(fields)
    return row


def _log(**fields: str) -> dict:
    topic = "0x" + "0" * 24 + ADDRESS[2:]
    entry = {"address": CONTRACT, "topics": [TRANSFER_TOPIC, topic, topic], "data": "0x" + "0" * 63 + "5",
             "blockNumber": "0x64", "blockHash": "0x" + "22" * 32, "transactionHash": "0x" + "11" * 32,
             "logIndex": "0x0", "timeStamp": "0x6553f100"}
    entry.update(fields)
    return entry


# --- pure: normalization accepts exactly the bounds ----------------------------------------------


@pytest.mark.parametrize("name", ["logIndex", "blockNumber", "timeStamp", "value"])
def test_tokentx_accepts_each_limit_and_quarantines_one_past_it(name):
    limit = LIMITS[name]
    fits = normalize_tokentx(1, [_tokentx(**{name: str(limit)}), _tokentx(**{name: "0"})])
    assert len(fits.transfers) == 2 and fits.quarantined == []
    past = normalize_tokentx(1, [_tokentx(**{name: str(limit + 1)}), _tokentx(blockNumber="101")])
    assert [t.block_number for t in past.transfers] == [101], "the other row of the page is kept"
    assert [q.reason.split(":")[0] for q in past.quarantined] == [name]
    assert past.quarantined[0].reason == f"{name}: out of range 0..{limit} (got '{limit + 1}')"


@pytest.mark.parametrize("name", ["logIndex", "blockNumber", "timeStamp"])
def test_logs_accept_each_limit_and_quarantine_one_past_it(name):
    limit = LIMITS[name]
    fits = normalize_logs(1, [_log(**{name: hex(limit)}), _log(**{name: "0x0"})])
    assert len(fits.transfers) == 2 and fits.quarantined == []
    past = normalize_logs(1, [_log(**{name: hex(limit + 1)}), _log(logIndex="0x1")])
    assert [t.log_index for t in past.transfers] == [1]
    assert [q.reason for q in past.quarantined] == [f"{name}: out of range 0..{limit} (got '{hex(limit + 1)}')"]


def test_log_value_is_any_uint256_and_timestamps_from_headers_keep_the_bound():
    full = normalize_logs(1, [_log(data="0x" + "f" * 64)])
    assert full.transfers[0].value == LIMITS["value"]
    headers = {100: (b"\x22" * 32, LIMITS["timeStamp"]), 101: (b"\x22" * 32, LIMITS["timeStamp"] + 1)}
    out = normalize_logs(1, [_log(timeStamp=""), _log(timeStamp="", blockNumber="0x65")], headers)
    assert [t.time_stamp for t in out.transfers] == [LIMITS["timeStamp"]]
    assert [q.reason for q in out.quarantined] == [
        f"timeStamp: out of range 0..{LIMITS['timeStamp']} (got '{LIMITS['timeStamp'] + 1}')"]


def test_numbers_longer_than_any_uint256_are_refused_even_when_zero_padded():
    widest = normalize_tokentx(1, [_tokentx(value="0" * 77 + "5")])
    assert [t.value for t in widest.transfers] == [5]
    padded = normalize_tokentx(1, [_tokentx(value="0" * 78 + "5")])
    assert [q.reason for q in padded.quarantined] == [f"value: more than 78 digits (got '{'0' * 78 + '5'}')"]
    full = normalize_logs(1, [_log(gasPrice="0x" + "f" * 64)])
    assert [t.gas_price for t in full.transfers] == [LIMITS["value"]]
    too_long = "0x0" + "f" * 64
    assert [q.reason for q in normalize_logs(1, [_log(gasPrice=too_long)]).quarantined] == [
        f"gasPrice: more than 64 hex digits (got '{too_long}')"]


@pytest.mark.parametrize("log_index", ["0x1_0", "0x\u0663", "0x 1", "0x-1"])
def test_hex_that_python_would_read_but_a_node_never_writes_is_refused(log_index):
    out = normalize_logs(1, [_log(logIndex=log_index)])
    assert out.transfers == [] and out.quarantined[0].reason.startswith("logIndex")


def test_a_header_gives_time_and_hash_within_the_bounds():
    header = (b"\x33" * 32, 0)
    out = normalize_logs(1, [_log(timeStamp="", blockHash="")], {100: header})
    assert [(t.time_stamp, t.block_hash) for t in out.transfers] == [header[::-1]]
    refused = normalize_logs(1, [_log(timeStamp="")], {100: (header[0], -1)})
    assert [q.reason for q in refused.quarantined] == [f"timeStamp: out of range 0..{LIMITS['timeStamp']} (got '-1')"]


@pytest.mark.parametrize("block_hash", ["0x1234", "00" + "22" * 32])
def test_a_block_hash_of_another_shape_is_refused(block_hash):
    assert normalize_logs(1, [_log(blockHash=block_hash)]).quarantined[0].reason.startswith("blockHash")
    assert normalize_tokentx(1, [_tokentx(blockHash=block_hash)]).quarantined[0].reason.startswith("blockHash")


def test_the_reason_names_the_first_bad_field_past_a_full_width_number():
    # The slow path reads a 64-digit quantity as one (and `value[2:]` vs `value[1:]` in its shape
    # test is an equivalent mutant: after "0x", the "x" is alphanumeric like any hex digit).
    widest = "0x" + "0" * 63 + "1"
    out = normalize_logs(1, [_log(blockNumber=widest, logIndex="-1")])
    assert out.quarantined[0].reason.startswith("logIndex: expected a 0x hex quantity")


def test_quarantined_rows_know_their_block_when_it_parses():
    tokentx = normalize_tokentx(1, [_tokentx(logIndex="-1"), _tokentx(blockNumber="x", logIndex="-1")])
    assert [q.block_number for q in tokentx.quarantined] == [100, None]
    logs = normalize_logs(1, [_log(logIndex="0x100000000"), _log(blockNumber="0xzz")])
    assert [q.block_number for q in logs.quarantined] == [100, None]
    past = normalize_logs(1, [_log(blockNumber=hex(LIMITS["blockNumber"] + 1), logIndex="-1")])
    assert [q.block_number for q in past.quarantined] == [None]


def test_a_valid_row_whose_token_name_holds_nul_is_a_transfer():
    out = normalize_tokentx(1, [_tokentx(tokenName="Token" + "\0" * 27)])
    assert len(out.transfers) == 1 and out.quarantined == []


def test_parse_uint_is_inclusive_at_both_ends():
    assert parse_uint(0, "n", 5) == 0 and parse_uint(5, "n", 5) == 5 and parse_uint("0x5", "n", 5) == 5
    assert parse_uint("0x", "n", 5) == 0 and parse_uint("5", "n", 5) == 5
    for bad in (-1, 6, "0x6", "6", "\u0663", "x", True):
        with pytest.raises(InvalidField):
            parse_uint(bad, "n", 5)
    assert parse_uint(str(2**256 - 1), "n") == UINT256_MAX
    with pytest.raises(InvalidField):
        parse_uint(str(2**256), "n")


# --- the schema holds exactly the same bounds -----------------------------------------------------


@pytest.fixture
def conn(database_url: str):
    with psycopg.connect(database_url, autocommit=True) as connection:
        yield connection


@pytest.mark.parametrize("column, limit", [("log_index", MAX_LOG_INDEX), ("block_number", MAX_BLOCK_NUMBER),
                                           ("time_stamp", MAX_TIME_STAMP), ("value", UINT256_MAX)])
def test_the_schema_checks_are_the_python_bounds(conn, column, limit):
    definitions = [row[0] for row in conn.execute(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'transfers'::regclass"
        " AND contype = 'c' AND %s = ANY(SELECT attname FROM pg_attribute WHERE attrelid = conrelid"
        " AND attnum = ANY(conkey))", (column,))]
    assert len(definitions) == 1, definitions
    assert [int(n) for n in re.findall(r"\d+", definitions[0])] == [0, limit]


@pytest.mark.parametrize("field, limit", [("log_index", MAX_LOG_INDEX), ("block_number", MAX_BLOCK_NUMBER),
                                          ("time_stamp", MAX_TIME_STAMP), ("value", UINT256_MAX)])
def test_the_table_stores_each_limit_and_refuses_one_past_it(conn, field, limit):
    row = make_transfers(1, 1)[0]
    assert store.write_batch(conn, 1, [replace(row, **{field: limit})], cursor=None, event=None) == 1
    assert store.write_batch(conn, 1, [replace(row, **{"log_index": 2, field: 0})], cursor=None, event=None) == 1
    past = replace(row, **{"log_index": 1, field: limit + 1})
    with pytest.raises(psycopg.errors.CheckViolation, match=f"transfers_{field}_range"):
        store.write_batch(conn, 1, [past], cursor=None, event=None)


def _quarantine_events(conn) -> list[dict]:
    return store.recent_events(conn, 1, statuses=["quarantined"])


def test_a_quarantined_row_holding_nul_is_kept_whole(conn):
    raw = _tokentx(logIndex="-1", tokenName="Token" + "\0" * 27)
    lone = _tokentx(logIndex="-2", tokenName="\ud800 half a character")
    batch = make_transfers(1, 3)
    event = IngestEvent(1, "ingested", "batch")
    rows = [Quarantined(1, "logIndex: bad", raw, 100), Quarantined(1, "logIndex: \0", lone)]
    assert store.write_batch(conn, 1, batch, cursor=None, event=event, quarantined=rows) == 3
    nul, surrogate = sorted(_quarantine_events(conn), key=lambda e: e["id"])
    assert json.loads(nul["detail"]["raw_json"]) == raw and nul["detail"]["block"] == 100
    assert "raw" not in nul["detail"] and nul["message"] == "logIndex: bad"
    assert json.loads(surrogate["detail"]["raw_json"]) == lone and surrogate["detail"]["block"] is None
    assert surrogate["message"] == "logIndex: \\0"


def test_a_row_is_quarantined_once_however_often_it_is_served(conn):
    """Sync reads the unsettled blocks every cycle and a repair reads its range again: the same row
    (an explorer's `confirmations` grows meanwhile) is one quarantine event."""
    plain = _tokentx(logIndex="4294967296")
    with_nul = _tokentx(logIndex="-1", tokenName="T\0")
    for confirmations in ("7", "8", "9"):
        rows = [Quarantined(1, "logIndex", {**plain, "confirmations": confirmations}, 100),
                Quarantined(1, "logIndex", {**with_nul, "confirmations": confirmations}, 100)]
        store.write_batch(conn, 1, [], cursor=None, event=None, quarantined=rows)
    other = Quarantined(1, "logIndex", {**plain, "hash": "0x" + "33" * 32}, 100)
    store.write_batch(conn, 1, [], cursor=None, event=None, quarantined=[other, other])
    assert len(_quarantine_events(conn)) == 3
    assert store.write_batch(conn, 25, [], cursor=None, event=None, quarantined=[replace(other, chain_id=25)]) == 0
    assert len(store.recent_events(conn, 25, statuses=["quarantined"])) == 1, "per chain"
