"""Every explorer answer and JSON-RPC refusal in the shared samples gets the right verdict."""

from __future__ import annotations

import json

import pytest
from upstream_fixtures import sample, sample_bytes

from transfer_daemon.upstream import classify as c

ERRORS = sample("etherscan-family-errors.json")
RPC = sample("jsonrpc-getlogs-errors.json")


@pytest.mark.parametrize(("key", "kind"), [
    ("rate_limit_generic__live_tokentx_2021", c.RATE_LIMITED),
    ("rate_limit_no_key__etherscan_docs", c.RATE_LIMITED),
    ("rate_limit_per_second_5__live_2024", c.RATE_LIMITED),
    ("rate_limit_per_second_3__test_fixture_matching_live_2025_2026", c.RATE_LIMITED),
    ("rate_limit_daily__aioetherscan_test", c.DAILY_LIMIT),
    ("missing_or_invalid_key_soft__status_1_still_returns_data", c.MALFORMED),
    ("invalid_api_key", c.INVALID_KEY),
    ("deprecated_v1_endpoint", c.ENDPOINT),
    ("free_tier_chain_not_supported_v2", c.ENDPOINT),
    ("no_transactions_found__txlist_tokentx_empty", c.EMPTY),
    ("no_records_found__logs_getLogs_empty", c.EMPTY),
    ("query_timeout__message_field_variant_gnosisscan", c.QUERY_TIMEOUT),
    ("query_timeout__result_field_variant_test_fixture", c.QUERY_TIMEOUT),
    ("blockscout_no_token_transfers_found", c.EMPTY),
    ("blockscout_invalid_address_hash", c.FATAL),
    ("blockscout_result_window_too_large__reconstructed_from_source", c.RESULT_WINDOW),
])
def test_explorer_error_samples(key, kind):
    answer = c.classify_explorer_body(json.dumps(ERRORS[key]).encode())
    assert answer.kind == kind, answer


def test_explorer_rows_and_soft_key_warning():
    answer = c.classify_explorer_body(sample_bytes("gnosisscan-tokentx-page-envelope.json"))
    assert answer.kind == c.ROWS and len(answer.result) == 3 and answer.warning == ""
    soft = {"status": "1", "message": "OK-Missing/Invalid API Key, rate limit of 1/5sec applied", "result": []}
    assert c.classify_explorer(soft).warning.startswith("OK-Missing/Invalid API Key")
    assert c.classify_explorer(soft).kind == c.ROWS


def test_per_second_rate_limit_suggests_one_slot():
    per_sec = c.classify_explorer(ERRORS["rate_limit_per_second_3__test_fixture_matching_live_2025_2026"])
    assert per_sec.retry_after == pytest.approx(1 / 3)
    assert c.classify_explorer(ERRORS["rate_limit_generic__live_tokentx_2021"]).retry_after == 1.0


def test_deprecated_v1_names_the_fix():
    assert "v2/api" in c.classify_explorer(ERRORS["deprecated_v1_endpoint"]).message


#: Etherscan v2's answer to a chainid it does not serve (what the simulator answers too).
UNKNOWN_CHAIN_ID = {"status": "0", "message": "NOTOK", "result": (
    "Missing or unsupported chainid parameter (required for v2 api), please see "
    "https://api.etherscan.io/v2/chainlist for the list of supported chainids")}


def test_answers_refusing_the_chain_itself_are_endpoint_refusals_on_every_module():
    assert c.classify_explorer(UNKNOWN_CHAIN_ID).kind == c.ENDPOINT
    for key in ("deprecated_v1_endpoint", "free_tier_chain_not_supported_v2"):
        assert c.classify_proxy(ERRORS[key])[0] == c.ENDPOINT
    assert c.classify_proxy(UNKNOWN_CHAIN_ID)[0] == c.ENDPOINT
    assert c.classify_proxy(ERRORS["rate_limit_daily__aioetherscan_test"])[0] == c.DAILY_LIMIT


@pytest.mark.parametrize(("body", "why"), [
    (b"<!DOCTYPE html><html><body>502 Bad Gateway</body></html>", "HTML page instead of JSON"),
    (b'{"status":"1","message":"OK","result":[{"blockNumber":"1"', "truncated or invalid JSON"),
    (b"", "empty body"),
])
def test_non_json_bodies_are_malformed(body, why):
    answer = c.classify_explorer_body(body)
    assert (answer.kind, answer.message) == (c.MALFORMED, why)


