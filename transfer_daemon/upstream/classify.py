"""What an upstream answer means. Pure: bodies and error objects in, a small verdict out.

Explorers (Etherscan v1/v2, Blockscout, the other *scan sites) answer nearly everything with
HTTP 200 and `"status": "0"`; the meaning is in the `message`/`result` text. JSON-RPC providers
refuse wide `eth_getLogs` ranges with codes that disagree across providers, so the message text
(and `data`) is what is classified. The wordings matched here are the ones collected in
`upstream-samples/` and the providers' sources.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

# Explorer verdicts.
ROWS = "rows"
EMPTY = "empty"
RATE_LIMITED = "rate_limited"
DAILY_LIMIT = "daily_limit"
INVALID_KEY = "invalid_key"
RESULT_WINDOW = "result_window"
QUERY_TIMEOUT = "query_timeout"
ENDPOINT = "endpoint"  # deprecated API version, unknown chain id, chain not in the key's plan: pause
FATAL = "fatal"  # a request the upstream will not answer (bad address): needs an operator
MALFORMED = "malformed"  # HTML page, truncated JSON, wrong types: transient more often than not

# JSON-RPC refusal kinds.
RANGE = "range"
BEYOND_HEAD = "beyond_head"
OTHER = "other"


@dataclass(frozen=True, slots=True)
class ExplorerAnswer:
    kind: str
    result: Any = None
    message: str = ""
    warning: str = ""  # set when data came back but the explorer complained (soft invalid key)
    retry_after: float | None = None


def parse_body(body: bytes | str) -> tuple[Any, str]:
    """JSON body -> (payload, ""), or (None, why it is not JSON)."""
    try:
        return json.loads(body), ""
    except (ValueError, UnicodeDecodeError):
        head = (body[:200].decode("utf-8", "replace") if isinstance(body, bytes) else body[:200]).lstrip().lower()
        if head.startswith(("<!doctype", "<html", "<")):
            return None, "HTML page instead of JSON"
        if not head:
            return None, "empty body"
        return None, "truncated or invalid JSON"


def classify_explorer_body(body: bytes | str) -> ExplorerAnswer:
    """An explorer list action's (`tokentx`, `getLogs`) HTTP-200 body -> its verdict."""
    payload, problem = parse_body(body)
    if problem:
        return ExplorerAnswer(MALFORMED, message=problem)
    return classify_explorer(payload)


def _text(payload: dict) -> str:
    message = payload.get("message")
    result = payload.get("result")
    return " ".join(part for part in (message, result) if isinstance(part, str))


def classify_explorer(payload: Any) -> ExplorerAnswer:
    """A decoded explorer answer for a list action -> its verdict."""
    if not isinstance(payload, dict) or "status" not in payload:
        return ExplorerAnswer(MALFORMED, message="not an explorer envelope (no status)")
    status, result, text = payload.get("status"), payload.get("result"), _text(payload)
    lowered = text.lower()
    if status == "1":
        warning = text if "invalid api key" in lowered or "missing" in lowered else ""
        if isinstance(result, list):
            return ExplorerAnswer(ROWS, result=result, message=text, warning=warning)
        return ExplorerAnswer(MALFORMED, message=f"status 1 with a {type(result).__name__} result", warning=warning)
    if status != "0":
        return ExplorerAnswer(MALFORMED, message=f"unexpected status {str(status)[:20]!r}")
    return _classify_refusal(lowered, text, result)


#: Explorer answers that refuse the chain itself, whatever the request: Etherscan v2's unknown
#: `chainid` and its free tier's excluded chains.
_ENDPOINT_MARKERS = ("unsupported chainid", "not supported for this chain", "chain not supported",
                     "invalid chainid")


def _classify_refusal(lowered: str, text: str, result: Any) -> ExplorerAnswer:
    if "invalid api key" in lowered or "missing/invalid api key" in lowered:
        return ExplorerAnswer(INVALID_KEY, message=text)
    if "daily" in lowered and "limit" in lowered:
        return ExplorerAnswer(DAILY_LIMIT, message=text)
    if "rate limit" in lowered:
        return ExplorerAnswer(RATE_LIMITED, message=text, retry_after=_per_second_pause(lowered))
    if "result window" in lowered or "pageno x offset" in lowered:
        return ExplorerAnswer(RESULT_WINDOW, message=text)
    if "query timeout" in lowered:
        return ExplorerAnswer(QUERY_TIMEOUT, message=text)
    if isinstance(result, list) and not result and re.search(r"\bno\b.*\bfound\b", lowered):
        return ExplorerAnswer(EMPTY, result=[], message=text)
    if "deprecated" in lowered and "v1" in lowered:
        return ExplorerAnswer(ENDPOINT, message=f"{text} (set base_url to https://api.etherscan.io/v2/api)")
    if any(marker in lowered for marker in _ENDPOINT_MARKERS):
        return ExplorerAnswer(ENDPOINT, message=text)
    return ExplorerAnswer(FATAL, message=text or "status 0 without a message")


