"""Delivery to real HTTP receivers on loopback: exactly once, in order, retried, never blocking, no secret logged."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest
from alert_receivers import BlackHole, HttpReceiver, wait_until
from net_support import free_port

from transfer_daemon.daemon.alert_delivery import AlertDispatcher, RetryPolicy
from transfer_daemon.daemon.alert_sinks import AlertmanagerSink, WebhookSink
from transfer_daemon.daemon.alerts import AlertTransition

FAST = RetryPolicy(initial_s=0.05, maximum_s=0.2, resend_interval_s=3600.0)
FIRED = AlertTransition("IngestLag", "ethereum", 1, "firing", 412.0, 300, 1_700_000_000.0, None,
                        "ethereum ingest lag 412 s exceeds 300 s")
RESOLVED = AlertTransition("IngestLag", "ethereum", 1, "resolved", 12.0, 300, 1_700_000_000.0, 1_700_000_600.0,
                           "ethereum ingest lag 12 s is within 300 s")
TOKEN = "SECRETtokenABCDEFGHIJKLMNOP0123"
HOOK_PATH = f"/services/T0AAAAAAA/B0BBBBBBB/{TOKEN}"


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    server = HttpReceiver().start()
    yield server
    server.stop()


@pytest.fixture
def dispatchers() -> Iterator[list[AlertDispatcher]]:
    started: list[AlertDispatcher] = []
    yield started
    for dispatcher in started:
        dispatcher.stop(timeout_s=1.0)


def _start(dispatchers: list, *args, **kwargs) -> AlertDispatcher:
    dispatcher = AlertDispatcher(*args, **kwargs)
    dispatcher.start()
    dispatchers.append(dispatcher)
    return dispatcher


def test_one_fire_and_one_resolve_reach_each_receiver_exactly_once(receiver, dispatchers, caplog) -> None:
    caplog.set_level(logging.INFO, logger="transfer_daemon")
    events: list[AlertTransition] = []
    dispatcher = _start(dispatchers, [WebhookSink(receiver.url + HOOK_PATH), AlertmanagerSink(receiver.url)],
                        record_event=events.append, policy=FAST)
    dispatcher.deliver([FIRED])
    dispatcher.deliver([RESOLVED])
    wait_until(lambda: len(receiver.posts) == 4 and len(events) == 2, what="four posts and two events")
    time.sleep(0.2)  # nothing more may follow
    hook, am = receiver.bodies(HOOK_PATH), receiver.bodies("/api/v2/alerts")
    assert [b["alerts"][0]["state"] for b in hook] == ["firing", "resolved"]
    assert hook[0]["alerts"][0]["endsAt"] is None and hook[1]["alerts"][0]["endsAt"] == "2023-11-14T22:23:20Z"
    assert [("endsAt" in b[0], b[0]["labels"]["alertname"]) for b in am] == [(False, "IngestLag"), (True, "IngestLag")]
    assert events == [FIRED, RESOLVED]
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if r.getMessage().startswith("alert ")]
    assert lines == [
        ("ERROR", "alert firing name=IngestLag chain=ethereum value=412 threshold=300: "
                  "ethereum ingest lag 412 s exceeds 300 s"),
        ("INFO", "alert resolved name=IngestLag chain=ethereum value=12 threshold=300 after=600s: "
                 "ethereum ingest lag 12 s is within 300 s"),
    ]
    assert all(getattr(r, "chain", None) == "ethereum" for r in caplog.records if r.getMessage().startswith("alert "))
    assert dispatcher.stats()["webhook"].delivered == 2 and dispatcher.stats()["alertmanager"].pending == 0


def test_a_receiver_that_is_down_gets_the_messages_in_order_once_it_is_back(dispatchers, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="transfer_daemon")
    port = free_port()
    dispatcher = _start(dispatchers, [WebhookSink(f"http://127.0.0.1:{port}{HOOK_PATH}")], policy=FAST)
    dispatcher.deliver([FIRED])
    dispatcher.deliver([RESOLVED])
    wait_until(lambda: dispatcher.stats()["webhook"].failed_attempts >= 3, what="failed attempts")
    late = HttpReceiver(port).start()
    try:
        wait_until(lambda: len(late.posts) == 2, what="both messages after the receiver came back")
        assert [b["alerts"][0]["state"] for b in late.bodies()] == ["firing", "resolved"]
    finally:
        late.stop()
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert sum(m.startswith("alert delivery failing sink=webhook chain=ethereum") for m in messages) == 1
    assert sum(m.startswith("alert delivery recovered sink=webhook") for m in messages) == 1
    assert all(TOKEN not in r.getMessage() for r in caplog.records)


def test_an_http_error_answer_is_retried(receiver, dispatchers) -> None:
    receiver.fail_next = 2
    dispatcher = _start(dispatchers, [AlertmanagerSink(receiver.url)], policy=FAST)
    dispatcher.deliver([FIRED])
    wait_until(lambda: receiver.bodies("/api/v2/alerts"), what="the post after two HTTP 500 answers")
    assert dispatcher.stats()["alertmanager"].failed_attempts == 2


def test_a_hanging_receiver_does_not_delay_deliver(dispatchers) -> None:
    hole = BlackHole()
    try:
        dispatcher = _start(dispatchers, [WebhookSink(hole.url + HOOK_PATH, timeout_s=5.0),
                                          AlertmanagerSink(hole.url, timeout_s=5.0)], policy=FAST)
        dispatcher.deliver([FIRED])
        wait_until(lambda: dispatcher.stats()["webhook"].pending == 1, what="the first post in flight")
        started = time.perf_counter()
        for _ in range(50):
            dispatcher.deliver([RESOLVED])
            dispatcher.deliver([FIRED])
        per_call = (time.perf_counter() - started) / 100
        assert per_call < 0.005, f"deliver() took {per_call * 1000:.1f} ms a call with the receiver hanging"
    finally:
        hole.close()


def test_a_full_queue_drops_the_oldest_and_counts_it(caplog) -> None:
    dispatcher = AlertDispatcher([WebhookSink("http://127.0.0.1:9" + HOOK_PATH)],
                                 policy=RetryPolicy(queue_size=10))  # never started: nothing drains
    for i in range(25):
        dispatcher.deliver([AlertTransition("IngestErrors", "ethereum", 1, "firing", i, 5, float(i), None, "x")])
        dispatcher.deliver([AlertTransition("IngestErrors", "ethereum", 1, "resolved", 0, 5, float(i), i + .5, "y")])
    stats = dispatcher.stats()["webhook"]
    assert (stats.dropped, stats.pending) == (40, 10)
    assert sum(r.getMessage().startswith("alert dropped sink=webhook chain=ethereum") for r in caplog.records) == 40


def test_gives_up_on_a_message_after_the_attempt_limit_logged_once(dispatchers, caplog) -> None:
    port = free_port()
    policy = RetryPolicy(initial_s=0.01, maximum_s=0.02, max_attempts=3, resend_interval_s=3600.0)
    dispatcher = _start(dispatchers, [WebhookSink(f"http://127.0.0.1:{port}{HOOK_PATH}")], policy=policy)
    dispatcher.deliver([FIRED])
    wait_until(lambda: dispatcher.stats()["webhook"].gave_up == 1, what="giving up")
    gave_up = [r for r in caplog.records if r.getMessage().startswith("alert delivery gave up")]
    assert len(gave_up) == 1 and gave_up[0].levelno == logging.ERROR
    assert "sink=webhook chain=ethereum alerts=IngestLag:firing after 3 attempt(s)" in gave_up[0].getMessage()
    assert dispatcher.stats()["webhook"].failed_attempts == 3
    late = HttpReceiver(port).start()
    try:
        dispatcher.deliver([RESOLVED])
        wait_until(lambda: late.posts, what="the next message once the receiver is back")
        assert [b["alerts"][0]["state"] for b in late.bodies()] == ["resolved"]
    finally:
        late.stop()


def test_alertmanager_alone_gets_what_is_still_firing_again(receiver, dispatchers) -> None:
    policy = RetryPolicy(initial_s=0.05, maximum_s=0.2, resend_interval_s=0.1)
    dispatcher = _start(dispatchers, [WebhookSink(receiver.url + HOOK_PATH), AlertmanagerSink(receiver.url)],
                        policy=policy)
    dispatcher.deliver([FIRED])
    wait_until(lambda: len(receiver.bodies("/api/v2/alerts")) >= 3, what="two re-posts to Alertmanager")
    wait_until(lambda: receiver.bodies(HOOK_PATH), what="the webhook's post (its own thread)")
    assert len(receiver.bodies(HOOK_PATH)) == 1
    assert all(b == receiver.bodies("/api/v2/alerts")[0] for b in receiver.bodies("/api/v2/alerts"))
    dispatcher.deliver([RESOLVED])
    wait_until(lambda: any("endsAt" in b[0] for b in receiver.bodies("/api/v2/alerts")), what="the resolve")
    count = len(receiver.bodies("/api/v2/alerts"))
    time.sleep(0.35)
    assert len(receiver.bodies("/api/v2/alerts")) == count, "nothing is re-sent once nothing fires"
    assert dispatcher.stats()["alertmanager"].resent >= 2 and dispatcher.stats()["webhook"].resent == 0


def test_stop_tries_what_is_queued_once_then_returns(receiver) -> None:
    dispatcher = AlertDispatcher([WebhookSink(receiver.url + HOOK_PATH)], policy=FAST)
    dispatcher.deliver([FIRED])
    dispatcher.deliver([RESOLVED])
    dispatcher.start()
    dispatcher.stop(timeout_s=2.0)
    assert [b["alerts"][0]["state"] for b in receiver.bodies()] == ["firing", "resolved"]


def test_a_failing_event_recorder_is_retried_and_never_raises_into_the_caller(dispatchers) -> None:
    calls: list[AlertTransition] = []

    def record(t: AlertTransition) -> None:
        calls.append(t)
        if len(calls) == 1:
            raise OSError("connection to postgresql://td:db-pass-1@127.0.0.1/td refused")

    dispatcher = _start(dispatchers, [], record_event=record, policy=FAST)
    dispatcher.deliver([FIRED])
    wait_until(lambda: dispatcher.stats()["event"].delivered == 1, what="the event row on the second attempt")
    assert calls == [FIRED, FIRED]


def test_no_secret_reaches_any_log_line_even_at_debug(dispatchers, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    port = free_port()
    am_auth = f"http://alerts:am-pass-77@127.0.0.1:{port}"
    dispatcher = _start(dispatchers, [WebhookSink(f"http://127.0.0.1:{port}{HOOK_PATH}"), AlertmanagerSink(am_auth)],
                        policy=FAST)
    dispatcher.deliver([FIRED])
    wait_until(lambda: dispatcher.stats()["webhook"].failed_attempts >= 2, what="failures with the receiver down")
    late = HttpReceiver(port).start()
    try:
        wait_until(lambda: len(late.posts) == 2, what="both posts")
    finally:
        late.stop()
    text = "\n".join(r.getMessage() for r in caplog.records) + caplog.text
    assert "urllib3" in {r.name.split(".")[0] for r in caplog.records}, "the request lines were logged at DEBUG"
    assert TOKEN not in text and "B0BBBBBBB" not in text and "am-pass-77" not in text


def test_a_replacement_dispatcher_keeps_re_sending_what_still_fires_without_announcing_it(receiver, dispatchers,
                                                                                         caplog) -> None:
    policy = RetryPolicy(initial_s=0.05, maximum_s=0.2, resend_interval_s=0.1)
    dispatcher = _start(dispatchers, [WebhookSink(receiver.url + HOOK_PATH), AlertmanagerSink(receiver.url)],
                        policy=policy, firing=[FIRED])
    wait_until(lambda: receiver.bodies("/api/v2/alerts"), what="a re-post of the adopted alert")
    assert receiver.bodies(HOOK_PATH) == [] and dispatcher.stats()["alertmanager"].delivered == 0
    assert not [r for r in caplog.records if r.getMessage().startswith("alert firing")]
    dispatcher.deliver([RESOLVED])
    wait_until(lambda: any("endsAt" in b[0] for b in receiver.bodies("/api/v2/alerts")), what="the resolve")
    wait_until(lambda: receiver.bodies(HOOK_PATH), what="the resolve on the webhook (its own thread)")
    assert [b["alerts"][0]["state"] for b in receiver.bodies(HOOK_PATH)] == ["resolved"]
