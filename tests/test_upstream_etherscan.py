"""Explorer client (`etherscan`, `etherscan_logs`) against replayed answers of the real services."""

from __future__ import annotations

import json
import logging

import pytest
import requests
import responses
from upstream_fixtures import (
    API_KEY,
    CONTRACT_A,
    CONTRACT_B,
    FakeExplorer,
    FakeTime,
    make_chain,
    make_http,
    query,
    sample,
    tokentx_row,
)

from transfer_daemon.errors import CallsRefused, DailyCapReached, EndpointRefused, InvalidApiKey, UpstreamError
from transfer_daemon.model import TRANSFER_TOPIC
from transfer_daemon.upstream import etherscan
from transfer_daemon.upstream.etherscan import OPEN_END_BLOCK, ExplorerSource
from transfer_daemon.upstream.http import RetryPolicy

V2 = "https://api.etherscan.io/v2/api"
ERRORS = sample("etherscan-family-errors.json")


@pytest.fixture
def fake():
    return FakeTime()


@pytest.fixture
def rsps():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def explorer(tmp_path, fake, policy=None, **chain):
    config = make_chain(**chain)
    return ExplorerSource(config, make_http(config, tmp_path, fake, policy))


def _mkr_answer() -> dict:
    return {"status": "1", "message": "OK", "result": sample("etherscan-tokentx-mkr-result-pcko1.json")}


def test_v2_call_carries_chainid_key_and_window(rsps, tmp_path, fake):
    rsps.get(V2, json=_mkr_answer())
    result = explorer(tmp_path, fake).fetch_blocks(4_730_000, 4_800_000)
    q = query(rsps.calls[0].request)
    assert q == {"chainid": "1", "module": "account", "action": "tokentx", "contractaddress": CONTRACT_A,
                 "startblock": "4730000", "endblock": "4800000", "page": "1", "offset": "100", "sort": "asc",
                 "apikey": API_KEY}
    assert result.covered_to == 4_800_000 and result.calls == 1 and result.skipped == 3  # other contract


def test_v1_style_and_blockscout_urls_have_no_chainid_and_key_only_when_set(rsps, tmp_path, fake):
    mkr = "0x9f8f72aa9304c8b593d555f12ef6589cc3a579a2"
    rsps.get("https://api.gnosisscan.io/api", json=sample("gnosisscan-tokentx-page-envelope.json"))
    rsps.get("https://eth.blockscout.com/api", json=_mkr_answer())
    v1 = explorer(tmp_path, fake, base_url="https://api.gnosisscan.io/api", id=100, name="gnosis")
    v1.fetch_blocks(0, 10)
    assert "chainid" not in query(rsps.calls[0].request) and query(rsps.calls[0].request)["apikey"] == API_KEY
    blockscout = explorer(tmp_path, fake, base_url="https://eth.blockscout.com/api", api_key_env="",
                          contracts=(mkr,))
    result = blockscout.fetch_blocks(4_730_000, 4_800_000)
    assert "apikey" not in query(rsps.calls[1].request) and len(result.transfers) == 3
    assert result.transfers[0].to_api()["to"] == "0x4e83362442b8d1bec281594cea3050c8eb01311c"


@pytest.mark.parametrize("key", ["no_transactions_found__txlist_tokentx_empty", "blockscout_no_token_transfers_found"])
def test_empty_answers_are_empty_pages(rsps, tmp_path, fake, key):
    rsps.get(V2, json=ERRORS[key])
    result = explorer(tmp_path, fake).fetch_blocks(10, 20)
    assert (result.transfers, result.covered_to, result.calls) == ([], 20, 1)


def _rows_with_straddling_transactions() -> list[dict]:
    """12,000 rows, 1-7 per block, transactions of 1-3 transfers, pages ending inside blocks."""
    rows, tx, block = [], 0, 100
    while len(rows) < 12_000:
        for _ in range(1 + block % 3):
            tx += 1
            rows.extend(tokentx_row(block, tx, value=len(rows)) for _ in range(1 + tx % 3))
        block += 1
    return rows


