"""Scale-out: two supervisors ("hosts") on one Postgres and one Redis. Each chain is ingested by
exactly one of them; when a holder's worker or the whole holder dies, the other takes over within a
poll interval; both APIs serve the same page 1."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from cluster_support import NAMES, Host, Sim, lock_holders
from redis_support import REDIS_URL, keys_under, own_prefix
from supervisor_support import wait_for

pytestmark = pytest.mark.slow

KEY_ENV = "MULTIHOST_EXPLORER_KEY"
POLL_S = 2
TAKEOVER_SLACK_S = 6  # connect, try the lock, plus a loaded 2-core machine


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    yield from own_prefix()


@pytest.fixture
def cluster(tmp_path: Path, database_url: str, redis_prefix: str) -> Iterator[tuple[Sim, Host, Host]]:
    sim = Sim(history_blocks=1500)
    cache = f'[cache]\nbackend = "redis"\nurl = "{REDIS_URL}"\nprefix = "{redis_prefix}"\n'
    hosts = [Host(tmp_path / name, database_url, sim, env={KEY_ENV: "multihost-key"}, key_env=KEY_ENV,
                  poll_interval_s=POLL_S, extra_toml=cache) for name in ("a", "b")]
    yield sim, hosts[0], hosts[1]
    for host in hosts:
        host.cleanup()
    sim.stop()


def held_by(database_url: str, host: Host) -> set[str]:
    """Chains whose lock is held by a worker of `host`; fails if any chain has two holders."""
    holders = lock_holders(database_url)
    assert all(len(pids) == 1 for pids in holders.values()), holders
    mine = host.worker_pids()
    return {chain for chain, pids in holders.items() if pids[0] in mine}


def last_event_id(database_url: str) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        return conn.execute("SELECT coalesce(max(id), 0) FROM ingest_events").fetchone()[0]


def ingested_since(database_url: str, event_id: int) -> set[int]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute("SELECT DISTINCT chain_id FROM ingest_events WHERE id > %s AND status = 'ingested'",
                            (event_id,)).fetchall()
    return {chain_id for (chain_id,) in rows}


def page_one(host: Host, chain_id: int) -> tuple | None:
    answer = host.get("/api/transfers", chainId=chain_id)
    if answer is None or answer.status_code != 200:
        return None
    body = answer.json()
    return (body["source"], tuple(item["hash"] + str(item["logIndex"]) for item in body["items"]), body["nextCursor"])


def same_page_one(a: Host, b: Host, chain_id: int) -> tuple | None:
    first, second = page_one(a, chain_id), page_one(b, chain_id)
    return first if first is not None and first == second and first[1] else None


def test_two_hosts_share_the_chains_and_take_over(cluster, database_url: str, redis_prefix: str) -> None:
    sim, a, b = cluster
    chains = set(NAMES.values())
    a.start()
    wait_for(lambda: held_by(database_url, a) == chains, 40, f"host a holding both chains\n{a.tail()}", 0.2)

    b.start()
    for chain in chains:
        wait_for(lambda c=chain: f"standby chain={c} " in b.log(), 30, f"host b standing by for {chain}\n{b.tail()}")
    assert held_by(database_url, a) == chains and held_by(database_url, b) == set()
    assert "acquired chain=" not in b.log() and "ingested chain=" not in b.log()

    # kill -9 a's cronos worker: whoever wins (a's restarted worker or b's standby), one holder only
    victim = a.children()["worker[cronos]"]["pid"]
    a_pids = a.worker_pids()
    next(p for p in a.tree() if p.pid == victim).kill()
    holder = wait_for(lambda: (h := lock_holders(database_url).get("cronos")) and h[0] != victim and h, POLL_S + 5
                      + TAKEOVER_SLACK_S, f"cronos taken over after kill -9 of its worker\n{a.tail()}", 0.1)
    assert len(holder) == 1 and (holder[0] in a.worker_pids() - a_pids or holder[0] in b.worker_pids())

    # the whole holder host dies: b takes every chain it does not hold yet within one poll interval
    wait_for(lambda: held_by(database_url, a) | held_by(database_url, b) == chains, 10, "every chain held")
    died = time.monotonic()
    events_before = last_event_id(database_url)
    a.kill_host()
    wait_for(lambda: held_by(database_url, b) == chains, POLL_S + TAKEOVER_SLACK_S,
             f"host b holding both chains after host a died\n{b.tail()}", 0.1)
    took = time.monotonic() - died
    print(f"takeover after the holder host died: {took:.2f} s (poll interval {POLL_S} s)")
    assert took <= POLL_S + TAKEOVER_SLACK_S
    for chain in chains:
        assert f"acquired chain={chain} lock" in b.log()
    wait_for(lambda: ingested_since(database_url, events_before) == {1, 25}, 30,
             f"both chains ingesting again, by host b\n{b.tail()}", 0.3)

    # host a comes back: it stands by, and both APIs serve the same data
    a.start()
    wait_for(lambda: all(f"standby chain={c} " in a.log().rsplit("recovered stale pidfile", 1)[-1] for c in chains),
             30, f"host a standing by after its restart\n{a.tail()}")
    assert held_by(database_url, b) == chains
    for chain_id in (0, 1, 25):
        page = wait_for(lambda c=chain_id: same_page_one(a, b, c), 30,
                        f"the same page 1 of chain {chain_id} from both APIs\n{a.tail()}\n{b.tail()}", 0.3)
        assert page[0] == "store" and len(page[1]) == 25
    pages = [key for key in keys_under(redis_prefix) if key.startswith(redis_prefix + "page1:")]
    assert pages, "the hosts never wrote a page to the shared Redis"
    assert a.stop() == 0 and b.stop() == 0


SIM_RATE = 5  # calls per second per key before the simulator answers "Max calls per sec rate limit reached"
KEY_RATE = 3  # what the config allows the key: the margin covers the hosts' scheduling jitter


@pytest.fixture
def upstream_cluster(tmp_path: Path, database_url: str, redis_prefix: str) -> Iterator[tuple[Sim, Host, Host]]:
    sim = Sim(history_blocks=1500, rate_limit=SIM_RATE)
    cache = f'[cache]\nbackend = "redis"\nurl = "{REDIS_URL}"\nprefix = "{redis_prefix}"\n'
    hosts = [Host(tmp_path / name, database_url, sim, env={KEY_ENV: "multihost-key"}, key_env=KEY_ENV,
                  poll_interval_s=POLL_S, extra_toml=cache,
                  chain_fields={"data_source": "upstream", "rate_limit_per_sec": KEY_RATE})
             for name in ("a", "b")]
    yield sim, hosts[0], hosts[1]
    for host in hosts:
        host.cleanup()
    sim.stop()


def hammer(host: Host, chain: dict, until: float, sources: list[str]) -> None:
    """Pages the explorer has not been asked for yet: each toBlock of one contract is one call."""
    first, span = chain["firstBlock"], chain["head"] - chain["firstBlock"]
    block = first + host.api_port % span
    while time.monotonic() < until:
        block = first + (block - first + 37) % span
        answer = host.get("/api/transfers", chainId=1, contract=chain["contracts"][0], toBlock=block, pageSize=5)
        if answer is not None and answer.status_code == 200:
            sources.append(answer.json()["source"])


def test_two_hosts_in_upstream_mode_share_their_keys_rate(upstream_cluster) -> None:
    sim, a, b = upstream_cluster
    for host in (a, b):
        host.start()
    for host in (a, b):
        wait_for(lambda h=host: (r := h.get("/api/transfers", chainId=1)) is not None and r.status_code == 200
                 and r.json()["source"] == "upstream", 60, f"the API of {host.root.name} in upstream mode\n"
                 f"{host.tail()}", 0.3)
    chain = next(c for c in sim.chains if c["id"] == 1)
    until = time.monotonic() + 12
    sources: dict[str, list[str]] = {"a": [], "b": []}
    threads = [threading.Thread(target=hammer, args=(host, chain, until, sources[name]))
               for name, host in (("a", a), ("b", b)) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = sim.stats()
    print(f"upstream-mode load from two hosts: {stats['requests']} explorer calls by key, "
          f"{sum(s.count('upstream') for s in sources.values())} explorer pages, "
          f"{sum(s.count('store') for s in sources.values())} store pages, {stats['rateLimitedTotal']} rate-limited")
    assert all(s.count("upstream") >= 5 for s in sources.values()), "the load never reached the explorer"
    assert stats["rateLimitedTotal"] == 0, stats["rateLimited"]
    assert a.stop() == 0 and b.stop() == 0
