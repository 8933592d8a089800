"""The Etherscan-compatible routes, over HTTP, against the exact answer shapes of the real service."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

import pytest
import requests

from transfer_daemon.model import TRANSFER_TOPIC
from transfer_daemon.simulate.stats import redact_key

TOKENTX_FIELDS = [
    "blockNumber", "timeStamp", "hash", "nonce", "blockHash", "from", "contractAddress", "to", "value",
    "tokenName", "tokenSymbol", "tokenDecimal", "transactionIndex", "gas", "gasPrice", "gasUsed",
    "cumulativeGasUsed", "input", "methodId", "functionName", "confirmations",
]
GETLOGS_FIELDS = ["address", "topics", "data", "blockNumber", "blockHash", "timeStamp", "gasPrice", "gasUsed",
                  "logIndex", "transactionHash", "transactionIndex"]


@pytest.fixture
def start_sim(start_sim: Callable[..., str]) -> Callable[..., str]:
    """The shared simulator factory with busier blocks, so pages fill up."""
    return functools.partial(start_sim, transfers_per_block=3.0)


@pytest.fixture
def sim(start_sim: Callable[..., str]) -> str:
    return start_sim()


def _chain(url: str, chain_id: int) -> dict:
    return next(c for c in requests.get(url + "/_sim/chains", timeout=5).json()["chains"] if c["id"] == chain_id)


def _tokentx(url: str, **params) -> dict:
    query = {"chainid": 1, "module": "account", "action": "tokentx", "apikey": "key", **params}
    response = requests.get(url + "/v2/api", params=query, timeout=10)
    assert response.status_code == 200
    return response.json()


def test_tokentx_rows_have_the_etherscan_shape_all_strings_and_no_log_index(sim: str) -> None:
    chain = _chain(sim, 1)
    body = _tokentx(sim, contractaddress=chain["contracts"][0], startblock=chain["head"] - 200, endblock=99999999)
    assert body["status"] == "1" and body["message"] == "OK"
    row = body["result"][0]
    assert list(row) == TOKENTX_FIELDS
    assert all(isinstance(value, str) for value in row.values())
    assert row["input"] == "deprecated" and row["confirmations"] == str(chain["head"] - int(row["blockNumber"]) + 1)


def test_tokentx_pages_partition_the_rows_and_desc_is_the_reverse(sim: str) -> None:
    chain = _chain(sim, 1)
    window = {"contractaddress": chain["contracts"][0], "startblock": chain["head"] - 300,
              "endblock": chain["head"] - 100}
    whole = _tokentx(sim, page=1, offset=300, **window)["result"]
    pages = [_tokentx(sim, page=page, offset=100, **window)["result"] for page in (1, 2, 3)]
    assert len(whole) == 300 and pages[0] + pages[1] + pages[2] == whole
    every = _tokentx(sim, **window)["result"]
    descending = _tokentx(sim, sort="desc", **window)["result"]
    assert descending == every[::-1]
    blocks = [int(row["blockNumber"]) for row in every]
    assert blocks == sorted(blocks) and blocks[0] >= window["startblock"] and blocks[-1] <= window["endblock"]


def test_tokentx_rows_are_the_truth_with_the_derived_ordinal(sim: str) -> None:
    chain = _chain(sim, 1)
    first, last = chain["head"] - 150, chain["head"]
    rows = _tokentx(sim, contractaddress=chain["contracts"][0], startblock=first, endblock=last)["result"]
    truth = requests.get(sim + "/_sim/transfers", params={"chainId": 1, "fromBlock": first, "toBlock": last},
                         timeout=10).json()
    seen: dict[tuple[str, str], int] = {}
    derived = []
    for row in rows:
        ordinal = seen.get((row["blockNumber"], row["contractAddress"]), 0)
        seen[(row["blockNumber"], row["contractAddress"])] = ordinal + 1
        derived.append((int(row["blockNumber"]), row["hash"], ordinal, row["from"], row["to"], row["value"],
                        row["contractAddress"], row["blockHash"]))
    expected = [(t["blockNumber"], t["hash"], t["logIndex"], t["from"], t["to"], t["value"], t["contractAddress"],
                 t["blockHash"]) for t in truth if t["contractAddress"] == chain["contracts"][0]]
    assert derived == expected and len(derived) > 100


def test_address_filter_matches_either_side(sim: str) -> None:
    chain = _chain(sim, 1)
    some = _tokentx(sim, contractaddress=chain["contracts"][0], startblock=chain["head"] - 50)["result"][0]
    rows = _tokentx(sim, address=some["to"], startblock=chain["head"] - 2000)["result"]
    assert rows and all(some["to"] in (row["from"], row["to"]) for row in rows)


def test_result_window_and_empty_answers_are_verbatim(sim: str) -> None:
    chain = _chain(sim, 1)
    contract = chain["contracts"][0]
    assert _tokentx(sim, contractaddress=contract, page=11, offset=1000) == {
        "status": "0",
        "message": "Result window is too large, PageNo x Offset size must be less than or equal to 10000",
        "result": None,
    }
    assert _tokentx(sim, contractaddress=contract, page=2, offset=5000)["status"] == "1"
    empty = {"status": "0", "message": "No transactions found", "result": []}
    assert _tokentx(sim, contractaddress=contract, startblock=chain["head"] + 1) == empty
    assert _tokentx(sim, contractaddress="0x" + "12" * 20) == empty


def test_rate_limit_is_answered_like_etherscan_per_key(start_sim: Callable[..., str]) -> None:
    url = start_sim(rate_limit=3)
    contract = _chain(url, 1)["contracts"][0]
    answers = [_tokentx(url, contractaddress=contract, offset=1, apikey="A") for _ in range(6)]
    limited = {"status": "0", "message": "NOTOK", "result": "Max calls per sec rate limit reached (3/sec)"}
    assert limited in answers and answers[:3] == [answers[0]] * 3 and answers[0]["status"] == "1"
    assert _tokentx(url, contractaddress=contract, offset=1, apikey="B")["status"] == "1"
    stats = requests.get(url + "/_sim/stats", timeout=5).json()
    key_a, key_b = redact_key("A"), redact_key("B")
    assert stats["rateLimited"][key_a] == answers.count(limited) and key_b not in stats["rateLimited"]
    assert stats["requests"][key_a] == 6 and "A" not in stats["requests"]
    time.sleep(1.05)  # the window is one second of real time
    assert _tokentx(url, contractaddress=contract, offset=1, apikey="A")["status"] == "1"


def test_chain_selection(sim: str) -> None:
    contract_25 = _chain(sim, 25)["contracts"][0]
    missing = requests.get(sim + "/v2/api", params={"module": "account", "action": "tokentx",
                                                    "contractaddress": contract_25}, timeout=5).json()
    assert missing["status"] == "0" and missing["result"].startswith("Missing or unsupported chainid")
    assert _tokentx(sim, chainid=25, contractaddress=contract_25)["status"] == "1"
    v1 = requests.get(sim + "/api", params={"module": "account", "action": "tokentx",
                                            "contractaddress": _chain(sim, 1)["contracts"][0]}, timeout=5).json()
    assert v1["status"] == "1"


def test_get_logs_rows_quirks_and_lookalikes(sim: str) -> None:
    chain = _chain(sim, 25)
    query = {"chainid": 25, "module": "logs", "action": "getLogs", "address": chain["contracts"][0],
             "fromBlock": chain["head"] - 2000, "toBlock": "latest", "offset": 1000}
    body = requests.get(sim + "/v2/api", params=query, timeout=10).json()
    rows = body["result"]
    assert body["status"] == "1" and len(rows) == 1000 and list(rows[0]) == GETLOGS_FIELDS
    assert any(row["logIndex"] == "0x" for row in rows), "Etherscan writes log index 0 as a bare 0x"
    assert all(row["logIndex"] != "0x0" and row["transactionIndex"] != "0x0" for row in rows)
    assert any(len(row["topics"]) == 4 for row in rows), "ERC-721 look-alikes"
    assert any(not row["topics"][0].startswith("0xddf252ad") for row in rows), "unrelated events"
    transfers_only = requests.get(sim + "/v2/api", params={**query, "topic0": TRANSFER_TOPIC}, timeout=10).json()
    assert {row["topics"][0] for row in transfers_only["result"]} == {TRANSFER_TOPIC}
    assert requests.get(sim + "/v2/api", params={**query, "page": 11}, timeout=5).json()["result"] is None
    none = requests.get(sim + "/v2/api", params={**query, "fromBlock": chain["head"] + 1}, timeout=5).json()
    assert none == {"status": "0", "message": "No records found", "result": []}


def test_proxy_module_answers_json_rpc_shapes(sim: str) -> None:
    chain = _chain(sim, 1)
    base = {"chainid": 1, "module": "proxy"}
    number = requests.get(sim + "/v2/api", params={**base, "action": "eth_blockNumber"}, timeout=5).json()
    assert number["jsonrpc"] == "2.0" and int(number["result"], 16) == chain["head"]
    block = requests.get(sim + "/v2/api", params={**base, "action": "eth_getBlockByNumber",
                                                   "tag": hex(chain["head"] - 1), "boolean": "false"},
                         timeout=5).json()["result"]
    assert int(block["number"], 16) == chain["head"] - 1 and all(isinstance(tx, str) for tx in block["transactions"])
    truth = requests.get(sim + "/_sim/transfers", params={"chainId": 1, "fromBlock": chain["head"] - 1,
                                                          "toBlock": chain["head"] - 1}, timeout=5).json()
    assert {t["blockHash"] for t in truth} <= {block["hash"]}
    beyond = requests.get(sim + "/v2/api", params={**base, "action": "eth_getBlockByNumber",
                                                    "tag": hex(chain["head"] + 5), "boolean": "false"}, timeout=5)
    assert beyond.json()["result"] is None


def test_two_instances_agree(start_sim: Callable[..., str]) -> None:
    one, two = start_sim(), start_sim()
    contract = _chain(one, 1)["contracts"][0]
    head = _chain(one, 1)["head"]
    assert _chain(two, 1)["head"] == head
    assert _tokentx(one, contractaddress=contract, startblock=head - 100) == \
        _tokentx(two, contractaddress=contract, startblock=head - 100)
    params = {"chainId": 25, "fromBlock": _chain(one, 25)["head"] - 100}
    assert requests.get(one + "/_sim/transfers", params=params, timeout=5).json() == \
        requests.get(two + "/_sim/transfers", params=params, timeout=5).json()
