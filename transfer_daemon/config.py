"""Settings declared once (name, type, default, env var, help), loaded from TOML + env + .env.

Precedence, highest first: the process environment, the `.env` file beside the config file,
the TOML file, the declared default. Every problem raises `ConfigError(key, value, reason)`;
the CLI turns it into exit status 2 with the key named.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

from transfer_daemon.redact import redact_url

DEFAULT_CONFIG_PATH = Path("etc/transfer-daemon.toml")
KINDS = ("etherscan", "etherscan_logs", "rpc_logs")
DATA_SOURCES = ("persistent", "upstream")
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_EMAIL = re.compile(r"^[^@\s<>,;]+@[^@\s<>,;]+\.[^@\s<>,;]+$")


class ConfigError(Exception):
    def __init__(self, key: str, value: object, reason: str) -> None:
        shown = "<missing>" if value is _MISSING else repr(value)
        super().__init__(f"invalid config: {key} = {shown}: {reason}")
        self.key = key
        self.value = value
        self.reason = reason


_MISSING = object()


# --- converters: (key, raw) -> value, raising ConfigError naming the key -------------------


def _int(minimum: int | None = None, maximum: int | None = None) -> Callable[[str, Any], int]:
    def convert(key: str, raw: Any) -> int:
        if isinstance(raw, str):
            try:
                raw = int(raw.strip())
            except ValueError:
                raise ConfigError(key, raw, "expected an integer") from None
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise ConfigError(key, raw, "expected an integer")
        if minimum is not None and raw < minimum:
            raise ConfigError(key, raw, f"must be >= {minimum}")
        if maximum is not None and raw > maximum:
            raise ConfigError(key, raw, f"must be <= {maximum}")
        return raw

    return convert


def _float(minimum_exclusive: float | None = None) -> Callable[[str, Any], float]:
    def convert(key: str, raw: Any) -> float:
        if isinstance(raw, str):
            try:
                raw = float(raw.strip())
            except ValueError:
                raise ConfigError(key, raw, "expected a number") from None
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise ConfigError(key, raw, "expected a number")
        if minimum_exclusive is not None and raw <= minimum_exclusive:
            raise ConfigError(key, raw, f"must be > {minimum_exclusive}")
        return float(raw)

    return convert


def _str(key: str, raw: Any) -> str:
    if not isinstance(raw, str):
        raise ConfigError(key, raw, "expected a string")
    return raw


def _choice(*choices: str) -> Callable[[str, Any], str]:
    def convert(key: str, raw: Any) -> str:
        if raw not in choices:
            raise ConfigError(key, raw, f"expected one of {', '.join(choices)}")
        return raw

    return convert


def _optional_choice(*choices: str) -> Callable[[str, Any], str | None]:
    inner = _choice(*choices)
    return lambda key, raw: None if raw in (None, "") else inner(key, raw)


def _optional_int(minimum: int) -> Callable[[str, Any], int | None]:
    inner = _int(minimum)
    return lambda key, raw: None if raw in (None, "") else inner(key, raw)


def _url(key: str, raw: Any) -> str:
    value = _str(key, raw)
    if value and not re.match(r"^https?://[^\s/]+", value):
        raise ConfigError(key, redact_url(value), "expected an http(s) URL")
    return value


def _env_name(key: str, raw: Any) -> str:
    value = _str(key, raw)
    if value and not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", value):
        raise ConfigError(key, raw, "expected the NAME of an environment variable, not a value")
    return value


def _utc_time(key: str, raw: Any) -> str:
    if not isinstance(raw, str) or not re.match(r"^([01]\d|2[0-3]):[0-5]\d$", raw):
        raise ConfigError(key, raw, "expected a UTC time of day as HH:MM")
    return raw


def _name(key: str, raw: Any) -> str:
    if not isinstance(raw, str) or not _NAME.match(raw):
        raise ConfigError(key, raw, "expected lower-case letters, digits, '-' or '_' (max 32)")
    return raw


def _contracts(key: str, raw: Any) -> tuple[str, ...]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError(key, raw, "expected a non-empty list of 0x addresses")
    out = []
    for i, item in enumerate(raw):
        if not isinstance(item, str) or not _ADDRESS.match(item):
            raise ConfigError(f"{key}[{i}]", item, "expected a 0x address of 40 hex digits")
        out.append(item.lower())
    if len(set(out)) != len(out):
        raise ConfigError(key, raw, "duplicate contract address")
    return tuple(out)


def _database_url(key: str, raw: Any) -> str:
    value = _str(key, raw)
    if value and not value.startswith(("postgresql://", "postgres://")):
        raise ConfigError(key, redact_url(value), "expected a postgresql:// URL")
    return value


def _redis_url(key: str, raw: Any) -> str:
    value = _str(key, raw)
    if value and not value.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(key, redact_url(value), "expected a redis://, rediss:// or unix:// URL")
    return value


def _address(key: str, raw: Any) -> str:
    if not isinstance(raw, str) or not _EMAIL.match(raw):
        raise ConfigError(key, raw, "expected an e-mail address like alerts@example.com")
    return raw


def _email(key: str, raw: Any) -> str:
    return "" if raw == "" else _address(key, raw)


def _emails(key: str, raw: Any) -> tuple[str, ...]:
    if not isinstance(raw, list):
        raise ConfigError(key, raw, "expected a list of e-mail addresses")
    return tuple(_address(f"{key}[{i}]", item) for i, item in enumerate(raw))


def _setting(default: Any, convert: Callable[[str, Any], Any], help: str, env: str | None = None):
    from dataclasses import field

    return field(default=default, metadata={"convert": convert, "help": help, "env": env})


# --- sections ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DaemonConfig:
    data_dir: str = _setting("var", _str, "pidfile, log file, embedded Postgres, cache")
    log_file: str = _setting("var/log/transfer-daemon.log", _str, "the daemon log ('' = stderr only)")
    log_format: str = _setting("text", _choice("text", "json"), "text or json lines")
    log_level: str = _setting(
        "INFO", _choice("DEBUG", "INFO", "WARNING", "ERROR"), "lowest level logged",
        "TRANSFERS_LOG_LEVEL",
    )
    shutdown_timeout: float = _setting(
        20.0, _float(0), "seconds children get to stop before SIGKILL"
    )
    heartbeat_timeout: float = _setting(
        300.0, _float(0), "seconds without progress before a worker is restarted"
    )

    @property
    def pidfile(self) -> Path:
        return Path(self.data_dir) / "transfer-daemon.pid"


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = _setting("", _database_url, "Postgres URL; empty = embedded", "TRANSFERS_DATABASE_URL")
    pool_min: int = _setting(1, _int(0, 100), "connections kept open per process")
    pool_max: int = _setting(10, _int(1, 100), "connections at most per process")


@dataclass(frozen=True)
class ApiConfig:
    host: str = _setting("127.0.0.1", _str, "bind address (loopback unless you mean it)")
    port: int = _setting(8080, _int(0, 65535), "bind port", "TRANSFERS_API_PORT")
    data_source: str = _setting(
        "persistent", _choice(*DATA_SOURCES), "persistent | upstream", "TRANSFERS_DATA_SOURCE"
    )
    workers: int = _setting(2, _int(1, 64), "WSGI worker processes")
    threads: int = _setting(1, _int(1, 256), "threads per WSGI worker; 1 = sync workers, more = gthread")
    stale_after_s: int = _setting(300, _int(1), "lag beyond which data is reported stale")
    statement_timeout_s: float = _setting(
        2.0, _float(0), "seconds an API query may run before Postgres cancels it (answered 503, Retry-After)"
    )


@dataclass(frozen=True)
class IngestConfig:
    concurrency: int = _setting(1, _int(1, 32), "jobs run at once per worker", "TRANSFERS_INGEST_CONCURRENCY")
    retention_days: int = _setting(90, _int(90), "partitions older than this are dropped (>= 90)")


@dataclass(frozen=True)
class CacheConfig:
    backend: str = _setting("diskcache", _choice("diskcache", "redis"), "diskcache | redis", "TRANSFERS_CACHE_BACKEND")
    url: str = _setting("", _redis_url, "redis:// URL when backend = redis", "TRANSFERS_CACHE_URL")
    prefix: str = _setting("transfer-daemon:", _str, "prefix of every Redis key (one per deployment)",
                           "TRANSFERS_CACHE_PREFIX")
    ttl_s: int = _setting(3600, _int(1), "seconds a warm page is kept at most")


@dataclass(frozen=True)
class AlertsConfig:
    lag_threshold_s: int = _setting(300, _int(1), "IngestLag fires above this many seconds of ingest lag")
    errors_per_min: int = _setting(5, _int(0), "IngestErrors fires above this many failed jobs in a minute")
    evaluate_interval_s: float = _setting(15.0, _float(0), "seconds between alert evaluations")
    webhook_url_env: str = _setting("", _env_name, "NAME of the env var holding a Slack-compatible webhook URL")
    alertmanager_url: str = _setting("", _url, "Prometheus Alertmanager base URL (POST /api/v2/alerts)")
    smtp_url_env: str = _setting(
        "", _env_name, "NAME of the env var holding smtp[s]://user:pass@host:port"
    )
    email_to: tuple[str, ...] = _setting((), _emails, "alert mail recipients")
    email_from: str = _setting("", _email, "alert mail sender address")


@dataclass(frozen=True)
class ChainConfig:
    id: int = _setting(_MISSING, _int(1), "EVM chain id")
    name: str = _setting(_MISSING, _name, "short name used in logs and commands")
    kind: str = _setting(_MISSING, _choice(*KINDS), "etherscan | etherscan_logs | rpc_logs")
    contracts: tuple[str, ...] = _setting(_MISSING, _contracts, "token contract addresses")
    base_url: str = _setting("", _url, "explorer API URL (etherscan kinds)")
    rpc_url: str = _setting("", _url, "JSON-RPC URL (rpc_logs)")
    api_key_env: str = _setting("", _env_name, "NAME of the env var holding the API key")
    rate_limit_per_sec: float = _setting(3.0, _float(0), "upstream calls per second, shared per key")
    rate_limit_burst: int = _setting(1, _int(1), "calls allowed back to back")
    poll_interval_s: int = _setting(30, _int(1), "seconds between sync cycles")
    page_size: int = _setting(1000, _int(1, 10000), "records per explorer call")
    max_pages_per_cycle: int = _setting(5, _int(1), "explorer calls per sync cycle at most")
    backfill_days: int = _setting(90, _int(0), "how far back to fill")
    start_block: int | None = _setting(None, _optional_int(0), "fill back to this block instead")
    confirmations: int = _setting(12, _int(0), "recent blocks re-checked for reorgs")
    max_reorg_depth: int = _setting(64, _int(1), "deeper reorgs halt the chain with an alert")
    log_window_blocks: int = _setting(2000, _int(1), "eth_getLogs block window (rpc_logs)")
    request_timeout_s: float = _setting(20.0, _float(0), "seconds per upstream call")
    data_source: str | None = _setting(None, _optional_choice(*DATA_SOURCES), "per-chain override")
    daily_cap_reset_utc: str = _setting(
        "00:00", _utc_time, "UTC time (HH:MM) the explorer's daily quota resets"
    )

    def api_key(self, environ: Mapping[str, str] | None = None) -> str:
        """The secret itself, read from the named variable at the moment of use."""
        if not self.api_key_env:
            return ""
        return (environ if environ is not None else os.environ).get(self.api_key_env, "")

    @property
    def limiter_key(self) -> str:
        """What the shared rate limiter is keyed by: the key's variable name, else the URL."""
        return self.api_key_env or self.rpc_url or self.base_url


