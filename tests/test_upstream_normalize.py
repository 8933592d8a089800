"""Normalizing the shared samples gives the values a person reads off them; bad rows are quarantined."""

from __future__ import annotations

import copy

import pytest
from upstream_fixtures import sample

from transfer_daemon.model import TRANSFER_TOPIC
from transfer_daemon.upstream.normalize import normalize_logs, normalize_tokentx

MKR = bytes.fromhex("9f8f72aa9304c8b593d555f12ef6589cc3a579a2")
ADDR_A = "0x" + "aa" * 20
ADDR_B = "0x" + "bb" * 20


def _topic(address: str) -> str:
    return "0x" + "0" * 24 + address[2:]


def test_mkr_tokentx_sample_reads_as_printed():
    rows = sample("etherscan-tokentx-mkr-result-pcko1.json")
    out = normalize_tokentx(1, rows)
    assert out.quarantined == [] and out.skipped == 0 and len(out.transfers) == 3
    second = out.transfers[1].to_api()
    assert second["hash"] == "0x9c82e89b7f6a4405d11c361adb6d808d27bcd9db3b04b3fb3bc05d182bbc5d6f"
    assert second["from"] == "0x4e83362442b8d1bec281594cea3050c8eb01311c"
    assert second["to"] == "0x69076e44a9c70a67d5b79d95795aba299083c275"
    assert second["value"] == "132520488141080"
    assert second["blockNumber"] == 4764973
    assert second["timeStamp"] == "2017-12-20T10:10:36Z"
    assert second["blockHash"] == "0x87a4d04a6d8fce7a149e9dc528b88dc0c781a87456910c42984bdc15930a2cac"
    assert second["gasUsed"] == "127593" and second["gasPrice"] == "35828000000"
    assert second["contractAddress"] == "0x9f8f72aa9304c8b593d555f12ef6589cc3a579a2"
    assert second["logIndex"] == 0 and second["methodId"] is None
    assert out.transfers[0].value == 5901522149285533025181


def test_gnosisscan_envelope_rows_and_contract_filter():
    rows = sample("gnosisscan-tokentx-page-envelope.json")["result"]
    out = normalize_tokentx(100, rows)
    assert [t.block_number for t in out.transfers] == [27995584, 27995581, 27995580]
    assert out.transfers[0].to_api()["from"] == "0x608bef6e818d42a6ba5f62bb09a220bc36807d30"
    assert out.transfers[2].value == 10**16
    hopr = bytes.fromhex("66225de86cac02b32f34992eb3410f59de416698")
    only = normalize_tokentx(100, rows, contracts={hopr})
    assert len(only.transfers) == 1 and only.skipped_reasons == {"other_contract": 2}


def test_tokentx_ordinal_per_block_and_contract():
    base = sample("etherscan-tokentx-mkr-result-pcko1.json")[0]
    other = dict(base, contractAddress=ADDR_A)
    second_tx = dict(base, hash="0x" + "ab" * 32)
    next_block = dict(base, blockNumber=str(int(base["blockNumber"]) + 1))
    rows = [dict(base, value="1"), dict(other, value="2"), dict(base, value="3"), dict(second_tx, value="4"),
            dict(other, value="5"), dict(next_block, value="6")]
    out = normalize_tokentx(1, rows)
    assert [(t.value, t.log_index) for t in out.transfers] == [(1, 0), (2, 0), (3, 1), (4, 2), (5, 1), (6, 0)]


def test_tokentx_quarantined_row_keeps_sibling_ordinals():
    base = sample("etherscan-tokentx-mkr-result-pcko1.json")[0]
    rows = [dict(base, value="-1"), dict(base, value="7")]
    out = normalize_tokentx(1, rows)
    assert [(t.value, t.log_index) for t in out.transfers] == [(7, 1)]
    assert out.quarantined[0].reason.startswith("value:") and out.quarantined[0].raw is rows[0]


def test_blockscout_log_index_is_used_when_present():
    base = sample("etherscan-tokentx-mkr-result-pcko1.json")[0]
    out = normalize_tokentx(1, [dict(base, logIndex="17")])
    assert out.transfers[0].log_index == 17


@pytest.mark.parametrize(("field", "value", "reason"), [
    ("hash", "0x1234", "hash:"),
    ("hash", "0x" + "zz" * 32, "hash: not hex"),
    ("from", "0x" + "aa" * 19, "from:"),
    ("to", None, "to:"),
    ("contractAddress", "1x" + "aa" * 20, "contractAddress:"),
    ("value", str(2**256), "value: out of range"),
    ("value", "1e18", "value:"),
    ("value", " 12", "value:"),
    ("value", 12, "value:"),
    ("blockNumber", "-3", "blockNumber:"),
    ("blockNumber", "", "blockNumber:"),
    ("timeStamp", "99999999999999", "timeStamp: out of range"),
    ("blockHash", "0xabc", "blockHash:"),
    ("gasUsed", "0x12", "gasUsed:"),
])
def test_tokentx_invalid_field_is_quarantined_and_page_proceeds(field, value, reason):
    rows = copy.deepcopy(sample("etherscan-tokentx-mkr-result-pcko1.json"))
    rows[1][field] = value
    out = normalize_tokentx(1, rows)
    assert len(out.transfers) == 2 and len(out.quarantined) == 1
    assert out.quarantined[0].reason.startswith(reason), out.quarantined[0].reason


