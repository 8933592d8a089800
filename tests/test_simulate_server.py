"""Simulator run-time behaviour: injected faults, outage switch, reorgs, stats, concurrent clients."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from transfer_daemon.simulate import FAULT_TYPES


def _control(url: str, **changes) -> dict:
    response = requests.post(url + "/_sim/control", json=changes, timeout=5)
    assert response.status_code == 200, response.text
    return response.json()


def _stats(url: str) -> dict:
    return requests.get(url + "/_sim/stats", timeout=5).json()


def _explorer(url: str) -> requests.Response:
    return requests.get(url + "/v2/api", params={"chainid": 1, "module": "proxy", "action": "eth_blockNumber",
                                                 "apikey": "k"}, timeout=10)


def _rpc(url: str) -> requests.Response:
    return requests.post(url + "/rpc/25", json={"jsonrpc": "2.0", "id": 4, "method": "eth_blockNumber"}, timeout=10)


def test_each_fault_type_looks_like_the_real_failure(start_sim: Callable[..., str]) -> None:
    url = start_sim(fault_rate=1.0, fault_timeout_s=0.3)
    seen = {}
    for fault in FAULT_TYPES:
        _control(url, fault_types=[fault])
        began = time.monotonic()
        seen[fault] = (_explorer(url), time.monotonic() - began)
    assert seen["http_429"][0].status_code == 429 and seen["http_429"][0].headers["Retry-After"] == "1"
    assert seen["http_5xx"][0].status_code in (500, 502, 503, 504)
    response, elapsed = seen["timeout"]
    assert elapsed >= 0.3 and response.status_code == 200 and response.json()["jsonrpc"] == "2.0"
    with pytest.raises(ValueError):
        json.loads(seen["malformed"][0].content)
    assert seen["html"][0].status_code == 200 and seen["html"][0].headers["Content-Type"].startswith("text/html")
    assert seen["rate_limit_200"][0].json() == {"status": "0", "message": "NOTOK",
                                                 "result": "Max rate limit reached"}
    faults = _stats(url)["faults"]
    assert faults == {fault: 1 for fault in FAULT_TYPES}


def test_fault_rate_injects_about_that_share_and_counts_them(start_sim: Callable[..., str]) -> None:
    url = start_sim(fault_rate=0.3, fault_types=("http_5xx", "http_429"))
    statuses = [_rpc(url).status_code for _ in range(100)]
    failed = sum(status != 200 for status in statuses)
    assert 10 <= failed <= 50
    stats = _stats(url)
    assert stats["faultsTotal"] == failed and stats["requests"]["/rpc/25"] == 100
    _control(url, fault_rate=0)
    assert all(_rpc(url).status_code == 200 for _ in range(10))


def test_outage_fails_every_upstream_route_until_switched_off(start_sim: Callable[..., str]) -> None:
    url = start_sim()
    assert _control(url, outage=True)["outage"] == "503"
    assert _explorer(url).status_code == 503 and _rpc(url).status_code == 503
    assert requests.get(url + "/_sim/chains", timeout=5).status_code == 200
    _control(url, outage="timeout")
    with pytest.raises(requests.Timeout):
        requests.post(url + "/rpc/25", json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"}, timeout=0.5)
    _control(url, outage=False)
    assert _explorer(url).status_code == 200 and _rpc(url).status_code == 200
    assert _stats(url)["faults"]["outage"] == 3


def test_control_refuses_bad_values(start_sim: Callable[..., str]) -> None:
    url = start_sim()
    for body in ({"fault_rate": 2}, {"fault_types": ["meteor"]}, {"outage": "maybe"}, {"nope": 1},
                 {"advance_blocks": -1}, {"rate_limit": "fast"}):
        response = requests.post(url + "/_sim/control", json=body, timeout=5)
        assert response.status_code == 400, body
    assert _control(url)["fault_rate"] == 0


def test_reorg_rewrites_the_last_blocks_and_the_truth(start_sim: Callable[..., str]) -> None:
    url = start_sim(reorg_every=5, reorg_depth=3, transfers_per_block=4)
    head = _stats(url)["heads"]["25"]

    def hashes() -> dict[int, str]:
        batch = [{"jsonrpc": "2.0", "id": n, "method": "eth_getBlockByNumber", "params": [hex(n), False]}
                 for n in range(head - 2, head + 6)]
        answers = requests.post(url + "/rpc/25", json=batch, timeout=5).json()
        return {a["id"]: a["result"]["hash"] for a in answers if a["result"]}

    def truth() -> list[tuple]:
        rows = requests.get(url + "/_sim/transfers", params={"chainId": 25, "fromBlock": head - 2}, timeout=5).json()
        return [(row["blockNumber"], row["hash"], row["blockHash"]) for row in rows]

    before, truth_before = hashes(), truth()
    _control(url, advance_blocks=4)
    assert _stats(url)["reorgsTotal"] == 0
    middle = hashes()
    assert all(middle[n] == before[n] for n in before)
    _control(url, advance_blocks=1)
    stats = _stats(url)
    assert stats["heads"]["25"] == head + 5 and stats["reorgs"]["25"] == 1
    after = hashes()
    assert {n for n in middle if middle[n] != after[n]} == {head + 3, head + 4}
    assert head + 5 in after and head + 5 not in middle
    assert {row[0] for row in truth()} - {row[0] for row in truth_before} and truth()[:1] == truth_before[:1]
    changed = [row for row in truth() if row[0] >= head + 3]
    assert changed and all(row[2] == after[row[0]] for row in changed)


def test_truth_stops_at_the_head(start_sim: Callable[..., str]) -> None:
    url = start_sim()
    head = _stats(url)["heads"]["1"]
    rows = requests.get(url + "/_sim/transfers", params={"chainId": 1, "fromBlock": head - 20,
                                                         "toBlock": head + 100}, timeout=5).json()
    assert rows and max(row["blockNumber"] for row in rows) <= head
    assert requests.get(url + "/_sim/transfers", params={"chainId": 99}, timeout=5).status_code == 400


def test_concurrent_clients_are_served_in_parallel(start_sim: Callable[..., str]) -> None:
    url = start_sim(fault_rate=0.0, fault_timeout_s=0.5)
    _control(url, fault_rate=1.0, fault_types=["timeout"])
    began = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: _explorer(url).status_code, range(8)))
    assert statuses == [200] * 8
    assert time.monotonic() - began < 2.0, "eight 0.5 s stalls must overlap"