def _per_second_pause(lowered: str) -> float:
    """'Max calls per sec rate limit reached (3/sec)' -> wait one slot (1/3 s); otherwise 1 s."""
    match = re.search(r"\((\d+)/sec\)", lowered)
    return 1.0 / int(match.group(1)) if match and int(match.group(1)) > 0 else 1.0


def classify_proxy(payload: Any) -> tuple[str, Any]:
    """An explorer `module=proxy` answer -> (ROWS, result) or (verdict kind, message).

    Proxy answers are JSON-RPC shaped (`{"jsonrpc", "id", "result"}`), but the explorer's own
    refusals (rate limit, key) still come in its `status`/`message`/`result` envelope.
    """
    if isinstance(payload, dict) and "status" in payload and "jsonrpc" not in payload:
        answer = classify_explorer(payload)
        return answer.kind, answer.message
    if not isinstance(payload, dict):
        return MALFORMED, "not a JSON-RPC object"
    if "error" in payload:
        error = payload["error"]
        refusal = classify_rpc_error(error if isinstance(error, dict) else {"message": str(error)})
        return refusal.kind if refusal.kind in (RATE_LIMITED, INVALID_KEY) else FATAL, refusal.message
    if "result" not in payload:
        return MALFORMED, "JSON-RPC answer without result"
    if isinstance(payload["result"], str) and "rate limit" in payload["result"].lower():
        return RATE_LIMITED, payload["result"]
    return ROWS, payload["result"]


@dataclass(frozen=True, slots=True)
class RpcRefusal:
    kind: str  # RANGE | BEYOND_HEAD | RATE_LIMITED | INVALID_KEY | OTHER
    message: str
    limit: int | None = None  # most blocks per request, when the provider says
    suggested: tuple[int, int] | None = None  # a block range the provider says will work


_LIMIT_PATTERNS = tuple(re.compile(p) for p in (
    r"blocks distance:\s*([\d,]+)",  # Cronos / Ethermint / Kava
    r"range \d+ exceeds limit of ([\d,]+)",  # Infura
    r"limited to an? ([\d,]+k?) (?:block )?range",  # QuickNode
    r"bigger than range limit ([\d,]+)",  # Tenderly
    r"up to an? ([\d,]+k?) block range",  # Alchemy
    r"maximum is set to ([\d,]+)",  # Avalanche
))
_RANGE_MARKERS = (
    "block range", "blocks distance", "range limit", "exceeds limit", "limited to", "too many blocks",
    "query returned more than", "logs matched by query", "log response size exceeded", "too wide",
    "response size", "query timeout",
)
_RATE_MARKERS = ("rate limit", "request rate", "too many requests", "exceeded your", "capacity", "throttl")
_KEY_MARKERS = ("invalid api key", "invalid project id", "unauthorized", "must be authenticated", "api key")
_SUGGESTED = re.compile(r"\[\s*(0x[0-9a-f]+)\s*,\s*(0x[0-9a-f]+)\s*\]")


def _error_text(error: dict) -> str:
    message = error.get("message") or error.get("message_prefix") or ""
    data = error.get("data")
    if isinstance(data, dict | list):
        data = json.dumps(data)
    return f"{message} {data}" if data else str(message)


def classify_rpc_error(error: dict) -> RpcRefusal:
    """A JSON-RPC `error` object -> what to do about it (split, clip to head, back off, alert)."""
    text = _error_text(error)
    lowered = text.lower()
    if "beyond current head" in lowered:
        return RpcRefusal(BEYOND_HEAD, text)
    if any(marker in lowered for marker in _RANGE_MARKERS):
        return RpcRefusal(RANGE, text, limit=_limit(lowered), suggested=_suggested(lowered, error.get("data")))
    if error.get("code") == 429 or any(marker in lowered for marker in _RATE_MARKERS):
        return RpcRefusal(RATE_LIMITED, text)
    if any(marker in lowered for marker in _KEY_MARKERS):
        return RpcRefusal(INVALID_KEY, text)
    return RpcRefusal(OTHER, text)


def _limit(lowered: str) -> int | None:
    for pattern in _LIMIT_PATTERNS:
        match = pattern.search(lowered)
        if match:
            digits = match.group(1).replace(",", "")
            return int(digits[:-1]) * 1000 if digits.endswith("k") else int(digits)
    return None


def _suggested(lowered: str, data: Any) -> tuple[int, int] | None:
    if isinstance(data, dict) and isinstance(data.get("from"), str) and isinstance(data.get("to"), str):
        try:
            return int(data["from"], 16), int(data["to"], 16)
        except ValueError:
            pass
    match = _SUGGESTED.search(lowered)
    return (int(match.group(1), 16), int(match.group(2), 16)) if match else None
