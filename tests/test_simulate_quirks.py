"""The simulator's upstream quirks over HTTP: explorer index lag, null headers near the head, poisoned
rows, the daily call cap (semantics in transfer_daemon/simulate/quirks.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import requests
from click.testing import CliRunner

from transfer_daemon.cli import main
from transfer_daemon.model import TRANSFER_TOPIC
from transfer_daemon.simulate import SimConfig, config_from_options
from transfer_daemon.simulate.stats import redact_key


def _chain(url: str, chain_id: int) -> dict:
    return next(c for c in requests.get(url + "/_sim/chains", timeout=5).json()["chains"] if c["id"] == chain_id)


def _stats(url: str) -> dict:
    return requests.get(url + "/_sim/stats", timeout=5).json()


def _control(url: str, **changes) -> dict:
    response = requests.post(url + "/_sim/control", json=changes, timeout=5)
    assert response.status_code == 200, response.text
    return response.json()


def _explorer(url: str, apikey: str = "key", **params) -> dict:
    response = requests.get(url + "/v2/api", params={"chainid": 1, "apikey": apikey, **params}, timeout=10)
    assert response.status_code == 200
    return response.json()


def _tokentx(url: str, chain_id: int, first: int, apikey: str = "key") -> list[dict]:
    body = _explorer(url, apikey, chainid=chain_id, module="account", action="tokentx", startblock=first,
                     endblock="latest", contractaddress=_chain(url, chain_id)["contracts"][0])
    return body["result"]


def _rpc(url: str, chain_id: int, calls: list[tuple[str, list]]) -> list[dict]:
    batch = [{"jsonrpc": "2.0", "id": n, "method": method, "params": params}
             for n, (method, params) in enumerate(calls)]
    response = requests.post(f"{url}/rpc/{chain_id}", json=batch, timeout=10)
    assert response.status_code == 200
    return response.json()


def _truth(url: str, chain_id: int, first: int, *, first_contract: bool = False) -> list[dict]:
    """The truth from block `first`; with `first_contract`, only what `_tokentx` asks for."""
    items = requests.get(url + "/_sim/transfers", params={"chainId": chain_id, "fromBlock": first}, timeout=10).json()
    contract = _chain(url, chain_id)["contracts"][0]
    return [item for item in items if item["contractAddress"] == contract] if first_contract else items


def _tokentx_key(row: dict) -> tuple:
    return int(row["blockNumber"]), row["hash"], row["from"], row["to"], row["value"]


def _truth_key(item: dict) -> tuple:
    return item["blockNumber"], item["hash"], item["from"], item["to"], item["value"]


# --- index lag ----------------------------------------------------------------------------------


def test_index_lag_leaves_out_the_newest_blocks_until_the_head_moves_on(start_sim: Callable[..., str]) -> None:
    url = start_sim(index_lag_blocks=3, transfers_per_block=3.0)
    head = int(_explorer(url, module="proxy", action="eth_blockNumber")["result"], 16)
    assert head == _chain(url, 1)["head"] and _chain(url, 1)["indexLagBlocks"] == 3
    truth = _truth(url, 1, head - 30, first_contract=True)
    lagging = [item for item in truth if item["blockNumber"] > head - 3]
    assert lagging, "the seed must put transfers in the last three blocks"
    rows = _tokentx(url, 1, head - 30)
    assert [_tokentx_key(row) for row in rows] == [_truth_key(item) for item in truth if item not in lagging]
    assert all(row["confirmations"] == str(head - int(row["blockNumber"]) + 1) for row in rows)
    logs = _explorer(url, module="logs", action="getLogs", fromBlock=head - 30, toBlock="latest",
                     topic0=TRANSFER_TOPIC)["result"]
    assert logs and max(int(log["blockNumber"], 16) for log in logs) <= head - 3
    block = _explorer(url, module="proxy", action="eth_getBlockByNumber", tag=hex(head), boolean="false")["result"]
    assert int(block["number"], 16) == head, "module=proxy already reports the blocks the index lacks"
    assert _stats(url)["indexLagWithheldRows"]["1"] >= len(lagging)

    _control(url, advance_blocks=3)
    assert [_tokentx_key(row) for row in _tokentx(url, 1, head - 30) if int(row["blockNumber"]) <= head] == \
        [_truth_key(item) for item in truth]


def test_index_lag_spares_json_rpc_chains_and_routes(start_sim: Callable[..., str]) -> None:
    url = start_sim(index_lag_blocks=5, transfers_per_block=3.0)
    assert _chain(url, 25)["indexLagBlocks"] == 0
    for chain_id in (1, 25):
        head = _chain(url, chain_id)["head"]
        logs = _rpc(url, chain_id, [("eth_getLogs", [{"fromBlock": hex(head - 4), "toBlock": "latest",
                                                      "topics": [TRANSFER_TOPIC]}])])[0]["result"]
        erc20 = [(log["transactionHash"], int(log["data"], 16)) for log in logs if len(log["topics"]) == 3]
        assert erc20 == [(item["hash"], int(item["value"])) for item in _truth(url, chain_id, head - 4)] != []
    head = _chain(url, 25)["head"]
    explorer_rows = _tokentx(url, 25, head - 4)
    assert [_tokentx_key(row) for row in explorer_rows] == [
        _truth_key(item) for item in _truth(url, 25, head - 4, first_contract=True)]
    assert "1" not in _stats(url)["indexLagWithheldRows"]


# --- null headers -------------------------------------------------------------------------------


def test_null_headers_near_the_head_until_the_node_catches_up(start_sim: Callable[..., str]) -> None:
    url = start_sim(null_headers_blocks=2, transfers_per_block=3.0)
    assert _chain(url, 25)["nullHeadersBlocks"] == 2 and _chain(url, 1)["nullHeadersBlocks"] == 0
    head = int(_rpc(url, 25, [("eth_blockNumber", [])])[0]["result"], 16)
    answers = _rpc(url, 25, [("eth_getBlockByNumber", [hex(head - n), False]) for n in range(3)]
                   + [("eth_getBlockByNumber", ["latest", False])])
    assert answers[:2] == [{"jsonrpc": "2.0", "id": 0, "result": None}, {"jsonrpc": "2.0", "id": 1, "result": None}]
    assert int(answers[2]["result"]["number"], 16) == head - 2
    assert answers[3]["result"] == answers[2]["result"], "latest is the lagging node's own newest block"
    logs = _rpc(url, 25, [("eth_getLogs", [{"fromBlock": hex(head - 1), "toBlock": hex(head)}])])[0]["result"]
    assert logs, "eth_getLogs already returns the blocks whose headers are null"
    assert _stats(url)["nullHeaders"] == {"25": 2}

    _control(url, advance_blocks=1)
    newest = _rpc(url, 25, [("eth_getBlockByNumber", [hex(head - 1), False]),
                            ("eth_getBlockByNumber", [hex(head), False])])
    assert newest[0]["result"] is not None and newest[1]["result"] is None
    _control(url, advance_blocks=1)
    block = _rpc(url, 25, [("eth_getBlockByNumber", [hex(head), False])])[0]["result"]
    assert {log["blockHash"] for log in logs if int(log["blockNumber"], 16) == head} <= {block["hash"]}


def test_null_headers_spare_explorer_chains_and_the_proxy_module(start_sim: Callable[..., str]) -> None:
    url = start_sim(null_headers_blocks=3)
    head = _chain(url, 1)["head"]
    assert _rpc(url, 1, [("eth_getBlockByNumber", [hex(head), False])])[0]["result"]["number"] == hex(head)
    proxy = _explorer(url, chainid=25, module="proxy", action="eth_getBlockByNumber",
                      tag=hex(_chain(url, 25)["head"]), boolean="false")
    assert proxy["result"] is not None
    assert _stats(url)["nullHeaders"] == {}


# --- poisoned rows ------------------------------------------------------------------------------


@pytest.fixture
def poisoned_sim(start_sim: Callable[..., str]) -> str:
    return start_sim(poison_every=4, transfers_per_block=3.0)


def _poisoned(url: str, chain_id: int, first: int) -> list[dict]:
    return requests.get(url + "/_sim/poisoned", params={"chainId": chain_id, "fromBlock": first}, timeout=10).json()


def test_poisoned_blocks_are_every_nth_and_alternate_their_shapes(poisoned_sim: str) -> None:
    head = _chain(poisoned_sim, 1)["head"]
    entries = _poisoned(poisoned_sim, 1, head - 39)
    assert len(entries) == 10 and _chain(poisoned_sim, 1)["poisonEvery"] == 4
    assert {b["blockNumber"] - a["blockNumber"] for a, b in zip(entries, entries[1:], strict=False)} == {4}
    shapes = {(e["tokentxLogIndex"], e["logIndex"], e["tokenNameHasNul"]) for e in entries}
    assert shapes == {("4294967296", "0x100000000", False), ("-1", "0xffffffffffffffff", True)}
    assert [e["tokenNameHasNul"] for e in entries[:2]] in ([False, True], [True, False])


def test_tokentx_serves_the_poisoned_row_last_in_its_block_and_the_truth_leaves_it_out(
        poisoned_sim: str, start_sim: Callable[..., str]) -> None:
    chain = _chain(poisoned_sim, 1)
    head, contract = chain["head"], chain["contracts"][0]
    entries = {e["blockNumber"]: e for e in _poisoned(poisoned_sim, 1, head - 39) if e["contractAddress"] == contract}
    rows = _tokentx(poisoned_sim, 1, head - 39)
    poisoned = [row for row in rows if "logIndex" in row]
    assert [(int(r["blockNumber"]), r["hash"], r["logIndex"]) for r in poisoned] == [
        (n, e["hash"], e["tokentxLogIndex"]) for n, e in entries.items()]
    for row in poisoned:
        same_block = [r for r in rows if r["blockNumber"] == row["blockNumber"]]
        assert same_block[-1] is row
        assert ("\0" in row["tokenName"]) is entries[int(row["blockNumber"])]["tokenNameHasNul"]
    valid = [row for row in rows if "logIndex" not in row]
    truth = _truth(poisoned_sim, 1, head - 39, first_contract=True)
    assert [_tokentx_key(row) for row in valid] == [_truth_key(item) for item in truth]
    clean = start_sim(transfers_per_block=3.0)
    for chain_id in (1, 25):
        assert _truth(clean, chain_id, head - 39) == _truth(poisoned_sim, chain_id, head - 39), \
            "poison changes no valid row, nor its key"
    assert _stats(poisoned_sim)["poisonRowsServed"] == {"1": len(poisoned)}


def test_valid_rows_with_nul_in_token_name_stay_in_the_truth(poisoned_sim: str) -> None:
    chain = _chain(poisoned_sim, 1)
    head, name, contract = chain["head"], chain["tokens"][0]["name"], chain["contracts"][0]
    entries = _poisoned(poisoned_sim, 1, head - 39)
    rows = [row for row in _tokentx(poisoned_sim, 1, head - 39) if "logIndex" not in row]
    nul_rows = [row for row in rows if "\0" in row["tokenName"]]
    expected = [e["nulTransfer"] for e in entries
                if e["nulTransfer"] is not None and e["nulTransfer"]["contractAddress"] == contract]
    assert expected and [_tokentx_key(row) for row in nul_rows] == [_truth_key(item) for item in expected]
    assert all(row["tokenName"] == name + "\0" * (32 - len(name)) for row in nul_rows)
    truth = _truth(poisoned_sim, 1, head - 39)
    assert all(item in truth for item in expected)
    assert _stats(poisoned_sim)["nulNameRowsServed"] == {"1": len(nul_rows)}


def test_log_routes_serve_the_poisoned_log_with_a_log_index_past_any_valid_range(poisoned_sim: str) -> None:
    head = _chain(poisoned_sim, 25)["head"]
    entries = _poisoned(poisoned_sim, 25, head - 39)
    logs = _rpc(poisoned_sim, 25, [("eth_getLogs", [{"fromBlock": hex(head - 39), "toBlock": "latest",
                                                     "topics": [TRANSFER_TOPIC]}])])[0]["result"]
    bad = [log for log in logs if int(log["logIndex"], 16) >= 2**31]
    assert [(int(log["blockNumber"], 16), log["transactionHash"], log["logIndex"]) for log in bad] == [
        (e["blockNumber"], e["hash"], e["logIndex"]) for e in entries]
    assert all(len(log["topics"]) == 3 and log["address"] == e["contractAddress"] for log, e in zip(bad, entries,
                                                                                                   strict=True))
    good = [(log["transactionHash"], int(log["logIndex"], 16)) for log in logs
            if len(log["topics"]) == 3 and log not in bad]
    assert good == [(item["hash"], item["logIndex"]) for item in _truth(poisoned_sim, 25, head - 39)]
    explorer_logs = _explorer(poisoned_sim, chainid=25, module="logs", action="getLogs", fromBlock=head - 39,
                              toBlock="latest", topic0=TRANSFER_TOPIC)["result"]
    assert [log["logIndex"] for log in explorer_logs if log["logIndex"] in ("0x100000000", "0xffffffffffffffff")] \
        == [e["logIndex"] for e in entries]
    assert _stats(poisoned_sim)["poisonRowsServed"] == {"25": 2 * len(entries)}


def test_poison_is_deterministic_for_a_seed(start_sim: Callable[..., str]) -> None:
    one, two, other = start_sim(poison_every=7), start_sim(poison_every=7), start_sim(poison_every=7, seed=2)
    head = _chain(one, 1)["head"]
    assert _poisoned(one, 1, head - 100) == _poisoned(two, 1, head - 100) != _poisoned(other, 1, head - 100)


# --- daily cap ----------------------------------------------------------------------------------


def test_daily_cap_answers_exactly_as_etherscan_per_key_until_the_utc_day_turns(start_sim: Callable[..., str]) -> None:
    url = start_sim(daily_cap=3)  # the fixture's blocks last an hour: 24 blocks turn the day
    calls = [{"module": "proxy", "action": "eth_blockNumber"},
             {"module": "logs", "action": "getLogs", "fromBlock": 0, "topic0": TRANSFER_TOPIC},
             {"module": "account", "action": "tokentx", "contractaddress": _chain(url, 1)["contracts"][0]}]
    answers = [_explorer(url, "first", **params) for params in calls * 2]
    assert "jsonrpc" in answers[0] and answers[1]["status"] == answers[2]["status"] == "1"
    assert answers[3:] == [
        {"status": "0", "message": "NOTOK", "result": f"Max daily rate limit reached. {n} (100%) of 3 day/limit"}
        for n in (4, 5, 6)]
    assert "jsonrpc" in _explorer(url, "second", **calls[0]), "the cap is per key"
    assert _rpc(url, 25, [("eth_blockNumber", [])])[0]["result"], "JSON-RPC has no daily cap"
    stats = _stats(url)
    first = redact_key("first")
    assert stats["dailyCapAnswers"] == {first: 3} and stats["requests"][first] == 6
    assert stats["dailyCap"]["calls"] == {first: 6, redact_key("second"): 1} and stats["dailyCap"]["limit"] == 3
    day = stats["dailyCap"]["day"]

    _control(url, advance_blocks=24)
    assert "jsonrpc" in _explorer(url, "first", **calls[0])
    assert _stats(url)["dailyCap"]["day"] > day


def test_daily_cap_switches_at_run_time(start_sim: Callable[..., str]) -> None:
    url = start_sim()
    for _ in range(3):
        assert "jsonrpc" in _explorer(url, module="proxy", action="eth_blockNumber")
    assert _control(url, daily_cap=1)["daily_cap"] == 1
    assert "jsonrpc" in _explorer(url, module="proxy", action="eth_blockNumber")
    assert _explorer(url, module="proxy", action="eth_blockNumber")["message"] == "NOTOK"
    _control(url, reset_daily_calls=True)
    assert "jsonrpc" in _explorer(url, module="proxy", action="eth_blockNumber")
    _control(url, daily_cap=0)
    assert all("jsonrpc" in _explorer(url, module="proxy", action="eth_blockNumber") for _ in range(3))
    for body in ({"daily_cap": -1}, {"daily_cap": "many"}, {"daily_cap": True}, {"reset_daily_calls": "yes"}):
        assert requests.post(url + "/_sim/control", json=body, timeout=5).status_code == 400, body
    assert _stats(url)["dailyCapAnswersTotal"] == 1


# --- configuration ------------------------------------------------------------------------------


def test_quirk_options_map_to_the_config_and_are_off_by_default() -> None:
    base = {"chains": "1:etherscan", "seed": 1, "history_days": 1, "block_time": 12, "transfers_per_block": 2,
            "rate_limit": 5, "fault_rate": 0, "reorg_every": 0, "reorg_depth": 3}
    default = config_from_options(**base)
    assert (default.index_lag_blocks, default.null_headers_blocks, default.poison_every, default.daily_cap) == (0,) * 4
    config = config_from_options(**base, index_lag=2, null_headers=3, poison_every=50, daily_cap=100_000)
    assert (config.index_lag_blocks, config.null_headers_blocks, config.poison_every, config.daily_cap) == \
        (2, 3, 50, 100_000)
    for name in ("index_lag_blocks", "null_headers_blocks", "poison_every", "daily_cap"):
        with pytest.raises(ValueError, match=name):
            SimConfig(**{name: -1})
    result = CliRunner().invoke(main, ["simulate", "--index-lag", "-1"])
    assert result.exit_code == 2 and "--index-lag" in result.output
    help_text = CliRunner().invoke(main, ["simulate", "--help"]).output
    assert all(option in help_text for option in ("--index-lag", "--null-headers", "--poison-every", "--daily-cap"))