@dataclass(frozen=True)
class Config:
    daemon: DaemonConfig
    database: DatabaseConfig
    api: ApiConfig
    ingest: IngestConfig
    cache: CacheConfig
    alerts: AlertsConfig
    chains: tuple[ChainConfig, ...]
    path: str = ""

    def chain(self, name_or_id: str | int) -> ChainConfig:
        for chain in self.chains:
            if chain.name == name_or_id or str(chain.id) == str(name_or_id):
                return chain
        raise KeyError(name_or_id)

    def data_source_for(self, chain: ChainConfig) -> str:
        return chain.data_source or self.api.data_source


_SECTIONS = {
    "daemon": DaemonConfig,
    "database": DatabaseConfig,
    "api": ApiConfig,
    "ingest": IngestConfig,
    "cache": CacheConfig,
    "alerts": AlertsConfig,
}


def _build(cls: type, prefix: str, table: Any, environ: Mapping[str, str]):
    if not isinstance(table, dict):
        raise ConfigError(prefix, table, "expected a table")
    declared = {f.name: f for f in fields(cls)}
    for key in table:
        if key not in declared:
            raise ConfigError(f"{prefix}.{key}", table[key], "unknown key")
    values = {}
    for name, spec in declared.items():
        key = f"{prefix}.{name}"
        env = spec.metadata["env"]
        raw = table.get(name, _MISSING)
        if env and environ.get(env, "") != "":
            raw, key = environ[env], f"{key} (env {env})"
        if raw is _MISSING:
            if spec.default is _MISSING:
                raise ConfigError(key, _MISSING, "required")
            values[name] = spec.default
        else:
            values[name] = spec.metadata["convert"](key, raw)
    return cls(**values)


