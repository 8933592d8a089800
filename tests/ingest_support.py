"""Helpers for the ingest tests: a simulator per test, a chain config aimed at it, truth vs store."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import requests

from transfer_daemon import store
from transfer_daemon.config import Config, parse_config
from transfer_daemon.db.bootstrap import migrate
from transfer_daemon.db.pool import open_pool
from transfer_daemon.ingest import context
from transfer_daemon.simulate import ChainSpec, SimConfig, start_in_thread
from transfer_daemon.upstream import make_source
from transfer_daemon.upstream.http import RetryPolicy

KEY_ENV = "INGEST_TEST_KEY"
ENVIRON = {KEY_ENV: "ingest-test-key"}
#: Fields compared between the store and the simulator's truth (upstream kinds differ in gas fields).
COMPARED = ("blockNumber", "timeStamp", "hash", "logIndex", "from", "to", "value", "contractAddress", "blockHash")


def chain_id_for(kind: str) -> int:
    return 25 if kind == "rpc_logs" else 1


def sim_config(kind: str, *, log_timestamps: bool = True, **knobs) -> SimConfig:
    """A short, fast history: about 300 blocks of 0.5 s, two transfers a block. `log_timestamps`
    False: eth_getLogs rows carry no `blockTimestamp` (as on Cronos), so the client reads headers."""
    settings = {"history_days": 150 / 86400, "block_time": 0.5, "transfers_per_block": 2.0, "rate_limit": 0.0,
                "seed": 7, **knobs}
    return SimConfig(chains=(ChainSpec(chain_id_for(kind), kind, log_timestamps),), **settings)


class Sim:
    def __init__(self, config: SimConfig) -> None:
        self.url, self._stop = start_in_thread(config)
        self.chain_info = requests.get(self.url + "/_sim/chains", timeout=5).json()["chains"][0]
        self.chain_id = self.chain_info["id"]

    def truth(self, to_block: int) -> list[dict]:
        answer = requests.get(self.url + "/_sim/transfers", params={"chainId": self.chain_id, "toBlock": to_block},
                              timeout=30)
        answer.raise_for_status()
        return answer.json()

    def stats(self) -> dict:
        return requests.get(self.url + "/_sim/stats", timeout=5).json()

    def stop(self) -> None:
        self._stop()


def make_config(data_dir: Path, sim: Sim, kind: str, **chain_overrides) -> Config:
    chain = {"id": sim.chain_id, "name": "sim", "kind": kind, "contracts": sim.chain_info["contracts"],
             "start_block": sim.chain_info["firstBlock"], "poll_interval_s": 1, "confirmations": 3,
             "page_size": 100, "max_pages_per_cycle": 5, "rate_limit_per_sec": 50, "request_timeout_s": 2,
             "log_window_blocks": 100, **chain_overrides}
    if kind == "rpc_logs":
        chain["rpc_url"] = f"{sim.url}/rpc/{sim.chain_id}"
    else:
        chain.update(base_url=f"{sim.url}/v2/api", api_key_env=KEY_ENV)
    document = {"daemon": {"data_dir": str(data_dir), "log_file": "", "shutdown_timeout": 5},
                "database": {"pool_min": 1, "pool_max": 4}, "chains": [chain]}
    return parse_config(document, {})


#: Retries as in production but in tenths of seconds, so a 20 % fault rate costs little test time.
FAST_RETRY = RetryPolicy(max_attempts=8, max_total_s=20.0, initial_s=0.1, maximum_s=1.0)


def make_context(config: Config, database_url: str) -> context.IngestContext:
    migrate(database_url)
    chain = config.chains[0]
    pool = open_pool(database_url, 1, 4, "ingest-test")
    source = make_source(chain, limiter_dir=str(Path(config.daemon.data_dir) / "limiter"), environ=ENVIRON,
                         retry=FAST_RETRY)
    return context.IngestContext(config=config, chain=chain, pool=pool, source=source)


def stored_items(database_url_or_pool, chain_id: int, to_block: int) -> list[dict]:
    """Every stored transfer of the chain up to `to_block`, ascending, as API items."""
    items: list[dict] = []
    cursor = None
    pool = database_url_or_pool
    while True:
        query = store.TransferQuery(chain_ids=(chain_id,), page_size=100, cursor=cursor, sort="asc",
                                    to_block=to_block)
        with pool.connection() as conn:
            page = store.query_transfers(conn, query)
        items.extend(item.to_api() for item in page.items)
        if not page.next_cursor:
            return items
        cursor = page.next_cursor


def comparable(items: list[dict]) -> list[tuple]:
    return sorted(tuple(item[name] for name in COMPARED) for item in items)


def get_cursor(pool, chain_id: int):
    with pool.connection() as conn:
        return store.get_cursor(conn, chain_id)


def differences(sim: Sim, pool, chain_id: int) -> tuple[int, int, int, int]:
    """(synced_block, missing, extra, duplicates) of the store against the truth up to the cursor."""
    synced = get_cursor(pool, chain_id).synced_block
    truth = comparable(sim.truth(synced))
    stored = comparable(stored_items(pool, chain_id, synced))
    truth_set, stored_set = set(truth), set(stored)
    return synced, len(truth_set - stored_set), len(stored_set - truth_set), len(stored) - len(stored_set)


def poll(condition: Callable[[], object], deadline_s: float, step: Callable[[], None] | None = None,
         interval_s: float = 0.2) -> object:
    """Call `step` then `condition` until the condition is truthy or the deadline passes."""
    deadline = time.monotonic() + deadline_s
    while True:
        if step is not None:
            step()
        result = condition()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(interval_s)
