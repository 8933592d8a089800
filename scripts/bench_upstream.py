"""Benchmark: normalizing a 10,000-row tokentx page, beside plain json.loads of the same page.

Prints rows/s for both (best of --repeat runs) and the ratio normalize / json.loads. Not a test.
Target: normalize >= 100,000 rows/s.
"""

from __future__ import annotations

import argparse
import json
import random
import time

from transfer_daemon.upstream.normalize import normalize_logs, normalize_tokentx


def tokentx_page(rows: int, rng: random.Random) -> bytes:
    """An Etherscan tokentx answer shaped like the MKR sample: 1-3 transfers per transaction."""
    result, tx = [], 0
    while len(result) < rows:
        tx += 1
        block = 19_000_000 + tx // 4
        for _ in range(1 + tx % 3):
            result.append({
                "blockNumber": str(block), "timeStamp": str(1_700_000_000 + block * 12),
                "hash": f"0x{tx:064x}", "nonce": str(tx),
                "blockHash": f"0x{block:064x}", "from": f"0x{rng.getrandbits(160):040x}",
                "contractAddress": "0x9f8f72aa9304c8b593d555f12ef6589cc3a579a2",
                "to": f"0x{rng.getrandbits(160):040x}", "value": str(rng.getrandbits(rng.randint(8, 90))),
                "tokenName": "Maker", "tokenSymbol": "MKR", "tokenDecimal": "18", "transactionIndex": "81",
                "gas": "940000", "gasPrice": "32010000000", "gasUsed": "77759", "cumulativeGasUsed": "2523379",
                "input": "deprecated", "methodId": "0xa9059cbb", "functionName": "transfer(address,uint256)",
                "confirmations": "6234401",
            })
    return json.dumps({"status": "1", "message": "OK", "result": result[:rows]}).encode()


def logs_page(rows: int, rng: random.Random) -> bytes:
    topic = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
    result = [{
        "address": "0xc21223249ca28397b4b6541dffaecc539bff0c59",
        "topics": [topic, f"0x{rng.getrandbits(160):064x}", f"0x{rng.getrandbits(160):064x}"],
        "data": f"0x{rng.getrandbits(80):064x}", "blockNumber": hex(10_000_000 + i // 5),
        "blockTimestamp": hex(1_700_000_000 + i // 5), "blockHash": f"0x{10_000_000 + i // 5:064x}",
        "transactionHash": f"0x{i:064x}", "transactionIndex": "0x1", "logIndex": hex(i % 5), "removed": False,
    } for i in range(rows)]
    return json.dumps({"jsonrpc": "2.0", "id": 1, "result": result}).encode()


def best_rate(function, rows: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - started)
    return rows / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(1)
    page = tokentx_page(args.rows, rng)
    rows = json.loads(page)["result"]
    check = normalize_tokentx(1, rows)
    assert len(check.transfers) == args.rows and not check.quarantined
    parse = best_rate(lambda: json.loads(page), args.rows, args.repeat)
    normalize = best_rate(lambda: normalize_tokentx(1, rows), args.rows, args.repeat)
    print(f"json.loads tokentx page:       {parse:>10,.0f} rows/s  ({len(page) / 1e6:.1f} MB, {args.rows} rows)")
    print(f"normalize_tokentx:             {normalize:>10,.0f} rows/s  ratio {normalize / parse:.2f}x json.loads"
          f"  target >= 100,000 rows/s: {'met' if normalize >= 100_000 else 'MISSED'}")
    log_page = logs_page(args.rows, rng)
    logs = json.loads(log_page)["result"]
    parse_logs = best_rate(lambda: json.loads(log_page), args.rows, args.repeat)
    normalize_log_rows = best_rate(lambda: normalize_logs(25, logs), args.rows, args.repeat)
    print(f"json.loads eth_getLogs answer: {parse_logs:>10,.0f} rows/s")
    print(f"normalize_logs:                {normalize_log_rows:>10,.0f} rows/s  ratio "
          f"{normalize_log_rows / parse_logs:.2f}x json.loads")


if __name__ == "__main__":
    main()
