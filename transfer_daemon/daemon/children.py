"""What the supervisor runs: each child's spec (entry point, arguments, the fingerprints a reload
compares) and the database every child is handed, bootstrapped once."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Callable
from typing import Any

from transfer_daemon.config import Config
from transfer_daemon.daemon.child import ChildSpec
from transfer_daemon.daemon.heartbeat import Heartbeat
from transfer_daemon.redact import redact_url

log = logging.getLogger(__name__)

SpecBuilder = Callable[[Config], list[ChildSpec]]
# ChainConfig fields only the worker uses: changing them must not restart the API.
_INGEST_ONLY = {"poll_interval_s", "page_size", "max_pages_per_cycle", "backfill_days", "start_block",
                "confirmations", "max_reorg_depth", "log_window_blocks", "daily_cap_reset_utc"}


def fingerprint(*parts: Any) -> str:
    """Stable digest of frozen config records: equal configs, equal fingerprints."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def secrets_fingerprint(config: Config, spec: ChildSpec) -> str:
    """A digest of the secret values `spec`'s child reads from the environment: its chain's key,
    or for the API the keys of the chains it may ask upstream. Configs name secrets only, so a
    key fixed in the `.env` changes no config fingerprint; this one changes. Never logged."""
    if spec.chain is not None:
        chains = [chain for chain in config.chains if chain.name == spec.chain]
    else:
        chains = [chain for chain in config.chains if config.data_source_for(chain) == "upstream"]
    return fingerprint(*((chain.api_key_env, chain.api_key()) for chain in chains))


def _worker_main(config: Config, chain_name: str, database_url: str, heartbeat: Heartbeat) -> None:
    from transfer_daemon.ingest.worker import run_worker
    from transfer_daemon.upstream import share_limiters

    share_limiters(config.cache)
    run_worker(config, chain_name, database_url, heartbeat, publish=heartbeat.publish)


def _api_main(config: Config, database_url: str) -> None:
    from transfer_daemon.api.server import run_api

    run_api(config, database_url)


def production_specs(config: Config, database_url: str) -> list[ChildSpec]:
    """One worker per chain (with a heartbeat) and the API, each with its config fingerprint."""
    shared = (config.database, config.ingest, config.cache, database_url)
    specs = [
        ChildSpec(f"worker[{chain.name}]", _worker_main, (config, chain.name, database_url),
                  fingerprint(chain, *shared), chain=chain.name, heartbeat=True)
        for chain in config.chains
    ]
    served = tuple(
        tuple((k, v) for k, v in dataclasses.asdict(chain).items() if k not in _INGEST_ONLY)
        for chain in config.chains
    )
    specs.append(ChildSpec("api", _api_main, (config, database_url),
                           fingerprint(config.api, config.database, config.cache, database_url, served)))
    return specs


def bootstrap_database(config: Config) -> str:
    """Resolve (or start the embedded) database and bring its schema up to date."""
    from transfer_daemon.db.bootstrap import migrate, resolve_database_url

    url = resolve_database_url(config)
    applied = migrate(url)
    log.info("database ready at %s (%d migration(s) applied)", redact_url(url), applied)
    return url


def database_plan(bootstrap: Callable[[Config], str] = bootstrap_database) -> SpecBuilder:
    """Specs for a config; the database is bootstrapped again only when its settings change."""
    resolved: dict[Any, str] = {}

    def build(config: Config) -> list[ChildSpec]:
        key = (config.database, config.daemon.data_dir)
        if key not in resolved:
            url = bootstrap(config)
            resolved.clear()
            resolved[key] = url
        return production_specs(config, resolved[key])

    return build
