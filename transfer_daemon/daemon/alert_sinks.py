"""Where alert transitions go: a Slack-compatible webhook, Prometheus Alertmanager v2, e-mail, the event log.

A sink's `send(batch)` makes one blocking attempt and raises `DeliveryError` on failure; the
dispatcher calls it from its own thread and retries. Receivers' secrets (the token in a webhook
URL, the SMTP password, Alertmanager basic-auth) never reach a message or a log line: every error
text passes through the sink's `redact`, and urllib3's request-line DEBUG records are scrubbed too.
"""

from __future__ import annotations

import logging
import os
import smtplib
import ssl
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import requests

from transfer_daemon.config import AlertsConfig, ConfigError, redact_url
from transfer_daemon.daemon.alerts import AlertTransition
from transfer_daemon.model import IngestEvent, iso_utc

_MIN_SECRET_LENGTH = 4  # shorter values would garble every line and protect nothing


class DeliveryError(Exception):
    """One delivery attempt failed; the message names no secret."""


class Sink(Protocol):
    name: str
    per_alert: bool  # one send per transition (a mail, an event row) instead of one per batch
    resends: bool  # re-post what is still firing periodically (Alertmanager)

    def send(self, batch: Sequence[AlertTransition]) -> None: ...

    def redact(self, text: str) -> str: ...


class _Secrets(logging.Filter):
    """Replaces known secret values in a text or a log record."""

    def __init__(self) -> None:
        super().__init__()
        self.values: set[str] = set()

    def add(self, *values: str) -> None:
        # a new set, not an update: another thread may be iterating the old one in `redact`
        self.values = self.values | {v for v in values if len(v) >= _MIN_SECRET_LENGTH}

    def redact(self, text: str) -> str:
        for value in sorted(self.values, key=len, reverse=True):
            text = text.replace(value, "***")
        return redact_url(text)

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = self.redact(record.getMessage()), None
        return True


_URLLIB3_SCRUB = _Secrets()
logging.getLogger("urllib3.connectionpool").addFilter(_URLLIB3_SCRUB)


def _url_secrets(url: str) -> list[str]:
    """The parts of a URL that may carry a credential: userinfo, path, query, long path segments."""
    parts = urlsplit(url)
    path_and_query = parts.path + (f"?{parts.query}" if parts.query else "")
    segments = [s for s in parts.path.split("/") if len(s) >= 16]
    return [url, path_and_query if len(parts.path) > 1 else parts.query, parts.query,
            unquote(parts.password or ""), *segments]


# --- payloads --------------------------------------------------------------------------------


def iso(unix_seconds: float | None) -> str | None:
    return None if unix_seconds is None else iso_utc(int(unix_seconds))


def headline(t: AlertTransition) -> str:
    return f"{t.state.upper()} {t.name} {t.chain}"


def one_line(batch: Sequence[AlertTransition]) -> str:
    if len(batch) == 1:
        return f"[transfer-daemon] {headline(batch[0])}: {batch[0].summary}"
    return f"[transfer-daemon] {len(batch)} alert changes: " + "; ".join(headline(t) for t in batch)


def webhook_payload(batch: Sequence[AlertTransition]) -> dict[str, Any]:
    return {"text": one_line(batch), "alerts": [
        {"name": t.name, "state": t.state, "chain": t.chain, "chainId": t.chain_id, "value": t.value,
         "threshold": t.threshold, "startsAt": iso(t.starts_at), "endsAt": iso(t.ends_at), "summary": t.summary}
        for t in batch]}


def alertmanager_payload(batch: Sequence[AlertTransition]) -> list[dict[str, Any]]:
    """Alertmanager's postableAlerts; endsAt only on a resolve (a firing alert has no known end)."""
    alerts = []
    for t in batch:
        alert = {"labels": {"alertname": t.name, "chain": t.chain, "chain_id": str(t.chain_id),
                            "severity": t.severity},
                 "annotations": {"summary": t.summary}, "startsAt": iso(t.starts_at)}
        if t.ends_at is not None:
            alert["endsAt"] = iso(t.ends_at)
        alerts.append(alert)
    return alerts


def email_message(t: AlertTransition, sender: str, recipients: Sequence[str]) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = f"[transfer-daemon] {headline(t)}"
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2])
    fields = [("alert", t.name), ("state", t.state), ("chain", f"{t.chain} (chain id {t.chain_id})"),
              ("severity", t.severity), ("value", t.value), ("threshold", t.threshold),
              ("started", iso(t.starts_at)), ("ended", iso(t.ends_at))]
    message.set_content(t.summary + "\n\n" + "".join(f"{k + ':':<11}{'-' if v is None else v}\n"
                                                     for k, v in fields))
    return message


def alert_event(t: AlertTransition) -> IngestEvent:
    """The `alert` row of the chain's event history for one transition."""
    return IngestEvent(t.chain_id, "alert", f"{t.state} {t.name}: {t.summary}", detail={
        "name": t.name, "state": t.state, "value": t.value, "threshold": t.threshold,
        "startsAt": iso(t.starts_at), "endsAt": iso(t.ends_at)})


# --- sinks -----------------------------------------------------------------------------------


def _post_json(url: str, body: Any, timeout_s: float, secrets: _Secrets) -> None:
    try:
        response = requests.post(url, json=body, timeout=timeout_s)
    except requests.RequestException as exc:
        raise DeliveryError(secrets.redact(f"{type(exc).__name__}: {exc}")) from None
    if not 200 <= response.status_code < 300:
        raise DeliveryError(f"HTTP {response.status_code}: {secrets.redact(response.text[:200])}")


