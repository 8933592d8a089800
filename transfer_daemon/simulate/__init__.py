"""Simulated upstream: deterministic synthetic chains behind Etherscan-compatible and JSON-RPC APIs.

Shares only `transfer_daemon.model` with the product, so the product's clients are tested against
answers they did not help write.
"""

from __future__ import annotations

from transfer_daemon.simulate.routes import Simulator, build_app, serve, start_in_thread
from transfer_daemon.simulate.settings import FAULT_TYPES, ChainSpec, SimConfig, parse_chains

__all__ = ["FAULT_TYPES", "ChainSpec", "SimConfig", "Simulator", "build_app", "config_from_options",
           "parse_chains", "serve", "start_in_thread"]


def config_from_options(*, chains: str, seed: int, history_days: float, block_time: float,
                        transfers_per_block: float, rate_limit: float, fault_rate: float, reorg_every: int,
                        reorg_depth: int, index_lag: int = 0, null_headers: int = 0, poison_every: int = 0,
                        daily_cap: int = 0, **_ignored: object) -> SimConfig:
    """The `simulate` command's options -> SimConfig; ValueError names the bad option."""
    return SimConfig(chains=parse_chains(chains), seed=seed, history_days=history_days, block_time=block_time,
                     transfers_per_block=transfers_per_block, rate_limit=rate_limit, fault_rate=fault_rate,
                     reorg_every=reorg_every, reorg_depth=reorg_depth, index_lag_blocks=index_lag,
                     null_headers_blocks=null_headers, poison_every=poison_every, daily_cap=daily_cap)
