"""JSON-RPC client (`rpc_logs`): windows, refusals split and grown back, head, block timestamps."""

from __future__ import annotations

import json

import pytest
import responses
from upstream_fixtures import API_KEY, CONTRACT_A, CONTRACT_B, FakeTime, make_chain, make_http, sample

from transfer_daemon.errors import InvalidApiKey, UpstreamError
from transfer_daemon.model import TRANSFER_TOPIC
from transfer_daemon.upstream.rpc import RpcSource

URL = "https://evm.cronos.org"
RPC = sample("jsonrpc-getlogs-errors.json")
ALSO = {e["provider"]: e for e in RPC["message_strings_without_full_envelope"]}


def _topic(byte: str) -> str:
    return "0x" + "0" * 24 + byte * 20


def block_hash(number: int) -> str:
    return f"0x{number + 7:064x}"


def transfer_log(block: int, index: int, contract: str = CONTRACT_A, **extra) -> dict:
    entry = {"address": contract, "topics": [TRANSFER_TOPIC, _topic("aa"), _topic("bb")],
             "data": f"0x{block * 100 + index:064x}", "blockNumber": hex(block), "blockHash": block_hash(block),
             "transactionHash": f"0x{block * 100 + index:064x}", "transactionIndex": "0x0",
             "logIndex": hex(index), "removed": False}
    entry.update(extra)
    return entry


class FakeNode:
    """eth_blockNumber / eth_getLogs / eth_getBlockByNumber over a fixed log list, batches too."""

    def __init__(self, logs: list[dict], head: int, refuse=None, null_headers: int = 0) -> None:
        self.logs, self.head, self.refuse = logs, head, refuse
        self.null_headers = null_headers  # headers of the newest N blocks answered null (a lagging node)
        self.requests: list[dict] = []

    def answer(self, call: dict) -> dict:
        self.requests.append(call)
        method, params = call["method"], call["params"]
        if method == "eth_blockNumber":
            return {"jsonrpc": "2.0", "id": call["id"], "result": hex(self.head)}
        if method == "eth_getBlockByNumber":
            number = int(params[0], 16)
            block = None if number > self.head - self.null_headers else {
                "number": params[0], "hash": block_hash(number), "timestamp": hex(1_600_000_000 + number)}
            return {"jsonrpc": "2.0", "id": call["id"], "result": block}
        lo, hi = int(params[0]["fromBlock"], 16), int(params[0]["toBlock"], 16)
        error = self.refuse(lo, hi) if self.refuse else None
        if error:
            return {"jsonrpc": "2.0", "id": call["id"], "error": error}
        found = [e for e in self.logs if lo <= int(e["blockNumber"], 16) <= hi and e["address"] in params[0]["address"]]
        return {"jsonrpc": "2.0", "id": call["id"], "result": found}

    def __call__(self, request):
        body = json.loads(request.body)
        answer = [self.answer(c) for c in body] if isinstance(body, list) else self.answer(body)
        return 200, {}, json.dumps(answer)

    def windows(self) -> list[tuple[int, int]]:
        return [(int(r["params"][0]["fromBlock"], 16), int(r["params"][0]["toBlock"], 16))
                for r in self.requests if r["method"] == "eth_getLogs"]


@pytest.fixture
def rsps():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def source(tmp_path, node=None, rsps=None, url=URL, **chain):
    settings = dict(id=25, name="cronos", kind="rpc_logs", rpc_url=url, base_url="", api_key_env="",
                    contracts=(CONTRACT_A, CONTRACT_B), log_window_blocks=2000)
    settings.update(chain)
    config = make_chain(**settings)
    if node is not None:
        rsps.add_callback(responses.POST, url if not config.api_key_env else f"{url}/{API_KEY}", callback=node)
    return RpcSource(config, make_http(config, tmp_path, FakeTime()))


def _cap(limit: int, error: dict):
    return lambda lo, hi: error if hi - lo + 1 > limit else None


def test_reads_every_contract_in_one_call_per_window(rsps, tmp_path):
    logs = [transfer_log(b, i, CONTRACT_A if i % 2 else CONTRACT_B) for b in range(10, 5000, 250) for i in range(2)]
    node = FakeNode(logs, head=6000)
    result = source(tmp_path, node, rsps).fetch_blocks(0, 5999)
    assert len(result.transfers) == len(logs) and result.covered_to == 5999
    assert node.windows() == [(0, 1999), (2000, 3999), (4000, 5999)]
    first = next(r for r in node.requests if r["method"] == "eth_getLogs")["params"][0]
    assert first["address"] == [CONTRACT_A, CONTRACT_B] and first["topics"] == [TRANSFER_TOPIC]
    t = result.transfers[0]
    assert (t.block_number, t.log_index, t.time_stamp, t.value) == (10, 0, 1_600_000_010, 1000)
    assert t.block_hash == bytes.fromhex(block_hash(10)[2:])


