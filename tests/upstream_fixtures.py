"""Load the upstream answer samples, copied verbatim from recorded public answers of the real services."""

from __future__ import annotations

import json
import random
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from transfer_daemon.config import ChainConfig
from transfer_daemon.upstream.http import HttpClient, RetryPolicy, UpstreamStats
from transfer_daemon.upstream.limiter import Limiter

FIXTURES = Path(__file__).parent / "fixtures" / "upstream"


def sample(name: str):
    return json.loads((FIXTURES / name).read_text())


def sample_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


# --- fakes shared by the upstream client tests ------------------------------------------------

API_KEY = "SECRETKEY123456"
CONTRACT_A = "0x" + "a1" * 20
CONTRACT_B = "0x" + "b2" * 20


class FakeTime:
    """Injected clock + sleep: sleeping advances the clock, nothing waits for real."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def make_chain(**overrides) -> ChainConfig:
    values = dict(id=1, name="ethereum", kind="etherscan", contracts=(CONTRACT_A,),
                  base_url="https://api.etherscan.io/v2/api", api_key_env="TEST_ETHERSCAN_KEY",
                  rate_limit_per_sec=10_000.0, rate_limit_burst=10_000, page_size=100)
    values.update(overrides)
    return ChainConfig(**values)


def make_http(chain: ChainConfig, limiter_dir, fake: FakeTime, policy: RetryPolicy | None = None,
              key: str = API_KEY) -> HttpClient:
    limiter = Limiter(limiter_dir, chain.limiter_key, chain.rate_limit_per_sec, chain.rate_limit_burst)
    return HttpClient(chain, limiter, environ={chain.api_key_env: key} if chain.api_key_env else {},
                      policy=policy or RetryPolicy(), sleep=fake.sleep, clock=fake.clock, rng=random.Random(7),
                      stats=UpstreamStats())


def query(request) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(request.url).query).items()}


def tokentx_row(block: int, tx: int, contract: str = CONTRACT_A, value: int = 1) -> dict:
    return {
        "blockNumber": str(block), "timeStamp": str(1_700_000_000 + block * 12), "hash": f"0x{tx:064x}",
        "nonce": "1", "blockHash": f"0x{block + 10**6:064x}", "from": "0x" + "11" * 20,
        "contractAddress": contract, "to": "0x" + "22" * 20, "value": str(value), "tokenName": "T",
        "tokenSymbol": "T", "tokenDecimal": "18", "transactionIndex": "0", "gas": "60000",
        "gasPrice": "1000", "gasUsed": "50000", "cumulativeGasUsed": "50000", "input": "deprecated",
        "methodId": "0xa9059cbb", "functionName": "transfer(address,uint256)", "confirmations": "10",
    }


class FakeExplorer:
    """Etherscan `tokentx` / `getLogs` semantics over a fixed row list, with the result window."""

    def __init__(self, rows: list[dict], window: int = 10_000, logs: bool = False) -> None:
        self.rows = rows
        self.window = window
        self.logs = logs
        self.calls: list[dict[str, str]] = []

    def _block(self, row: dict) -> int:
        return int(row["blockNumber"], 16) if self.logs else int(row["blockNumber"])

    def __call__(self, request):
        q = query(request)
        self.calls.append(q)
        if q.get("module") == "proxy":
            return 200, {}, json.dumps({"jsonrpc": "2.0", "id": 83, "result": hex(max(map(self._block, self.rows)))})
        page, offset = int(q["page"]), int(q["offset"])
        if page * offset > self.window:
            return 200, {}, json.dumps({"status": "0", "message": "Result window is too large, PageNo x Offset "
                                        "size must be less than or equal to 10000", "result": None})
        contract = q["address"] if self.logs else q["contractaddress"]
        lo = int(q.get("fromBlock" if self.logs else "startblock", 0))
        hi = int(q.get("toBlock" if self.logs else "endblock", 99_999_999))
        key = "address" if self.logs else "contractAddress"
        matched = [r for r in self.rows if r[key] == contract and lo <= self._block(r) <= hi]
        if q.get("sort") == "desc":
            matched.reverse()
        chunk = matched[(page - 1) * offset: page * offset]
        if not chunk:
            message = "No records found" if self.logs else "No transactions found"
            return 200, {}, json.dumps({"status": "0", "message": message, "result": []})
        return 200, {}, json.dumps({"status": "1", "message": "OK", "result": chunk})