def test_tokentx_missing_field_and_non_object_rows():
    rows = copy.deepcopy(sample("etherscan-tokentx-mkr-result-pcko1.json"))
    del rows[0]["value"]
    out = normalize_tokentx(1, [*rows, "oops", None])
    assert len(out.transfers) == 2
    reasons = [q.reason for q in out.quarantined]
    assert reasons[1:] == ["row is str, expected an object", "row is NoneType, expected an object"]
    assert out.quarantined[0].reason.startswith("value:")


def test_uint256_max_value_is_accepted():
    row = dict(sample("etherscan-tokentx-mkr-result-pcko1.json")[0], value=str(2**256 - 1))
    assert normalize_tokentx(1, [row]).transfers[0].value == 2**256 - 1


def test_method_id_kept_lower_case_or_dropped_when_malformed():
    base = sample("etherscan-tokentx-mkr-result-pcko1.json")[0]
    out = normalize_tokentx(1, [dict(base, methodId="0xA9059CBB"), dict(base, methodId="0x")])
    assert [t.method_id for t in out.transfers] == ["0xa9059cbb", None]


def _transfer_log(**changes) -> dict:
    """The dreamx getLogs sample's first entry turned into an ERC-20 Transfer."""
    log = dict(sample("etherscan-getlogs-deposits-dreamx.json")["result"][0])
    log.update(topics=[TRANSFER_TOPIC, _topic(ADDR_A), _topic(ADDR_B)], data="0x" + "%064x" % 10**18)
    log.update(changes)
    return log


def test_getlogs_sample_deposit_events_are_skipped():
    out = normalize_logs(1, sample("etherscan-getlogs-deposits-dreamx.json")["result"])
    assert out.transfers == [] and out.quarantined == [] and out.skipped_reasons == {"other_event": 2}


def test_explorer_getlogs_hex_fields_and_empty_log_index():
    out = normalize_logs(1, [_transfer_log(), _transfer_log(logIndex="0x1")])
    first = out.transfers[0]
    assert (first.block_number, first.time_stamp, first.log_index) == (0x6C44E7, 0x5E173778, 0)
    assert first.tx_hash.hex() == "624c55566e2e3f88e73cb351e6a0f93d0c12bb2ace175a8e073b342c3887ff85"
    assert first.from_address.hex() == "aa" * 20 and first.to_address.hex() == "bb" * 20
    assert first.value == 10**18 and first.gas_used == 0x8C55 and first.gas_price == 0x3B9ACA00
    assert first.contract_address.hex() == "7f6a01dcebe266779e00a4cf15e9432cb1423203"
    assert first.block_hash is None and out.transfers[1].log_index == 1


def test_rpc_log_uses_block_map_and_block_timestamp():
    block_hash = "0x" + "cd" * 32
    rpc = _transfer_log(blockHash=block_hash)
    del rpc["timeStamp"], rpc["gasPrice"], rpc["gasUsed"]
    assert normalize_logs(25, [rpc], blocks={0x6C44E7: (b"\x01" * 32, 1234)}).transfers[0].time_stamp == 1234
    stamped = normalize_logs(25, [dict(rpc, blockTimestamp="0x10")]).transfers[0]
    assert stamped.time_stamp == 16 and stamped.block_hash == bytes.fromhex("cd" * 32)
    missing = normalize_logs(25, [rpc])
    assert missing.quarantined[0].reason == "timeStamp: missing and the block is unknown"


def test_logs_skip_removed_erc721_and_quarantine_bad_ones():
    logs = [
        _transfer_log(removed=True),
        _transfer_log(topics=[TRANSFER_TOPIC, _topic(ADDR_A), _topic(ADDR_B), "0x" + "00" * 31 + "07"], data="0x"),
        _transfer_log(topics=[TRANSFER_TOPIC.upper().replace("0X", "0x"), _topic(ADDR_A), _topic(ADDR_B)]),
        _transfer_log(data="0x" + "00" * 64),
        _transfer_log(topics=[TRANSFER_TOPIC, "0x" + "11" * 32, _topic(ADDR_B)]),
        _transfer_log(topics=[TRANSFER_TOPIC]),
        _transfer_log(blockNumber="12"),
        _transfer_log(logIndex="0x_1"),
    ]
    out = normalize_logs(1, logs)
    assert out.skipped_reasons == {"removed": 1, "erc721": 1} and len(out.transfers) == 1
    reasons = [q.reason for q in out.quarantined]
    assert reasons[0].startswith("data:")
    assert reasons[1].startswith("topics[1]: address topic with non-zero padding")
    assert reasons[2] == "topics: Transfer log with 1 topics, expected 3"
    assert reasons[3].startswith("blockNumber:") and reasons[4].startswith("logIndex:")
