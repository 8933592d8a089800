"""The JSON-RPC route: Cronos' range cap, batches, blockTimestamp per chain, 429, and a real client (web3.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import requests

from transfer_daemon.model import TRANSFER_TOPIC


@pytest.fixture
def sim(start_sim: Callable[..., str]) -> str:
    return start_sim()


def _call(url: str, chain_id: int, method: str, params: list | None = None, request_id: int = 1):
    body = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or []}
    response = requests.post(f"{url}/rpc/{chain_id}", json=body, timeout=10)
    assert response.status_code == 200
    return response.json()


def _head(url: str, chain_id: int) -> int:
    return int(_call(url, chain_id, "eth_blockNumber")["result"], 16)


def test_range_cap_is_answered_exactly_as_cronos(sim: str) -> None:
    head = _head(sim, 25)
    wide = _call(sim, 25, "eth_getLogs", [{"fromBlock": hex(head - 2001), "toBlock": hex(head)}])
    assert wide == {"jsonrpc": "2.0", "id": 1,
                    "error": {"code": -32000, "message": "maximum [from, to] blocks distance: 2000", "data": None}}
    latest = _call(sim, 25, "eth_getLogs", [{"fromBlock": hex(head - 2001), "toBlock": "latest"}])
    assert latest["error"]["message"] == "maximum [from, to] blocks distance: 2000"
    assert isinstance(_call(sim, 25, "eth_getLogs", [{"fromBlock": hex(head - 2000), "toBlock": hex(head)}])["result"],
                      list)


def test_range_cap_is_a_knob(start_sim: Callable[..., str]) -> None:
    url = start_sim(rpc_range_cap=100)
    head = _head(url, 25)
    answer = _call(url, 25, "eth_getLogs", [{"fromBlock": hex(head - 101), "toBlock": hex(head)}])
    assert answer["error"]["message"] == "maximum [from, to] blocks distance: 100"


def test_batch_answers_each_call_in_order(sim: str) -> None:
    batch = [
        {"jsonrpc": "2.0", "id": 7, "method": "eth_chainId", "params": []},
        {"jsonrpc": "2.0", "id": 8, "method": "eth_blockNumber", "params": []},
        {"jsonrpc": "2.0", "id": 9, "method": "eth_getBlockByNumber", "params": ["latest", False]},
        {"jsonrpc": "2.0", "id": 10, "method": "eth_nope", "params": []},
    ]
    answers = requests.post(sim + "/rpc/25", json=batch, timeout=10).json()
    assert [a["id"] for a in answers] == [7, 8, 9, 10]
    assert answers[0]["result"] == "0x19"
    assert answers[2]["result"]["number"] == answers[1]["result"]
    assert answers[3]["error"]["code"] == -32601
    assert requests.post(sim + "/rpc/25", data=b"{not json", timeout=5).json()["error"]["code"] == -32700


def test_logs_carry_block_timestamp_only_where_the_chain_does(sim: str) -> None:
    for chain_id, expected in ((1, True), (25, False)):
        head = _head(sim, chain_id)
        logs = _call(sim, chain_id, "eth_getLogs", [{"fromBlock": hex(head - 50), "toBlock": "latest"}])["result"]
        assert logs and all(("blockTimestamp" in log) is expected for log in logs)
        block = _call(sim, chain_id, "eth_getBlockByNumber", [logs[0]["blockNumber"], False])["result"]
        assert block["hash"] == logs[0]["blockHash"]
        if expected:
            assert logs[0]["blockTimestamp"] == block["timestamp"]


def test_log_filters_and_truth_agree(sim: str) -> None:
    head = _head(sim, 25)
    chain = next(c for c in requests.get(sim + "/_sim/chains", timeout=5).json()["chains"] if c["id"] == 25)
    params = [{"fromBlock": hex(head - 300), "toBlock": hex(head), "address": chain["contracts"],
               "topics": [TRANSFER_TOPIC]}]
    logs = _call(sim, 25, "eth_getLogs", params)["result"]
    erc20 = [log for log in logs if len(log["topics"]) == 3]
    assert len(erc20) < len(logs), "ERC-721 look-alikes share topic0"
    truth = requests.get(sim + "/_sim/transfers", params={"chainId": 25, "fromBlock": head - 300}, timeout=5).json()
    assert [(t["hash"], t["logIndex"], t["value"]) for t in truth] == [
        (log["transactionHash"], int(log["logIndex"], 16), str(int(log["data"], 16))) for log in erc20]
    one = _call(sim, 25, "eth_getLogs", [{**params[0], "address": chain["contracts"][0]}])["result"]
    assert one and {log["address"] for log in one} == {chain["contracts"][0]}


def test_rpc_rate_limit_is_http_429_per_url(start_sim: Callable[..., str]) -> None:
    url = start_sim(rate_limit=2)
    body = {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []}
    statuses = [requests.post(url + "/rpc/25", json=body, timeout=5).status_code for _ in range(5)]
    assert statuses[:2] == [200, 200] and 429 in statuses
    assert requests.post(url + "/rpc/1", json=body, timeout=5).status_code == 200
    assert requests.get(url + "/_sim/stats", timeout=5).json()["rateLimited"]["/rpc/25"] == statuses.count(429)


def test_web3_reads_block_number_logs_and_a_block(sim: str) -> None:
    web3 = pytest.importorskip("web3")
    w3 = web3.Web3(web3.HTTPProvider(sim + "/rpc/1", request_kwargs={"timeout": 10}))
    head = w3.eth.block_number
    assert head == _head(sim, 1) and w3.eth.chain_id == 1
    logs = w3.eth.get_logs({"fromBlock": head - 100, "toBlock": head})
    raw = _call(sim, 1, "eth_getLogs", [{"fromBlock": hex(head - 100), "toBlock": hex(head)}])["result"]
    assert len(logs) == len(raw) > 0
    assert logs[0]["transactionHash"].to_0x_hex() == raw[0]["transactionHash"]
    block = w3.eth.get_block(head - 1, full_transactions=True)
    raw_block = _call(sim, 1, "eth_getBlockByNumber", [hex(head - 1), True])["result"]
    assert block["number"] == head - 1 and block["hash"].to_0x_hex() == raw_block["hash"]
    assert len(block["transactions"]) == len(raw_block["transactions"])
    assert block["parentHash"] == w3.eth.get_block(head - 2)["hash"]