def test_cronos_refusal_uses_the_stated_limit_and_never_grows_past_it(rsps, tmp_path):
    cronos = RPC["cronos_evm_rpc__block_range_2000__captured_2026_09_08"]["error"]
    node = FakeNode([], head=10_000, refuse=_cap(2000, cronos))
    rpc = source(tmp_path, node, rsps, log_window_blocks=5000)
    assert rpc.fetch_blocks(0, 9999).covered_to == 9999
    assert node.windows() == [(0, 4999), (0, 1999), (2000, 3999), (4000, 5999), (6000, 7999), (8000, 9999)]
    assert rpc.window == rpc.ceiling == 2000


@pytest.mark.parametrize(("error", "limit"), [
    (RPC["tenderly__range_limit_2000"]["error"], 2000),
    (RPC["infura_mainnet__block_range_limit_live_2026"]["error"], 10_000),
    (RPC["quicknode__range_10000__http_413"]["error"], 10_000),
    ({"code": -32000, "message": ALSO["Avalanche C-chain public"]["message"]}, 2048),
])
def test_other_providers_stated_limits(rsps, tmp_path, error, limit):
    node = FakeNode([transfer_log(3000, 0)], head=100_000, refuse=_cap(limit, error))
    result = source(tmp_path, node, rsps, log_window_blocks=50_000).fetch_blocks(0, 49_999)
    assert result.covered_to == 49_999 and len(result.transfers) == 1
    widths = [hi - lo + 1 for lo, hi in node.windows()]
    assert widths[0] == 50_000 and widths[1] == limit and max(widths[1:]) <= limit


def test_a_stated_limit_that_does_not_hold_still_narrows_fast(rsps, tmp_path):
    says_10000 = RPC["infura_mainnet__block_range_limit_live_2026"]["error"]
    node = FakeNode([], head=10_000, refuse=_cap(1000, says_10000))
    assert source(tmp_path, node, rsps, log_window_blocks=8000).fetch_blocks(0, 7999).covered_to == 7999
    assert [hi - lo + 1 for lo, hi in node.windows()][:4] == [8000, 4000, 2000, 1000]


def test_suggested_range_is_used_then_the_window_grows_back_gradually(rsps, tmp_path):
    infura = ALSO["Infura (-32005, data {from,to,limit})"]
    dense = range(1000, 1100)

    def refuse(lo, hi):
        if hi - lo + 1 > 100 and any(lo <= b <= hi for b in dense):
            return {"code": infura["code"], "message": f"query returned more than 10000 results. Try with this "
                    f"block range [{hex(lo)}, {hex(lo + 99)}].", "data": {"from": hex(lo), "to": hex(lo + 99)}}
        return None

    node = FakeNode([transfer_log(b, 0) for b in dense], head=10_000, refuse=refuse)
    rpc = source(tmp_path, node, rsps, log_window_blocks=1000)
    result = rpc.fetch_blocks(1000, 3999)
    assert result.covered_to == 3999 and len(result.transfers) == 100
    widths = [hi - lo + 1 for lo, hi in node.windows()]
    assert widths[:3] == [1000, 100, 150]  # refused, the suggested 100, then half again each time
    assert widths[3:6] == [225, 337, 505] and rpc.window == 1000


def test_a_refusal_without_a_number_halves_the_window(rsps, tmp_path):
    node = FakeNode([], head=5000, refuse=_cap(300, {"code": -32600, "message": ALSO["Ankr"]["message"]}))
    source(tmp_path, node, rsps, log_window_blocks=1000).fetch_blocks(0, 999)
    assert [hi - lo + 1 for lo, hi in node.windows()][:3] == [1000, 500, 250]


def test_a_single_block_refused_gives_up(rsps, tmp_path):
    node = FakeNode([], head=5000, refuse=lambda lo, hi: RPC["infura_2019__too_many_results_1000"]["error"])
    with pytest.raises(UpstreamError, match="refused a single block 0"):
        source(tmp_path, node, rsps, log_window_blocks=8).fetch_blocks(0, 99)


def test_never_asks_beyond_the_head(rsps, tmp_path):
    node = FakeNode([transfer_log(50, 0)], head=120)
    result = source(tmp_path, node, rsps, log_window_blocks=100).fetch_blocks(0, 500)
    assert result.covered_to == 120 and node.windows() == [(0, 99), (100, 120)]
    assert source(tmp_path, FakeNode([], head=120), rsps).fetch_blocks(121, 200).covered_to == 120


def test_beyond_head_refusal_rereads_the_head_and_clips(rsps, tmp_path):
    lagging = {"code": -32000, "message": ALSO["Ethermint/Cronos node source (toBlock beyond head)"]["message"]}
    node = FakeNode([transfer_log(90, 0)], head=100, refuse=lambda lo, hi: lagging if hi > 95 else None)
    result = source(tmp_path, node, rsps).fetch_blocks(0, 100)
    assert result.covered_to == 95 and len(result.transfers) == 1