@pytest.mark.parametrize("payload", [
    {"status": "1", "message": "OK", "result": "0"},
    {"status": "1", "message": "OK", "result": {"rows": []}},
    {"status": 1, "message": "OK", "result": []},
    {"message": "OK", "result": []},
    [1, 2],
])
def test_wrong_types_are_malformed(payload):
    assert c.classify_explorer(payload).kind == c.MALFORMED


def test_status_zero_empty_list_with_unknown_text_is_not_an_empty_page():
    assert c.classify_explorer({"status": "0", "message": "NOTOK", "result": []}).kind == c.FATAL


def test_proxy_answers():
    assert c.classify_proxy({"jsonrpc": "2.0", "id": 83, "result": "0x10d4f"}) == (c.ROWS, "0x10d4f")
    assert c.classify_proxy(ERRORS["rate_limit_generic__live_tokentx_2021"])[0] == c.RATE_LIMITED
    assert c.classify_proxy(ERRORS["invalid_api_key"])[0] == c.INVALID_KEY
    error = {"jsonrpc": "2.0", "id": 1, "error": {"code": -32602, "message": "invalid argument 0: hex string"}}
    assert c.classify_proxy(error)[0] == c.FATAL
    assert c.classify_proxy({"jsonrpc": "2.0", "id": 1})[0] == c.MALFORMED


@pytest.mark.parametrize(("key", "limit", "suggested"), [
    ("cronos_evm_rpc__block_range_2000__captured_2026_09_08", 2000, None),
    ("infura_mainnet__block_range_limit_live_2026", 10000, None),
    ("infura_2019__too_many_results_1000", None, None),
    ("quicknode__range_10000__http_413", 10000, None),
    ("tenderly__range_limit_2000", 2000, None),
])
def test_rpc_range_refusals_with_envelope(key, limit, suggested):
    refusal = c.classify_rpc_error(RPC[key]["error"])
    assert (refusal.kind, refusal.limit, refusal.suggested) == (c.RANGE, limit, suggested)


@pytest.mark.parametrize(("provider", "kind", "limit", "suggested"), [
    ("Infura (-32005, data {from,to,limit})", c.RANGE, None, (0x100E698, 0x100E6D4)),
    ("zkSync era", c.RANGE, None, (0x100000, 0x1000BB)),
    ("Alchemy", c.RANGE, 2000, None),
    ("Alchemy (newer wording, same error)", c.RANGE, 10000, None),
    ("Ankr", c.RANGE, None, None),
    ("Avalanche C-chain public", c.RANGE, 2048, None),
    ("Arbitrum public", c.RANGE, None, None),
    ("Kava EVM (Ethermint, like Cronos)", c.RANGE, 10000, None),
    ("Ethermint/Cronos node source (toBlock beyond head)", c.BEYOND_HEAD, None, None),
])
def test_rpc_refusal_wordings(provider, kind, limit, suggested):
    entry = next(e for e in RPC["message_strings_without_full_envelope"] if e["provider"] == provider)
    refusal = c.classify_rpc_error(entry)
    assert (refusal.kind, refusal.limit, refusal.suggested) == (kind, limit, suggested)


def test_ethermint_results_cap_template_is_a_range_refusal():
    assert c.classify_rpc_error({"message": "query returned more than 10000 results"}).kind == c.RANGE


def test_alchemy_suggested_range_is_read():
    message = ("Log response size exceeded. You can make eth_getLogs requests with up to a 10,000 block range "
               "... this block range should work: [0x10, 0x2f]")
    refusal = c.classify_rpc_error({"code": -32602, "message": message})
    assert refusal.suggested == (0x10, 0x2F) and refusal.limit == 10000


@pytest.mark.parametrize(("error", "kind"), [
    ({"code": -32005, "message": "project ID request rate exceeded"}, c.RATE_LIMITED),
    ({"code": 429, "message": "Too Many Requests"}, c.RATE_LIMITED),
    ({"code": -32000, "message": "invalid project id"}, c.INVALID_KEY),
    ({"code": -32000, "message": "execution reverted"}, c.OTHER),
])
def test_rpc_other_errors(error, kind):
    assert c.classify_rpc_error(error).kind == kind