def test_walks_past_the_10000_window_rereading_boundary_blocks(rsps, tmp_path, fake):
    rows = _rows_with_straddling_transactions()
    fake_explorer = FakeExplorer(rows)
    rsps.add_callback(responses.GET, V2, callback=fake_explorer)
    last = int(rows[-1]["blockNumber"])
    result = explorer(tmp_path, fake, page_size=1000).fetch_blocks(100, last + 50)
    assert [t.value for t in result.transfers] == list(range(len(rows)))  # each row once, in order
    assert result.covered_to == last + 50 and result.quarantined == []
    assert all(call["page"] == "1" for call in fake_explorer.calls)  # never near page x offset > 10000
    starts = [int(call["startblock"]) for call in fake_explorer.calls]
    assert starts == sorted(starts) and len(starts) > 12
    by_block: dict[tuple[int, bytes], list[int]] = {}
    for t in result.transfers:
        by_block.setdefault((t.block_number, t.contract_address), []).append(t.log_index)
    assert all(indexes == list(range(len(indexes))) for indexes in by_block.values())


def test_max_calls_stops_at_a_whole_block_and_the_rest_follows(rsps, tmp_path, fake):
    rows = _rows_with_straddling_transactions()[:1000]
    rsps.add_callback(responses.GET, V2, callback=FakeExplorer(rows))
    source = explorer(tmp_path, fake, page_size=100)
    last = int(rows[-1]["blockNumber"])
    first = source.fetch_blocks(100, last, max_calls=3)
    assert first.calls == 3 and 100 < first.covered_to < last
    assert max(t.block_number for t in first.transfers) == first.covered_to
    rest = source.fetch_blocks(first.covered_to + 1, last)
    assert [t.value for t in first.transfers + rest.transfers] == list(range(1000))