class WebhookSink:
    """Slack-compatible incoming webhook: one POST per batch. The URL is the secret; it is never shown."""

    name, per_alert, resends = "webhook", False, False

    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        self._url, self._timeout_s, self._secrets = url, timeout_s, _Secrets()
        self._secrets.add(*_url_secrets(url))
        _URLLIB3_SCRUB.add(*_url_secrets(url))

    def send(self, batch: Sequence[AlertTransition]) -> None:
        _post_json(self._url, webhook_payload(batch), self._timeout_s, self._secrets)

    def redact(self, text: str) -> str:
        return self._secrets.redact(text)


class AlertmanagerSink:
    """`POST {base}/api/v2/alerts`; `resends` because Alertmanager resolves an alert not re-sent in time."""

    name, per_alert, resends = "alertmanager", False, True

    def __init__(self, base_url: str, timeout_s: float = 10.0) -> None:
        self._url, self._timeout_s, self._secrets = base_url.rstrip("/") + "/api/v2/alerts", timeout_s, _Secrets()
        self._secrets.add(unquote(urlsplit(base_url).password or ""))
        _URLLIB3_SCRUB.add(unquote(urlsplit(base_url).password or ""))

    def send(self, batch: Sequence[AlertTransition]) -> None:
        _post_json(self._url, alertmanager_payload(batch), self._timeout_s, self._secrets)

    def redact(self, text: str) -> str:
        return self._secrets.redact(text)


class EmailSink:
    """One mail per transition over SMTP: `smtp://` upgraded with STARTTLS when the server offers it,
    `smtps://` with implicit TLS. Credentials in the URL are sent only over TLS, never in clear."""

    name, per_alert, resends = "email", True, False

    def __init__(self, url: str, sender: str, recipients: Sequence[str], *, timeout_s: float = 10.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError("expected smtp://[user:password@]host[:port] or smtps://…")
        self._implicit_tls = parts.scheme == "smtps"
        self._host, self._port = parts.hostname, parts.port or (465 if self._implicit_tls else 25)
        self._username, self._password = unquote(parts.username or ""), unquote(parts.password or "")
        self._sender, self._recipients, self._timeout_s = sender, tuple(recipients), timeout_s
        self._ssl_context = ssl_context or ssl.create_default_context()
        self._secrets = _Secrets()
        self._secrets.add(*_url_secrets(url))

    def send(self, batch: Sequence[AlertTransition]) -> None:
        try:
            with self._session() as smtp:
                for t in batch:
                    smtp.send_message(email_message(t, self._sender, self._recipients))
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryError(self.redact(f"{type(exc).__name__}: {exc}")) from None

    def redact(self, text: str) -> str:
        return self._secrets.redact(text)

    @contextmanager
    def _session(self) -> Iterator[smtplib.SMTP]:
        if self._implicit_tls:
            smtp = smtplib.SMTP_SSL(self._host, self._port, timeout=self._timeout_s, context=self._ssl_context)
        else:
            smtp = smtplib.SMTP(self._host, self._port, timeout=self._timeout_s)
        with smtp:
            smtp.ehlo()
            encrypted = self._implicit_tls
            if not encrypted and smtp.has_extn("starttls"):
                smtp.starttls(context=self._ssl_context)
                smtp.ehlo()
                encrypted = True
            if self._username:
                if not encrypted:
                    raise DeliveryError("the SMTP server offers no STARTTLS; credentials are not sent in clear")
                smtp.login(self._username, self._password)
            yield smtp


class EventSink:
    """The `alert` event row, through the caller's `record_event` (run on the dispatcher's thread)."""

    name, per_alert, resends = "event", True, False

    def __init__(self, record_event: Callable[[AlertTransition], None]) -> None:
        self._record_event = record_event

    def send(self, batch: Sequence[AlertTransition]) -> None:
        for t in batch:
            self._record_event(t)

    def redact(self, text: str) -> str:
        return redact_url(text)


def build_sinks(alerts: AlertsConfig, environ: Mapping[str, str] | None = None) -> list[Sink]:
    """The receivers the [alerts] section configures, secrets read from the variables it names.

    Raises ConfigError naming the key when a named variable is empty or holds no usable URL.
    """
    environ = os.environ if environ is None else environ
    sinks: list[Sink] = []
    if alerts.webhook_url_env:
        url = _secret_url(environ, "alerts.webhook_url_env", alerts.webhook_url_env, ("http", "https"))
        sinks.append(WebhookSink(url))
    if alerts.alertmanager_url:
        sinks.append(AlertmanagerSink(alerts.alertmanager_url))
    if alerts.smtp_url_env and alerts.email_to:
        url = _secret_url(environ, "alerts.smtp_url_env", alerts.smtp_url_env, ("smtp", "smtps"))
        sinks.append(EmailSink(url, alerts.email_from, alerts.email_to))
    return sinks


def _secret_url(environ: Mapping[str, str], key: str, variable: str, schemes: tuple[str, ...]) -> str:
    url = environ.get(variable, "")
    parts = urlsplit(url)
    if parts.scheme not in schemes or not parts.hostname:
        expected = " or ".join(f"{s}://" for s in schemes)
        raise ConfigError(key, variable, f"the variable is unset or holds no {expected} URL")
    return url


def alert_secrets(alerts: AlertsConfig, environ: Mapping[str, str] | None = None) -> set[str]:
    """Secret values the [alerts] receivers use, for the log pipeline's redacting filter."""
    environ = os.environ if environ is None else environ
    values: set[str] = set()
    for variable in (alerts.webhook_url_env, alerts.smtp_url_env):
        if variable and environ.get(variable):
            values.update(_url_secrets(environ[variable]))
    values.add(unquote(urlsplit(alerts.alertmanager_url).password or ""))
    return {v for v in values if len(v) >= _MIN_SECRET_LENGTH}
