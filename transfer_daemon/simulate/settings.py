"""The simulator's knobs: `SimConfig`, and the `--chains` spec parser.

Kept apart from `transfer_daemon.config` on purpose: the simulator shares only `model` with the product.
"""

from __future__ import annotations

from dataclasses import dataclass

KINDS = ("etherscan", "etherscan_logs", "rpc_logs")
FAULT_TYPES = ("http_429", "http_5xx", "timeout", "malformed", "html", "rate_limit_200")
#: Cronos (Ethermint) nodes put no `blockTimestamp` on logs; clients must read the block.
_CHAINS_WITHOUT_LOG_TIMESTAMP = frozenset({25})


@dataclass(frozen=True, slots=True)
class ChainSpec:
    chain_id: int
    kind: str  # etherscan | etherscan_logs | rpc_logs: decides what `logIndex` means in the truth
    log_block_timestamp: bool = True  # eth_getLogs rows carry `blockTimestamp` (newer geth)


@dataclass(frozen=True, slots=True)
class SimConfig:
    chains: tuple[ChainSpec, ...] = (ChainSpec(1, "etherscan"), ChainSpec(25, "rpc_logs", False))
    seed: int = 1
    history_days: float = 120.0
    block_time: float = 12.0
    transfers_per_block: float = 2.0
    rate_limit: float = 5.0  # calls per second per key (explorer) or per URL (rpc); 0 = none
    fault_rate: float = 0.0
    fault_types: tuple[str, ...] = FAULT_TYPES
    fault_timeout_s: float = 2.0  # how long a "timeout" fault stalls before answering
    reorg_every: int = 0  # blocks between reorgs; 0 = never
    reorg_depth: int = 3
    rpc_range_cap: int = 2000
    start_time: float | None = None  # wall clock of "now" at start; None = time.time(); fix it for determinism
    block_cache_size: int = 50_000
    # Quirks of real upstreams, all off by default (semantics in simulate/quirks.py):
    index_lag_blocks: int = 0  # explorer kinds: tokentx/getLogs leave out the newest N blocks
    null_headers_blocks: int = 0  # rpc_logs: eth_getBlockByNumber answers null for the newest N blocks
    poison_every: int = 0  # every N-th block also serves one row with an out-of-range logIndex; 0 = never
    daily_cap: int = 0  # explorer calls per key per UTC day before the daily-limit answer; 0 = no cap

    def __post_init__(self) -> None:
        if not self.chains:
            raise ValueError("chains: at least one chain")
        if len({c.chain_id for c in self.chains}) != len(self.chains):
            raise ValueError("chains: duplicate chain id")
        if self.block_time <= 0:
            raise ValueError("block_time must be > 0")
        for name in ("index_lag_blocks", "null_headers_blocks", "poison_every", "daily_cap"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be an integer >= 0")
        unknown = set(self.fault_types) - set(FAULT_TYPES)
        if unknown:
            raise ValueError(f"fault_types: unknown {sorted(unknown)}; known {list(FAULT_TYPES)}")


def parse_chains(spec: str) -> tuple[ChainSpec, ...]:
    """`"1:etherscan,25:rpc_logs"` -> chain specs.

    An optional third field `ts` / `nots` forces `blockTimestamp` on eth_getLogs rows on or off; by
    default it is on, except for chain 25 which answers like Cronos does (off).
    """
    chains = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        fields_ = item.split(":")
        if len(fields_) not in (2, 3) or not fields_[0].isdigit() or fields_[1] not in KINDS:
            raise ValueError(f"chains: bad item {item!r}: expected id:kind[:ts|nots], kind one of {KINDS}")
        chain_id = int(fields_[0])
        with_ts = chain_id not in _CHAINS_WITHOUT_LOG_TIMESTAMP
        if len(fields_) == 3:
            if fields_[2] not in ("ts", "nots"):
                raise ValueError(f"chains: bad flag in {item!r}: expected ts or nots")
            with_ts = fields_[2] == "ts"
        chains.append(ChainSpec(chain_id, fields_[1], with_ts))
    return tuple(chains)
