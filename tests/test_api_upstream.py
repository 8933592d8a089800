"""data_source = upstream: page 1 from the explorer (the simulator), cached; the store when it fails."""

from __future__ import annotations

import pytest
import requests

from tests.api_support import make_config, migrated, transfer, write
from transfer_daemon.api import create_app
from transfer_daemon.config import parse_config
from transfer_daemon.simulate import SimConfig, parse_chains, start_in_thread


@pytest.fixture
def sim():
    url, stop = start_in_thread(SimConfig(chains=parse_chains("1:etherscan"), history_days=1, rate_limit=0))
    yield url
    stop()


def upstream_config(tmp_path, base_url: str, contracts: list[str]):
    config = make_config(tmp_path, chain_sources={1: "upstream"})
    document = {
        "daemon": {"data_dir": str(tmp_path), "log_file": ""},
        "chains": [
            {"id": 1, "name": "ethereum", "kind": "etherscan", "base_url": base_url, "contracts": contracts,
             "data_source": "upstream", "rate_limit_per_sec": 50},
            {"id": 25, "name": "cronos", "kind": "rpc_logs", "rpc_url": "http://127.0.0.1:9/rpc",
             "contracts": list(config.chains[1].contracts)},
        ],
    }
    return parse_config(document, {})


@pytest.fixture
def store_url(make_database):
    url = migrated(make_database())
    write(url, 1, [transfer(1, n) for n in range(5)])
    return url


def sim_requests(sim: str) -> int:
    return sum(requests.get(sim + "/_sim/stats", timeout=5).json()["requests"].values())


def test_page_one_comes_from_the_explorer_and_is_cached(sim, store_url, tmp_path):
    chain = next(c for c in requests.get(sim + "/_sim/chains", timeout=5).json()["chains"] if c["id"] == 1)
    app = create_app(upstream_config(tmp_path, sim + "/api", chain["contracts"]), store_url)
    client = app.test_client()
    body = client.get("/api/transfers?chainId=1&pageSize=10").get_json()
    assert body["source"] == "upstream" and body["stale"] is False and len(body["items"]) == 10
    truth = requests.get(sim + "/_sim/transfers", params={"chainId": 1}, timeout=10).json()
    newest = sorted(truth, key=lambda t: (t["timeStamp"], t["blockNumber"], t["logIndex"]), reverse=True)
    top = {(t["hash"], t["blockNumber"]) for t in newest[:30]}
    assert {(i["hash"], i["blockNumber"]) for i in body["items"]} <= top
    calls = sim_requests(sim)
    again = client.get("/api/transfers?chainId=1&pageSize=10").get_json()
    assert again["items"] == body["items"] and sim_requests(sim) == calls
    deeper = client.get("/api/transfers?chainId=1&page=2&pageSize=2").get_json()
    assert deeper["source"] == "store" and [i["blockNumber"] for i in deeper["items"]] == [102, 101]
    app.extensions["transfer_daemon"].close()


def test_a_failing_explorer_falls_back_to_the_store_marked_stale(store_url, tmp_path):
    app = create_app(upstream_config(tmp_path, "http://127.0.0.1:9/api", ["0x" + "aa" * 20]), store_url)
    body = app.test_client().get("/api/transfers?chainId=1&pageSize=3").get_json()
    assert body["source"] == "store" and body["stale"] is True
    assert isinstance(body["ingestLagSeconds"], int) and body["lastIngestedAt"]
    assert [i["blockNumber"] for i in body["items"]] == [104, 103, 102]
    app.extensions["transfer_daemon"].close()
