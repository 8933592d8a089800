"""How fast the simulator answers the calls ingestion makes, against a trivial call measured in the same run.

Prints medians for: eth_blockNumber via the explorer proxy (baseline), a 1000-row tokentx page on
blocks never read before (cold: blocks generated) and again (warm: LRU hit), and a 2000-block
eth_getLogs window cold and warm. Usage: python scripts/bench_simulator.py [--seed N] [--rounds N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import requests

from transfer_daemon.simulate import SimConfig, parse_chains, start_in_thread


def _median_ms(call: Callable[[int], object], rounds: int) -> float:
    timings = []
    for round_ in range(rounds):
        began = time.perf_counter()
        call(round_)
        timings.append((time.perf_counter() - began) * 1000)
    return statistics.median(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    url, stop = start_in_thread(SimConfig(chains=parse_chains("1:etherscan,25:rpc_logs"), seed=args.seed,
                                          rate_limit=0, history_days=365))
    session = requests.Session()
    try:
        chains = {c["id"]: c for c in session.get(url + "/_sim/chains").json()["chains"]}
        eth, cro = chains[1], chains[25]

        def proxy(_: int) -> None:
            session.get(url + "/v2/api", params={"chainid": 1, "module": "proxy", "action": "eth_blockNumber"})

        def tokentx(start: int) -> int:
            body = session.get(url + "/v2/api", params={
                "chainid": 1, "module": "account", "action": "tokentx", "contractaddress": eth["contracts"][0],
                "startblock": start, "endblock": 99999999, "page": 1, "offset": 1000, "sort": "asc"}).json()
            assert len(body["result"]) == 1000, body["message"]
            return int(body["result"][-1]["blockNumber"])

        def get_logs(start: int) -> None:
            body = session.post(url + "/rpc/25", json={"jsonrpc": "2.0", "id": 1, "method": "eth_getLogs", "params": [
                {"address": cro["contracts"], "fromBlock": hex(start), "toBlock": hex(start + 1999)}]}).json()
            assert "result" in body, body

        base = _median_ms(proxy, args.rounds * 3)
        starts = [eth["firstBlock"] + 20_000 * i for i in range(args.rounds)]
        cold = _median_ms(lambda i: tokentx(starts[i]), args.rounds)
        warm = _median_ms(lambda i: tokentx(starts[i]), args.rounds)
        log_starts = [cro["firstBlock"] + 10_000 * i for i in range(args.rounds)]
        logs_cold = _median_ms(lambda i: get_logs(log_starts[i]), args.rounds)
        logs_warm = _median_ms(lambda i: get_logs(log_starts[i]), args.rounds)
    finally:
        stop()
    print(f"tokens: chain 1 {len(eth['contracts'])}, chain 25 {len(cro['contracts'])}; rounds {args.rounds}")
    _report(base, {"tokentx 1000 rows, cold blocks": cold, "tokentx 1000 rows, warm blocks": warm,
                   "eth_getLogs 2000 blocks, cold": logs_cold, "eth_getLogs 2000 blocks, warm": logs_warm})


def _report(base: float, figures: dict[str, float]) -> None:
    print(f"{'baseline proxy eth_blockNumber':36s} {base:7.2f} ms")
    for name, value in figures.items():
        print(f"{name:36s} {value:7.2f} ms  ({value / base:5.1f}x baseline)")


if __name__ == "__main__":
    main()
