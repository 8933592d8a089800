"""Named exceptions carrying context. Depends on nothing of ours: a URL given to an error is
shown as given, so callers pass it redacted (`upstream.http` does)."""

from __future__ import annotations


class TransferDaemonError(Exception):
    """Base class: an error the CLI reports in one line and exits 1 on."""


class StoreNotReady(TransferDaemonError):
    """The database cannot be reached or its schema is not migrated yet."""


class UpstreamError(TransferDaemonError):
    """An upstream call failed after its retries, or cannot be retried."""

    def __init__(self, message: str, *, chain: str = "", url: str = "", attempt: int = 0,
                 retryable: bool = True) -> None:
        self.chain = chain
        self.url = url
        self.attempt = attempt
        self.retryable = retryable
        where = f" [{chain}]" if chain else ""
        super().__init__(f"{message}{where} {self.url} (attempt {attempt})".strip())


class RateLimited(UpstreamError):
    """The upstream said we are calling too fast (HTTP 429 or an explorer rate-limit answer)."""

    def __init__(self, message: str, *, retry_after: float | None = None, **context) -> None:
        super().__init__(message, **context)
        self.retry_after = retry_after


class CallsRefused(UpstreamError):
    """The upstream will refuse every call until something changes (a quota resets, an operator
    fixes the settings): never retried; the chain pauses its upstream calls instead."""

    def __init__(self, message: str, **context) -> None:
        context.pop("retryable", None)
        super().__init__(message, retryable=False, **context)


class InvalidApiKey(CallsRefused):
    """The key was refused: calls pause until the key is fixed (alert-level event)."""


class DailyCapReached(CallsRefused):
    """The key has used its calls for the day; `reset_at` (unix seconds) when the upstream says."""

    def __init__(self, message: str, *, reset_at: float | None = None, **context) -> None:
        super().__init__(message, **context)
        self.reset_at = reset_at


class EndpointRefused(CallsRefused):
    """The endpoint will not serve this chain as configured: a deprecated API version, a chain id
    it does not know, or a chain the key's plan does not cover."""


class RangeTooWide(UpstreamError):
    """A JSON-RPC provider refused an eth_getLogs block range; `suggested` when it offered one."""

    def __init__(self, message: str, *, suggested: tuple[int, int] | None = None,
                 limit: int | None = None, **context) -> None:
        super().__init__(message, **context)
        self.suggested = suggested
        self.limit = limit


class ResultWindowExceeded(UpstreamError):
    """An explorer refused page x offset > 10,000: narrow the block window instead."""


class AlreadyRunning(TransferDaemonError):
    """A second `start` on a data directory whose supervisor is alive."""
