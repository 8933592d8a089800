"""Pure decisions for a chain whose upstream refuses every call until something changes.

A daily call cap lasts until the key's quota resets (`daily_cap_reset_utc`, UTC midnight by
default). A refused key, a deprecated endpoint or a chain the endpoint does not serve lasts until
the chain's upstream settings or secret change (a reload restarts the worker with them), or until
an operator runs `transfer-daemon resume`. Meanwhile the chain makes no upstream call, except, while
capped, one probe an hour (a quota may reset earlier than configured) and one at the reset.
Retrying such answers at every run would cost a call per job run and an error event each: tens of
thousands a day per chain for nothing.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from transfer_daemon.config import ChainConfig
from transfer_daemon.errors import CallsRefused, DailyCapReached, InvalidApiKey
from transfer_daemon.model import Pause

DAILY_CAP = "daily_cap"
INVALID_KEY = "invalid_key"
ENDPOINT_REFUSED = "endpoint_refused"
#: A capped chain asks again at most this often, so a quota that resets early is noticed.
PROBE_INTERVAL_S = 3600.0
#: What the next upstream-calling run may do.
CALL, PROBE, WAIT = "call", "probe", "wait"


def reason_for(error: CallsRefused) -> str:
    if isinstance(error, DailyCapReached):
        return DAILY_CAP
    if isinstance(error, InvalidApiKey):
        return INVALID_KEY
    return ENDPOINT_REFUSED


def next_reset(now: float, reset_utc: str) -> float:
    """The first moment after `now` at the UTC time of day `reset_utc` ("HH:MM")."""
    hours, minutes = (int(part) for part in reset_utc.split(":"))
    moment = datetime.fromtimestamp(now, UTC).replace(hour=hours, minute=minutes, second=0, microsecond=0)
    if moment.timestamp() <= now:
        moment += timedelta(days=1)
    return moment.timestamp()


def upstream_digest(chain: ChainConfig, api_key: str) -> str:
    """A digest of what an upstream's refusal can depend on: where the chain's calls go and with
    which key. A pause taken under one digest is lifted by a worker that runs under another."""
    identity = (chain.id, chain.kind, chain.base_url, chain.rpc_url, chain.api_key_env, api_key)
    return hashlib.sha256(repr(identity).encode()).hexdigest()[:16]


def pause_for(error: CallsRefused, now: float, reset_utc: str, config: str) -> Pause:
    """The pause a refusal starts: until the quota resets, or until the settings change."""
    reason = reason_for(error)
    until = None
    if reason == DAILY_CAP:
        reset_at = getattr(error, "reset_at", None)
        until = reset_at if reset_at is not None and reset_at > now else next_reset(now, reset_utc)
    return Pause(reason, since=now, until=until, message=str(error)[:500], config=config)


def next_step(pause: Pause | None, now: float) -> str:
    """CALL when not paused; PROBE when a capped chain may check whether its quota is back (at the
    reset, and once an hour before it); WAIT otherwise."""
    if pause is None:
        return CALL
    if pause.reason != DAILY_CAP:
        return WAIT
    if pause.until is not None and now >= pause.until:
        return PROBE
    last = pause.probed_at if pause.probed_at is not None else pause.since
    return PROBE if now - last >= PROBE_INTERVAL_S else WAIT


def refused_again(pause: Pause, now: float, reset_utc: str) -> Pause:
    """The same refusal came back (a probe, or a call in flight when the pause began): the episode
    goes on. A quota still spent after its expected reset is expected at the next one."""
    until = pause.until
    if until is not None and now >= until:
        until = next_reset(now, reset_utc)
    return replace(pause, probed_at=now, until=until)


def lifted(pause: Pause, config: str) -> bool:
    """Whether the settings or secret changed since the refusal (then calls may try again)."""
    return pause.config != config