def test_a_block_filling_pages_is_read_whole_and_an_oversized_one_is_flagged(rsps, tmp_path, fake, monkeypatch):
    monkeypatch.setattr(etherscan, "RESULT_WINDOW", 300)
    rows = [tokentx_row(10, 1, value=i) for i in range(5)]
    rows += [tokentx_row(11, 2 + i // 2, value=5 + i) for i in range(250)]  # whole-block pages
    rows += [tokentx_row(12, 500, value=255 + i) for i in range(350)]  # beyond the (patched) window
    rows += [tokentx_row(13, 900, value=605)]
    rsps.add_callback(responses.GET, V2, callback=FakeExplorer(rows, window=300))
    result = explorer(tmp_path, fake, page_size=100).fetch_blocks(10, 13)
    values = [t.value for t in result.transfers]
    assert values == list(range(255)) + list(range(255, 555)) + [605]
    assert result.covered_to == 13 and len(result.quarantined) == 1
    flagged = result.quarantined[0]
    assert flagged.raw == {"blockNumber": 12, "contractAddress": CONTRACT_A, "rowsRead": 300}
    assert "block 12 holds more than 300 transfers" in flagged.reason


def test_one_call_series_per_contract_merged_in_block_order(rsps, tmp_path, fake):
    rows = [tokentx_row(b, b, contract=CONTRACT_A, value=b) for b in range(1, 20, 2)]
    rows += [tokentx_row(b, 100 + b, contract=CONTRACT_B, value=b) for b in range(2, 20, 2)]
    fake_explorer = FakeExplorer(rows)
    rsps.add_callback(responses.GET, V2, callback=fake_explorer)
    result = explorer(tmp_path, fake, contracts=(CONTRACT_A, CONTRACT_B)).fetch_blocks(1, 30)
    assert [t.value for t in result.transfers] == list(range(1, 20))
    assert {c["contractaddress"] for c in fake_explorer.calls} == {CONTRACT_A, CONTRACT_B}


def test_rate_limit_answers_are_retried_with_backoff(rsps, tmp_path, fake):
    rsps.get(V2, json=ERRORS["rate_limit_per_second_3__test_fixture_matching_live_2025_2026"])
    rsps.get(V2, json=ERRORS["rate_limit_generic__live_tokentx_2021"])
    rsps.get(V2, json=_mkr_answer())
    source = explorer(tmp_path, fake, contracts=("0x9f8f72aa9304c8b593d555f12ef6589cc3a579a2",))
    result = source.fetch_blocks(4_730_000, 4_800_000)
    assert len(result.transfers) == 3 and len(rsps.calls) == 3
    assert 0.8 <= fake.sleeps[0] <= 1.2 and 1.6 <= fake.sleeps[1] <= 2.4  # 1 s, 2 s with jitter
    assert source.stats.requests == {"rate_limited": 2, "ok": 1} and source.stats.retries == 2


@pytest.mark.parametrize("body", [
    "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body>cloudflare</body></html>",
    '{"status":"1","message":"OK","result":[{"blockNumber":"4730207","timeSt',
    '{"status":"1","message":"OK","result":"Error! Missing Or invalid Module name"}',
])
def test_malformed_bodies_are_retried(rsps, tmp_path, fake, body):
    rsps.get(V2, body=body, status=200)
    rsps.get(V2, json={"status": "0", "message": "No transactions found", "result": []})
    assert explorer(tmp_path, fake).fetch_blocks(1, 2).covered_to == 2
    assert len(fake.sleeps) == 1 and len(rsps.calls) == 2


@pytest.mark.parametrize(("status", "headers", "minimum"), [
    (429, {"Retry-After": "7"}, 7.0), (502, {}, 0.8), (503, {"Retry-After": "3"}, 0.8),
])
def test_http_429_and_5xx_are_retried_honouring_retry_after(rsps, tmp_path, fake, status, headers, minimum):
    rsps.get(V2, body="busy", status=status, headers=headers)
    rsps.get(V2, json=ERRORS["no_records_found__logs_getLogs_empty"])
    explorer(tmp_path, fake).fetch_blocks(1, 2)
    assert len(fake.sleeps) == 1 and fake.sleeps[0] >= minimum


def test_timeouts_and_connection_errors_are_retried_then_given_up(rsps, tmp_path, fake):
    rsps.get(V2, body=requests.ConnectTimeout("timed out"))
    rsps.get(V2, body=requests.ConnectionError(f"refused: {V2}?module=account&apikey={API_KEY}"))
    rsps.get(V2, body=requests.ReadTimeout("read timed out"))
    source = explorer(tmp_path, fake, policy=RetryPolicy(max_attempts=3))
    with pytest.raises(UpstreamError, match="gave up .* after 3 attempts") as caught:
        source.fetch_blocks(1, 2)
    assert API_KEY not in str(caught.value) and API_KEY not in str(caught.value.__cause__)
    assert source.stats.requests == {"timeout": 2, "connection": 1} and source.stats.gave_up == 1
    assert len(fake.sleeps) == 2


def test_max_total_time_gives_up_before_sleeping_past_it(rsps, tmp_path, fake):
    for _ in range(10):
        rsps.get(V2, status=500)
    source = explorer(tmp_path, fake, policy=RetryPolicy(max_attempts=100, max_total_s=20))
    with pytest.raises(UpstreamError, match="gave up"):
        source.fetch_blocks(1, 2)
    assert sum(fake.sleeps) <= 20 and len(rsps.calls) == 5  # 1 + 2 + 4 + 8 (+16 would pass 20 s)


def test_invalid_key_is_never_retried_and_never_shown(rsps, tmp_path, fake, caplog):
    rsps.get(V2, json=ERRORS["invalid_api_key"])
    source = explorer(tmp_path, fake)
    with caplog.at_level(logging.DEBUG), pytest.raises(InvalidApiKey) as caught:
        source.fetch_blocks(1, 2)
    assert len(rsps.calls) == 1 and fake.sleeps == [] and caught.value.retryable is False
    assert "Invalid API Key" in str(caught.value) and "[ethereum]" in str(caught.value)
    assert API_KEY not in str(caught.value) and API_KEY not in caplog.text
    assert "TEST_ETHERSCAN_KEY" in caplog.text  # the log names the variable to fix


@pytest.mark.parametrize(("key", "kind"), [("deprecated_v1_endpoint", EndpointRefused),
                                           ("free_tier_chain_not_supported_v2", EndpointRefused),
                                           ("blockscout_invalid_address_hash", UpstreamError)])
def test_answers_an_operator_must_act_on_are_not_retried(rsps, tmp_path, fake, key, kind):
    rsps.get(V2, json=ERRORS[key])
    with pytest.raises(UpstreamError) as caught:
        explorer(tmp_path, fake).fetch_blocks(1, 2)
    assert caught.value.retryable is False and len(rsps.calls) == 1 and fake.sleeps == []
    assert type(caught.value) is kind


def test_daily_cap_is_not_retried_and_pauses_the_chain(rsps, tmp_path, fake):
    rsps.get(V2, json=ERRORS["rate_limit_daily__aioetherscan_test"])
    with pytest.raises(DailyCapReached) as caught:
        explorer(tmp_path, fake).fetch_blocks(1, 2)
    assert caught.value.retryable is False and len(rsps.calls) == 1 and fake.sleeps == []
    assert isinstance(caught.value, CallsRefused) and caught.value.reset_at is None  # Etherscan does not say


def test_daily_cap_on_the_proxy_module_is_the_same_refusal(rsps, tmp_path, fake):
    rsps.get(V2, json=ERRORS["rate_limit_daily__aioetherscan_test"])
    with pytest.raises(DailyCapReached):
        explorer(tmp_path, fake).head_block()
    assert len(rsps.calls) == 1


@pytest.mark.parametrize("key", ["query_timeout__message_field_variant_gnosisscan",
                                 "query_timeout__result_field_variant_test_fixture"])
def test_query_timeout_narrows_the_block_window(rsps, tmp_path, fake, key):
    rows = [tokentx_row(b, b, value=b) for b in range(0, 100, 10)]
    fake_explorer = FakeExplorer(rows)
    rsps.get(V2, json=ERRORS[key])
    rsps.add_callback(responses.GET, V2, callback=fake_explorer)
    result = explorer(tmp_path, fake).fetch_blocks(0, 99)
    assert [t.value for t in result.transfers] == list(range(0, 100, 10)) and result.covered_to == 99
    windows = [(c["startblock"], c["endblock"]) for c in fake_explorer.calls]
    assert windows == [("0", "49"), ("50", "99")]


def test_etherscan_logs_kind(rsps, tmp_path, fake):
    logs = []
    for i in range(5):
        log = dict(sample("etherscan-getlogs-deposits-dreamx.json")["result"][i % 2])
        log.update(address=CONTRACT_A, blockNumber=hex(0x6C44E7 + i // 2), logIndex="0x" if i % 2 == 0 else "0x1",
                   topics=[TRANSFER_TOPIC, "0x" + "0" * 24 + "aa" * 20, "0x" + "0" * 24 + "bb" * 20],
                   data=f"0x{i:064x}")
        logs.append(log)
    logs.append(dict(logs[0], topics=[*logs[0]["topics"], "0x" + "00" * 32], blockNumber=hex(0x6C44E7 + 3)))
    fake_explorer = FakeExplorer(logs, logs=True)
    rsps.add_callback(responses.GET, V2, callback=fake_explorer)
    result = explorer(tmp_path, fake, kind="etherscan_logs", page_size=2).fetch_blocks(0x6C44E7, 0x6C44E7 + 5)
    assert [(t.block_number - 0x6C44E7, t.log_index, t.value) for t in result.transfers] == [
        (0, 0, 0), (0, 1, 1), (1, 0, 2), (1, 1, 3), (2, 0, 4)]
    assert result.skipped_reasons == {"erc721": 1} and result.covered_to == 0x6C44E7 + 5
    first = fake_explorer.calls[0]
    assert (first["module"], first["action"], first["address"], first["topic0"]) == (
        "logs", "getLogs", CONTRACT_A, TRANSFER_TOPIC)
    assert first["fromBlock"] == str(0x6C44E7) and "sort" not in first


def test_head_and_block_hashes_through_the_proxy_module(rsps, tmp_path, fake):
    block_hash = "0x" + "ab" * 32
    rsps.get(V2, json={"jsonrpc": "2.0", "id": 83, "result": "0x13a5f2c"})
    rsps.get(V2, json={"jsonrpc": "2.0", "id": 1, "result": {"number": "0x10", "hash": block_hash}})
    rsps.get(V2, json={"jsonrpc": "2.0", "id": 1, "result": None})
    source = explorer(tmp_path, fake)
    assert source.head_block() == 0x13A5F2C
    assert source.block_hashes([16, 17]) == {16: bytes.fromhex("ab" * 32)}
    q = query(rsps.calls[1].request)
    assert (q["module"], q["action"], q["tag"], q["boolean"]) == ("proxy", "eth_getBlockByNumber", "0x10", "false")


def test_proxy_rate_limit_envelope_is_retried(rsps, tmp_path, fake):
    rsps.get(V2, json=ERRORS["rate_limit_generic__live_tokentx_2021"])
    rsps.get(V2, json={"jsonrpc": "2.0", "id": 83, "result": "0x10"})
    assert explorer(tmp_path, fake).head_block() == 16 and len(fake.sleeps) == 1


def test_a_whole_block_page_cuts_the_block_a_full_call_ends_in(rsps, tmp_path, fake):
    rows = [tokentx_row(b, b * 10 + i, value=b * 10 + i) for b in range(1, 8) for i in range(3)]
    rsps.add_callback(responses.GET, V2, callback=FakeExplorer(rows))
    source = explorer(tmp_path, fake, page_size=5)
    newest, rest = source.whole_block_page(CONTRACT_A, 0, None, descending=True)
    # rows 72, 71, 70, 62, 61: block 6 is cut (its ordinals would be wrong) and read by the next call
    assert sorted((t.block_number, t.log_index, t.value) for t in newest) == [(7, 0, 70), (7, 1, 71), (7, 2, 72)]
    assert rest == 6 and "startblock" not in query(rsps.calls[0].request)
    following, rest = source.whole_block_page(CONTRACT_A, 0, 6, descending=True)
    assert {t.block_number for t in following} == {6} and rest == 5
    oldest, rest = source.whole_block_page(CONTRACT_A, 6, None, descending=False)
    q = query(rsps.calls[-1].request)
    assert (q["sort"], q["startblock"], q["endblock"]) == ("asc", "6", str(OPEN_END_BLOCK))
    assert {t.block_number for t in oldest} == {6} and rest == 7


def test_a_block_that_fills_a_whole_call_is_read_alone(rsps, tmp_path, fake):
    rows = [tokentx_row(4, 100 + i) for i in range(2)] + [tokentx_row(5, i, value=i) for i in range(7)]
    rsps.add_callback(responses.GET, V2, callback=FakeExplorer(rows))
    transfers, rest = explorer(tmp_path, fake, page_size=3).whole_block_page(CONTRACT_A, 0, None, descending=True)
    assert [(t.block_number, t.log_index, t.value) for t in transfers] == [(5, i, i) for i in range(7)]
    assert rest == 4


def test_soft_invalid_key_warning_is_logged_once_without_the_key(rsps, tmp_path, fake, caplog):
    soft = {"status": "1", "message": "OK-Missing/Invalid API Key, rate limit of 1/5sec applied", "result": []}
    rsps.get(V2, json=soft)
    rsps.get(V2, json=soft)
    source = explorer(tmp_path, fake)
    with caplog.at_level(logging.WARNING):
        source.fetch_blocks(1, 2)
        source.fetch_blocks(3, 4)
    assert caplog.text.count("Missing/Invalid API Key") == 1 and "chain=ethereum" in caplog.text


def test_rows_outside_the_requested_window_are_refused(rsps, tmp_path, fake):
    rows = [tokentx_row(5, i) for i in range(100)]
    rsps.get(V2, body=json.dumps({"status": "1", "message": "OK", "result": rows}))
    with pytest.raises(UpstreamError, match="ends at block 5"):
        explorer(tmp_path, fake).fetch_blocks(10, 20)


def test_make_source_picks_the_client_and_reads_the_key_at_call_time(rsps, tmp_path):
    from transfer_daemon.upstream import make_source
    from transfer_daemon.upstream.rpc import RpcSource

    environ = {"TEST_ETHERSCAN_KEY": "first-key-0001"}
    source = make_source(make_chain(), limiter_dir=str(tmp_path), environ=environ)
    assert isinstance(source, ExplorerSource)
    rsps.get(V2, json=ERRORS["no_transactions_found__txlist_tokentx_empty"])
    source.fetch_blocks(1, 2)
    environ["TEST_ETHERSCAN_KEY"] = "rotated-key-0002"
    source.fetch_blocks(3, 4)
    assert [query(call.request)["apikey"] for call in rsps.calls] == ["first-key-0001", "rotated-key-0002"]
    rpc = make_source(make_chain(kind="rpc_logs", rpc_url="https://evm.cronos.org", api_key_env=""),
                      limiter_dir=str(tmp_path))
    assert isinstance(rpc, RpcSource) and rpc.http.limiter.path.parent == tmp_path
