"""Helpers for the API tests: a two-chain config, synthetic transfers, a migrated seeded store."""

from __future__ import annotations

import hashlib
from pathlib import Path

import psycopg

from transfer_daemon import store
from transfer_daemon.config import Config, parse_config
from transfer_daemon.model import Cursor, IngestEvent, Transfer

CONTRACT_A = "0x" + "aa" * 20
CONTRACT_B = "0x" + "bb" * 20
ALICE = bytes.fromhex("a1" * 20)
BOB = bytes.fromhex("b0" * 20)
CAROL = bytes.fromhex("c0" * 20)
BASE_TIME = 1_714_000_000


def make_config(data_dir: Path, *, data_source: str = "persistent", chain_sources: dict | None = None,
                base_url: str = "http://127.0.0.1:9/api") -> Config:
    chain_sources = chain_sources or {}
    document = {
        "daemon": {"data_dir": str(data_dir), "log_file": ""},
        "api": {"data_source": data_source},
        "chains": [
            {"id": 1, "name": "ethereum", "kind": "etherscan", "base_url": base_url, "contracts": [CONTRACT_A],
             **({"data_source": chain_sources[1]} if 1 in chain_sources else {})},
            {"id": 25, "name": "cronos", "kind": "rpc_logs", "rpc_url": "http://127.0.0.1:9/rpc",
             "contracts": [CONTRACT_B], **({"data_source": chain_sources[25]} if 25 in chain_sources else {})},
        ],
    }
    return parse_config(document, {})


def transfer(chain_id: int, n: int, *, block: int | None = None, ts: int | None = None,
             sender: bytes = ALICE, recipient: bytes = BOB, log_index: int = 0) -> Transfer:
    """The n-th synthetic transfer of a chain: block 100+n, one minute apart."""
    digest = hashlib.sha256(f"{chain_id}:{n}:{log_index}".encode()).digest()
    contract = CONTRACT_A if chain_id == 1 else CONTRACT_B
    block = 100 + n if block is None else block
    return Transfer(
        chain_id=chain_id, block_number=block, time_stamp=BASE_TIME + 60 * n if ts is None else ts,
        tx_hash=digest, log_index=log_index, from_address=sender, to_address=recipient, value=10**18 + n,
        contract_address=bytes.fromhex(contract[2:]), block_hash=hashlib.sha256(b"b%d" % block).digest(),
        gas_used=21000, gas_price=10**9, method_id="0xa9059cbb",
    )


def migrated(url: str) -> str:
    from transfer_daemon.db.migrate import migrate

    migrate(url)
    return url


def write(url: str, chain_id: int, transfers: list[Transfer], *, synced_block: int | None = None) -> int:
    """One committed batch, with the cursor and the event that report it, as a worker's sync that
    reached the head writes it."""
    top = synced_block if synced_block is not None else max((t.block_number for t in transfers), default=0)
    with psycopg.connect(url, autocommit=True) as conn:
        return store.write_batch(
            conn, chain_id, transfers, cursor=Cursor(chain_id, synced_block=top),
            event=IngestEvent(chain_id, "ingested", f"{len(transfers)} rows", rows=len(transfers)),
            synced_to_head=True,
        )