def _check_chain(chain: ChainConfig, prefix: str) -> None:
    if chain.kind == "rpc_logs" and not chain.rpc_url:
        raise ConfigError(f"{prefix}.rpc_url", chain.rpc_url, "required for kind rpc_logs")
    if chain.kind != "rpc_logs" and not chain.base_url:
        raise ConfigError(f"{prefix}.base_url", chain.base_url, f"required for kind {chain.kind}")
    if "apikey=" in (chain.base_url + chain.rpc_url).lower():
        raise ConfigError(f"{prefix}.base_url", "<redacted>", "put the key in api_key_env, not the URL")
    if chain.page_size * 1 > 10000:
        raise ConfigError(f"{prefix}.page_size", chain.page_size, "must be <= 10000")


def _check_alerts(alerts: AlertsConfig) -> None:
    if alerts.email_to and not alerts.email_from:
        raise ConfigError("alerts.email_from", alerts.email_from, "required when alerts.email_to is set")
    if alerts.email_to and not alerts.smtp_url_env:
        raise ConfigError("alerts.smtp_url_env", alerts.smtp_url_env, "required when alerts.email_to is set")
    if alerts.smtp_url_env and not alerts.email_to:
        raise ConfigError("alerts.email_to", list(alerts.email_to), "required when alerts.smtp_url_env is set")


