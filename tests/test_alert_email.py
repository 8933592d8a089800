"""Alert mail to a real SMTP server (aiosmtpd on loopback): plain, STARTTLS with login, implicit TLS, retries."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterator
from email import message_from_string, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from alert_receivers import MailReceiver, self_signed_tls, wait_until
from net_support import free_port

from transfer_daemon.daemon.alert_delivery import AlertDispatcher, RetryPolicy
from transfer_daemon.daemon.alert_sinks import EmailSink
from transfer_daemon.daemon.alerts import AlertTransition

FAST = RetryPolicy(initial_s=0.05, maximum_s=0.2, resend_interval_s=3600.0)
FIRED = AlertTransition("WorkerFatal", "cronos", 25, "firing", "FATAL", None, 1_700_000_000.0, None,
                        "worker[cronos] is FATAL: the supervisor gave up restarting it after repeated exits")
RESOLVED = AlertTransition("WorkerFatal", "cronos", 25, "resolved", "RUNNING", None, 1_700_000_000.0,
                           1_700_000_900.0, "worker[cronos] is RUNNING")
PASSWORD = "mail-Pa55word-XYZ"
TO = ["ops@example.com", "oncall@example.org"]


@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    contexts = self_signed_tls(Path(tmp_path_factory.mktemp("tls")))
    if contexts is None:
        pytest.skip("no openssl command to make a test certificate: STARTTLS and smtps:// are not exercised")
    return contexts


@pytest.fixture
def servers() -> Iterator[list[MailReceiver]]:
    started: list[MailReceiver] = []
    yield started
    for server in started:
        server.stop()


def _serve(servers: list, **kwargs) -> MailReceiver:
    server = MailReceiver(**kwargs).start()
    servers.append(server)
    return server


def _deliver(sink: EmailSink, *transitions: AlertTransition) -> AlertDispatcher:
    dispatcher = AlertDispatcher([sink], policy=FAST)
    dispatcher.start()
    dispatcher.deliver(transitions)
    return dispatcher


def _parsed(server: MailReceiver) -> list[EmailMessage]:
    return [message_from_string(m["content"], policy=policy.default) for m in server.messages]


def test_plain_smtp_gets_one_mail_per_transition(servers) -> None:
    server = _serve(servers)
    sink = EmailSink(f"smtp://127.0.0.1:{server.port}", "daemon@example.com", TO)
    dispatcher = _deliver(sink, FIRED)
    dispatcher.deliver([RESOLVED])
    wait_until(lambda: len(server.messages) == 2, what="two mails")
    dispatcher.stop(timeout_s=1.0)
    fired, resolved = _parsed(server)
    assert fired["Subject"] == "[transfer-daemon] FIRING WorkerFatal cronos"
    assert resolved["Subject"] == "[transfer-daemon] RESOLVED WorkerFatal cronos"
    body = fired.get_content().replace("\r\n", "\n")  # as sent on the wire
    assert body.startswith(FIRED.summary + "\n\n") and "threshold: -\n" in body
    assert "ended:     2023-11-14T22:28:20Z" in resolved.get_content()
    assert server.messages[0]["to"] == TO and server.messages[0]["from"] == "daemon@example.com"
    assert not server.messages[0]["tls"]


def test_credentials_are_never_sent_without_tls(servers, caplog) -> None:
    server = _serve(servers, credentials=("alerts", PASSWORD))
    sink = EmailSink(f"smtp://alerts:{PASSWORD}@127.0.0.1:{server.port}", "daemon@example.com", TO)
    dispatcher = _deliver(sink, FIRED)
    wait_until(lambda: dispatcher.stats()["email"].failed_attempts >= 2, what="refused attempts")
    dispatcher.stop(timeout_s=1.0)
    assert server.messages == []
    assert any("offers no STARTTLS; credentials are not sent in clear" in r.getMessage() for r in caplog.records)
    assert PASSWORD not in caplog.text


def test_starttls_then_login_when_the_server_offers_it(servers, tls, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    server_tls, client_tls = tls
    server = _serve(servers, tls=server_tls, credentials=("alerts@example.com", PASSWORD))
    url = f"smtp://alerts%40example.com:{PASSWORD}@127.0.0.1:{server.port}"
    dispatcher = _deliver(EmailSink(url, "daemon@example.com", TO, ssl_context=client_tls), FIRED)
    wait_until(lambda: server.messages, what="a mail over STARTTLS")
    dispatcher.stop(timeout_s=1.0)
    assert server.messages[0]["tls"] and server.messages[0]["login"] == "alerts@example.com"
    assert PASSWORD not in caplog.text


def test_a_wrong_password_is_an_error_that_does_not_show_it(servers, tls, caplog) -> None:
    server_tls, client_tls = tls
    server = _serve(servers, tls=server_tls, credentials=("alerts", "the-right-one"))
    sink = EmailSink(f"smtp://alerts:{PASSWORD}@127.0.0.1:{server.port}", "daemon@example.com", TO,
                     ssl_context=client_tls)
    dispatcher = _deliver(sink, FIRED)
    wait_until(lambda: dispatcher.stats()["email"].failed_attempts >= 1, what="a refused login")
    dispatcher.stop(timeout_s=1.0)
    assert server.messages == []
    assert any("SMTPAuthenticationError" in r.getMessage() for r in caplog.records)
    assert PASSWORD not in caplog.text


def test_an_untrusted_certificate_is_refused(servers, tls) -> None:
    server_tls, _ = tls
    server = _serve(servers, tls=server_tls)
    dispatcher = _deliver(EmailSink(f"smtp://127.0.0.1:{server.port}", "daemon@example.com", TO), FIRED)
    wait_until(lambda: dispatcher.stats()["email"].failed_attempts >= 1, what="a refused handshake")
    dispatcher.stop(timeout_s=1.0)
    assert server.messages == []


def test_smtps_is_implicit_tls(servers, tls) -> None:
    server_tls, client_tls = tls
    server = _serve(servers, tls=server_tls, implicit=True, credentials=("alerts", PASSWORD))
    sink = EmailSink(f"smtps://alerts:{PASSWORD}@127.0.0.1:{server.port}", "daemon@example.com", TO,
                     ssl_context=client_tls)
    dispatcher = _deliver(sink, FIRED)
    wait_until(lambda: server.messages, what="a mail over implicit TLS")
    dispatcher.stop(timeout_s=1.0)
    assert server.messages[0]["login"] == "alerts"


def test_a_mail_server_that_is_down_gets_the_mail_once_it_is_back(servers) -> None:
    port = free_port()
    dispatcher = _deliver(EmailSink(f"smtp://127.0.0.1:{port}", "daemon@example.com", TO), FIRED)
    wait_until(lambda: dispatcher.stats()["email"].failed_attempts >= 2, what="refused connections")
    server = _serve(servers, port=port)
    wait_until(lambda: server.messages, what="the mail after the server came back")
    dispatcher.stop(timeout_s=1.0)
    assert len(server.messages) == 1
