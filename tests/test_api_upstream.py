"""data_source = upstream: every page and filter tokentx can answer comes from the explorer (the
simulator over loopback) with a working nextCursor; the rest, and whatever it cannot answer now,
from the store with the chain's real freshness."""

from __future__ import annotations

import calendar
import threading
import time

import pytest
import requests

from tests.api_support import make_config, migrated, transfer, write
from transfer_daemon.api import create_app
from transfer_daemon.api.upstream_pages import DONE, OPEN, Chunk, Walk, decode_resume
from transfer_daemon.config import parse_config
from transfer_daemon.model import Transfer, address_to_bytes, hash_to_bytes


def upstream_config(tmp_path, base_url: str, contracts: list[str], **chain):
    config = make_config(tmp_path, chain_sources={1: "upstream"})
    document = {
        "daemon": {"data_dir": str(tmp_path), "log_file": ""},
        "chains": [
            {"id": 1, "name": "ethereum", "kind": "etherscan", "base_url": base_url, "contracts": contracts,
             "data_source": "upstream", "rate_limit_per_sec": 1000, "rate_limit_burst": 100, **chain},
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


@pytest.fixture
def sim(start_sim):
    """Chain 1 with two tokens and busy blocks (seed 2), frozen head: ~24 blocks a day of history."""
    url = start_sim(seed=2, history_days=2, transfers_per_block=5.0)
    chain = next(c for c in requests.get(url + "/_sim/chains", timeout=5).json()["chains"] if c["id"] == 1)
    assert len(chain["contracts"]) == 2
    return url, chain["contracts"]


@pytest.fixture
def make_app(tmp_path, store_url):
    apps = []

    def make(sim_url: str, contracts: list[str], **chain):
        app = create_app(upstream_config(tmp_path, sim_url + "/api", contracts, **chain), store_url)
        apps.append(app)
        return app.test_client()

    yield make
    for app in apps:
        app.extensions["transfer_daemon"].close()


def explorer_calls(sim_url: str) -> int:
    return requests.get(sim_url + "/_sim/stats", timeout=5).json()["routes"].get("explorer", 0)


def truth(sim_url: str, contracts: list[str], descending: bool = True) -> list[dict]:
    rows = requests.get(sim_url + "/_sim/transfers", params={"chainId": 1}, timeout=10).json()
    order = {address: place for place, address in enumerate(contracts)}
    rows.sort(key=lambda t: (t["timeStamp"], t["blockNumber"], t["logIndex"], order[t["contractAddress"]]),
              reverse=descending)
    return rows


def walk(client, query: str, cursor: str | None = None) -> list[dict]:
    """Every page by nextCursor (from `cursor` on); each must come from the explorer."""
    items = []
    for _ in range(1000):
        body = client.get(f"/api/transfers?{query}" + (f"&cursor={cursor}" if cursor else "")).get_json()
        assert body["source"] == "upstream", body
        items += body["items"]
        cursor = body["nextCursor"]
        if cursor is None:
            return items
    raise AssertionError("the walk never ended")


def keys(items: list[dict]) -> list[tuple]:
    return [(i["hash"], i["logIndex"], i["contractAddress"]) for i in items]


@pytest.mark.parametrize("sort", ["desc", "asc"])
def test_walking_every_page_by_cursor_returns_the_explorers_transfers_in_order(sim, make_app, sort):
    sim_url, contracts = sim
    # 6 rows a call: pages end inside blocks, and some blocks fill a whole call by themselves
    client = make_app(sim_url, contracts, page_size=6)
    items = walk(client, f"chainId=1&pageSize=7&sort={sort}")
    expected = truth(sim_url, contracts, descending=sort == "desc")
    assert len(expected) > 100
    assert len(set(keys(items))) == len(items), "a transfer was served twice"
    assert keys(items) == keys(expected)
    assert items == expected


def test_filters_the_explorer_answers_come_from_it(sim, make_app):
    sim_url, contracts = sim
    client = make_app(sim_url, contracts, page_size=50)
    everything = truth(sim_url, contracts)
    lo, hi = everything[-1]["blockNumber"] + 5, everything[0]["blockNumber"] - 5
    cases = {
        f"contract={contracts[1]}": lambda t: t["contractAddress"] == contracts[1],
        f"fromBlock={lo}&toBlock={hi}": lambda t: lo <= t["blockNumber"] <= hi,
        f"contract={contracts[0]}&toBlock={hi}": lambda t: t["contractAddress"] == contracts[0]
        and t["blockNumber"] <= hi,
        f"contract={contracts[1]}&fromBlock={lo}": lambda t: t["contractAddress"] == contracts[1]
        and t["blockNumber"] >= lo,
    }
    for query, wanted in cases.items():
        expected = [t for t in everything if wanted(t)]
        assert expected, query
        assert walk(client, f"chainId=1&pageSize=9&{query}") == expected, query
        assert walk(client, f"chainId=1&pageSize=9&sort=asc&{query}") == expected[::-1], query


def test_numbered_pages_are_slices_of_the_same_walk(sim, make_app):
    sim_url, contracts = sim
    client = make_app(sim_url, contracts, page_size=6)
    expected = truth(sim_url, contracts)
    for page, size in ((1, 10), (3, 10), (7, 4), (1, 100)):
        body = client.get(f"/api/transfers?chainId=1&page={page}&pageSize={size}").get_json()
        assert body["source"] == "upstream" and body["page"] == page
        assert body["items"] == expected[(page - 1) * size: page * size]
        rest = walk(client, f"chainId=1&pageSize={size}", body["nextCursor"])
        assert rest == expected[page * size:]


def test_page_sizes_never_cost_a_call_of_their_own(start_sim, make_app):
    sim_url = start_sim(seed=2, history_days=10)
    contracts = next(c for c in requests.get(sim_url + "/_sim/chains", timeout=5).json()["chains"]
                     if c["id"] == 1)["contracts"]
    client = make_app(sim_url, contracts[:1])  # one contract: one call per chunk
    started = time.monotonic()
    sizes = [1 + (n * 37) % 100 for n in range(50)]
    bodies = [client.get(f"/api/transfers?chainId=1&pageSize={sizes[n % 50]}").get_json() for n in range(150)]
    answers: list[dict] = []
    threads = [threading.Thread(target=lambda s=s: answers.append(
        client.get(f"/api/transfers?chainId=1&pageSize={s}").get_json())) for s in sizes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert time.monotonic() - started < 15.0, "the test outlived the cache TTL: the count below means nothing"
    assert all(b["source"] == "upstream" for b in bodies + answers)
    assert explorer_calls(sim_url) <= 2, explorer_calls(sim_url)
    assert {len(b["items"]) for b in bodies} == set(sizes)


def test_what_the_explorer_cannot_answer_comes_from_the_store_with_its_freshness(sim, make_app):
    sim_url, contracts = sim
    client = make_app(sim_url, contracts)
    for query in ("chainId=0", "chainId=1&since=2024-01-01T00:00:00Z", f"chainId=1&from={'0x' + 'a1' * 20}",
                  f"chainId=1&address={'0x' + 'a1' * 20}", "chainId=25"):
        body = client.get(f"/api/transfers?{query}").get_json()
        assert body["source"] == "store", query
    body = client.get("/api/transfers?chainId=1&from=" + "0x" + "a1" * 20).get_json()
    assert body["stale"] is False and isinstance(body["ingestLagSeconds"], int)
    assert [i["blockNumber"] for i in body["items"]] == [104, 103, 102, 101, 100]
    assert explorer_calls(sim_url) == 0


def test_a_failing_explorer_answers_from_the_store_with_its_real_freshness(make_app):
    client = make_app("http://127.0.0.1:9", ["0x" + "aa" * 20], request_timeout_s=1)
    body = client.get("/api/transfers?chainId=1&pageSize=3").get_json()
    assert body["source"] == "store" and body["stale"] is False
    assert isinstance(body["ingestLagSeconds"], int) and body["lastIngestedAt"]
    assert [i["blockNumber"] for i in body["items"]] == [104, 103, 102]


def test_a_request_never_waits_on_the_limiter_more_than_a_second(sim, make_app):
    sim_url, contracts = sim
    client = make_app(sim_url, contracts, rate_limit_per_sec=0.1, rate_limit_burst=1)  # one call per 10 s
    started = time.monotonic()
    first = client.get("/api/transfers?chainId=1&contract=" + contracts[0]).get_json()
    second = client.get("/api/transfers?chainId=1&contract=" + contracts[1]).get_json()
    assert time.monotonic() - started < 2.5
    assert first["source"] == "upstream" and second["source"] == "store"


def store_truth(store_url: str, rows: list[dict]) -> None:
    """The simulator's transfers written to the store, as the worker would have ingested them."""
    write(store_url, 1, [Transfer(
        chain_id=1, block_number=t["blockNumber"], time_stamp=calendar.timegm(time.strptime(
            t["timeStamp"], "%Y-%m-%dT%H:%M:%SZ")), tx_hash=hash_to_bytes(t["hash"]), log_index=t["logIndex"],
        from_address=address_to_bytes(t["from"]), to_address=address_to_bytes(t["to"]), value=int(t["value"]),
        contract_address=address_to_bytes(t["contractAddress"]), block_hash=hash_to_bytes(t["blockHash"]),
        gas_used=int(t["gasUsed"]), gas_price=int(t["gasPrice"]), method_id=t["methodId"]) for t in rows])


def test_a_cursor_goes_on_from_the_store_when_the_explorer_fails(sim, make_app, store_url):
    sim_url, contracts = sim
    expected = [t for t in truth(sim_url, contracts) if t["contractAddress"] == contracts[0]]
    store_truth(store_url, expected)
    client = make_app(sim_url, contracts[:1], page_size=10, request_timeout_s=1)
    first = client.get("/api/transfers?chainId=1&pageSize=10").get_json()
    assert first["source"] == "upstream" and first["items"] == expected[:10]
    requests.post(sim_url + "/_sim/control", json={"outage": True}, timeout=5)
    second = client.get(f"/api/transfers?chainId=1&pageSize=10&cursor={first['nextCursor']}").get_json()
    assert second["source"] == "store" and second["items"] == expected[10:20]
    assert second["nextCursor"] and not second["nextCursor"].startswith("u.")


def test_cursors_are_checked(sim, make_app):
    sim_url, contracts = sim
    client = make_app(sim_url, contracts)
    cursor = client.get("/api/transfers?chainId=1&pageSize=5").get_json()["nextCursor"]
    assert decode_resume(cursor).sort == "desc"
    cases = {
        f"chainId=1&cursor={cursor}&page=2": "give either page or cursor",
        f"chainId=1&cursor={cursor}&sort=asc": "sort=desc",
        f"chainId=1&cursor={cursor}&contract={contracts[0]}": "another query",
        f"chainId=1&cursor={cursor[:-3]}": "not a cursor",
        f"chainId=1&cursor={cursor}&cursor={cursor}": "more than once",
    }
    for query, message in cases.items():
        answer = client.get(f"/api/transfers?{query}")
        assert answer.status_code == 400, query
        error = answer.get_json()["error"]
        assert error["parameter"] == "cursor" and message in error["message"], (query, error)


# --- the merge, without I/O ------------------------------------------------------------------------


def chunks(series: dict[tuple[int, int], tuple[list[tuple], int | None]]):
    """load() over fixed chunks: (slot, bound) -> (keys newest first, next bound)."""
    loaded = []

    def load(slot: int, bound: int) -> Chunk:
        loaded.append((slot, bound))
        keys_, next_bound = series[(slot, bound)]
        return Chunk(100.0 + len(loaded), next_bound, [(key, {"key": key}) for key in keys_])

    return load, loaded


def test_the_walk_merges_contracts_and_resumes_from_their_bounds():
    # contract 0's first call ended inside block 7: its next chunk reads block 7 again
    load, loaded = chunks({
        (0, OPEN): ([(9, 9, 0, 0)], 7),
        (0, 7): ([(7, 7, 1, 0), (7, 7, 0, 0), (5, 5, 0, 0)], None),
        (1, OPEN): ([(8, 8, 0, 1), (7, 7, 0, 1), (2, 2, 0, 1)], None),
    })
    first = Walk((OPEN, OPEN), None, True, load)
    rows, bounds = first.take(4)
    assert [key for key, _ in rows] == [(9, 9, 0, 0), (8, 8, 0, 1), (7, 7, 1, 0), (7, 7, 0, 1)]
    assert bounds == (7, OPEN)
    rest, end = Walk(bounds, rows[-1][0], True, load).take(10)
    assert [key for key, _ in rest] == [(7, 7, 0, 0), (5, 5, 0, 0), (2, 2, 0, 1)] and end is None
    assert loaded.count((0, 7)) == 2 and first.fetched_at == [101.0, 102.0, 103.0]


def test_a_walk_at_the_end_of_every_contract_has_no_cursor():
    load, _ = chunks({(0, OPEN): ([(1, 1, 0, 0)], None)})
    rows, bounds = Walk((OPEN,), None, True, load).take(1)
    assert len(rows) == 1 and bounds is None
    assert Walk((DONE,), None, True, load).take(5) == ([], None)