def test_timestamps_from_block_batches_cached_or_from_block_timestamp(rsps, tmp_path):
    logs = [transfer_log(b, 0) for b in range(1, 121)]
    node = FakeNode(logs, head=200)
    rpc = source(tmp_path, node, rsps)
    first = rpc.fetch_blocks(1, 120)
    batches = [r for r in node.requests if r["method"] == "eth_getBlockByNumber"]
    assert len(batches) == 120 and first.calls == 1 + 1 + 3  # head, getLogs, 3 batches of <= 50
    assert [t.time_stamp for t in first.transfers[:2]] == [1_600_000_001, 1_600_000_002]
    rpc.fetch_blocks(1, 120)
    assert len([r for r in node.requests if r["method"] == "eth_getBlockByNumber"]) == 120  # cached
    stamped = FakeNode([transfer_log(5, 0, blockTimestamp="0x64")], head=10)
    only = source(tmp_path / "b", stamped, rsps, url="https://other.example/rpc").fetch_blocks(0, 10)
    assert only.transfers[0].time_stamp == 100 and all(r["method"] != "eth_getBlockByNumber" for r in stamped.requests)


def test_a_null_header_ends_the_window_before_its_block_and_is_read_again(rsps, tmp_path):
    """A node may return a block's logs before its header: that block is not covered (nor
    quarantined for want of a timestamp) until a later read finds the header."""
    logs = [transfer_log(b, i) for b in (5, 8, 9, 12) for i in range(2)]
    node = FakeNode(logs, head=12, null_headers=4)
    rpc = source(tmp_path, node, rsps, log_window_blocks=4)
    result = rpc.fetch_blocks(0, 12)
    assert result.covered_to == 8 and result.quarantined == []
    assert [(t.block_number, t.log_index) for t in result.transfers] == [(5, 0), (5, 1), (8, 0), (8, 1)]
    assert node.windows() == [(0, 3), (4, 7), (8, 11)], "no window past the block without a header"
    node.null_headers = 0
    rest = rpc.fetch_blocks(9, 12)
    assert rest.covered_to == 12 and [t.block_number for t in rest.transfers] == [9, 9, 12, 12]


def test_a_block_hash_that_changes_mid_read_is_a_reorg(rsps, tmp_path):
    node = FakeNode([transfer_log(5, 0, blockHash="0x" + "ee" * 32)], head=10)
    with pytest.raises(UpstreamError, match="reorg in progress"):
        source(tmp_path, node, rsps).fetch_blocks(0, 10)


def test_removed_erc721_and_other_events_are_dropped(rsps, tmp_path):
    logs = [transfer_log(5, 0, removed=True), transfer_log(5, 1),
            transfer_log(5, 2, topics=[TRANSFER_TOPIC, _topic("aa"), _topic("bb"), "0x" + "00" * 31 + "01"], data="0x"),
            transfer_log(5, 3, topics=["0x" + "12" * 32])]
    result = source(tmp_path, FakeNode(logs, head=10), rsps).fetch_blocks(0, 10)
    assert [t.log_index for t in result.transfers] == [1]
    assert result.skipped_reasons == {"removed": 1, "erc721": 1, "other_event": 1} and result.skipped == 3


def test_max_calls_stops_at_a_window_boundary(rsps, tmp_path):
    node = FakeNode([transfer_log(b, 0, blockTimestamp="0x1") for b in range(0, 1000, 10)], head=1000)
    rpc = source(tmp_path, node, rsps, log_window_blocks=100)
    result = rpc.fetch_blocks(0, 999, max_calls=2)
    assert result.covered_to == 199 and len(result.transfers) == 20 and result.calls == 3  # + the head


def test_block_hashes_are_fresh_and_skip_unknown_blocks(rsps, tmp_path):
    node = FakeNode([], head=10)
    rpc = source(tmp_path, node, rsps)
    assert rpc.block_hashes([9, 10, 11]) == {9: bytes.fromhex(block_hash(9)[2:]), 10: bytes.fromhex(block_hash(10)[2:])}
    rpc.block_hashes([9])
    assert len([r for r in node.requests if r["method"] == "eth_getBlockByNumber"]) == 4


def test_key_goes_in_the_path_and_never_in_messages(rsps, tmp_path):
    rsps.post(f"{URL}/{API_KEY}", status=401, body="unauthorized")
    rpc = source(tmp_path, url=URL, api_key_env="CRONOS_KEY")
    with pytest.raises(InvalidApiKey) as caught:
        rpc.head_block()
    assert API_KEY not in str(caught.value) and "***" in str(caught.value)


def test_rate_limit_errors_are_retried(rsps, tmp_path):
    rsps.post(URL, status=429, json={"jsonrpc": "2.0", "id": 1, "error": {"code": 429, "message": "Too Many Requests"}},
              headers={"Retry-After": "2"})
    rsps.post(URL, json={"jsonrpc": "2.0", "id": 2, "result": "0x10"})
    rpc = source(tmp_path)
    assert rpc.head_block() == 16
    assert rpc.stats.requests == {"rate_limited": 1, "ok": 1} and rpc.stats.retries == 1


def test_an_unclassified_error_is_not_retried(rsps, tmp_path):
    rsps.post(URL, json={"jsonrpc": "2.0", "id": 1, "error": {"code": -32601, "message": "method not found"}})
    with pytest.raises(UpstreamError, match="method not found") as caught:
        source(tmp_path).head_block()
    assert caught.value.retryable is False