def parse_config(document: Mapping[str, Any], environ: Mapping[str, str], path: str = "") -> Config:
    """Validate a parsed TOML document plus environment into a frozen Config."""
    for key in document:
        if key not in _SECTIONS and key != "chains":
            raise ConfigError(key, document[key], "unknown section")
    sections = {
        name: _build(cls, name, document.get(name, {}), environ) for name, cls in _SECTIONS.items()
    }
    raw_chains = document.get("chains", [])
    if not isinstance(raw_chains, list) or not raw_chains:
        raise ConfigError("chains", raw_chains, "expected at least one [[chains]] table")
    chains = []
    for i, table in enumerate(raw_chains):
        chain = _build(ChainConfig, f"chains[{i}]", table, {})
        _check_chain(chain, f"chains[{i}]")
        for earlier in chains:
            if earlier.id == chain.id:
                raise ConfigError(f"chains[{i}].id", chain.id, "duplicate chain id")
            if earlier.name == chain.name:
                raise ConfigError(f"chains[{i}].name", chain.name, "duplicate chain name")
        chains.append(chain)
    if sections["cache"].backend == "redis" and not sections["cache"].url:
        raise ConfigError("cache.url", "", "required when cache.backend = redis")
    if sections["database"].pool_min > sections["database"].pool_max:
        raise ConfigError("database.pool_min", sections["database"].pool_min, "exceeds pool_max")
    _check_alerts(sections["alerts"])
    return Config(chains=tuple(chains), path=path, **sections)


def resolve_config_path(path: str | os.PathLike | None, environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    return Path(path or environ.get("TRANSFERS_CONFIG") or DEFAULT_CONFIG_PATH)


#: What this process took into `os.environ` from `.env` files, name -> value. The environment is
#: process-wide, and so is this record: it tells a variable the process was started with (which
#: a `.env` never overrides) from one an earlier load put there (which the next load replaces, or
#: removes when the file no longer sets it), so a reload picks up a fixed key from the `.env`.
_from_dotenv: dict[str, str] = {}


def _export_dotenv(values: Mapping[str, str]) -> None:
    for name in [name for name in _from_dotenv if name not in values]:
        if os.environ.get(name) == _from_dotenv.pop(name):
            del os.environ[name]
    for name, value in values.items():
        if name in os.environ and name not in _from_dotenv:
            continue  # set in the environment the process was started with: it wins
        os.environ[name] = value
        _from_dotenv[name] = value


def load_config(path: str | os.PathLike | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read the TOML file, the `.env` beside it and the environment.

    Values from `.env` are also exported into `os.environ`, so secrets named by `api_key_env`
    resolve the same way in every child process forked afterwards. A later load (a reload)
    exports the file's current values over those an earlier load exported, never over the
    variables the process was started with: process environment > `.env` > TOML.
    """
    config_path = resolve_config_path(path, environ)
    try:
        with open(config_path, "rb") as handle:
            document = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError("--config", str(config_path), "file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("--config", str(config_path), f"not valid TOML: {exc}") from None
    dotenv_file = config_path.parent / ".env"
    from_dotenv = {k: v for k, v in dotenv_values(dotenv_file).items() if v is not None}
    if environ is None:
        _export_dotenv(from_dotenv)
        merged: Mapping[str, str] = os.environ
    else:
        merged = {**from_dotenv, **environ}
    return parse_config(document, merged, str(config_path))


def dotenv_world_readable(config: Config) -> Path | None:
    """The `.env` beside the config file when others can read it (the CLI warns)."""
    candidate = Path(config.path).parent / ".env" if config.path else None
    if candidate and candidate.exists() and candidate.stat().st_mode & 0o004:
        return candidate
    return None


def settings_reference() -> list[tuple[str, str, Any, str | None, str]]:
    """(key, type, default, env, help) for every declared setting — feeds the README table."""
    rows = []
    for section, cls in [*_SECTIONS.items(), ("chains[]", ChainConfig)]:
        for f in fields(cls):
            default = None if f.default is _MISSING else f.default
            rows.append((f"{section}.{f.name}", str(f.type), default, f.metadata["env"], f.metadata["help"]))
    return rows
