"""Alert delivery against real HTTP receivers: none lost while a receiver is down, none sent twice,
duplicates suppressed within the cooldown, retries with exponential backoff, payload formats."""

from __future__ import annotations

import threading
import time

import pytest

from churnops.settings import AlertSettings
from monitoring.alerts import Alert, Alerter, build_channels, fingerprint, list_outbox
from monitoring.state import StateDB


def settings_for(*channels: dict, **kw) -> AlertSettings:
    return AlertSettings.model_validate({"channels": list(channels), "timeout_s": 2, "attempts": 3,
                                         "backoff_s": 0.01, "max_backoff_s": 60, **kw})


def make_alert(features=("Total_Trans_Amt",), version="4") -> Alert:
    return Alert(kind="drift", title=f"drift in {len(features)} feature(s)", summary="test summary",
                 fingerprint=fingerprint("drift", version, sorted(features)),
                 details={"drifted_features": list(features), "reference_version": version},
                 report="/reports/drift/drift.html")


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def state(tmp_path) -> StateDB:
    return StateDB(tmp_path / "state.sqlite")


def test_alert_waits_while_the_receiver_is_down_and_is_delivered_once_when_it_is_back(state, receiver):
    cfg = settings_for({"name": "hook", "type": "webhook", "url_env": "HOOK_URL"})
    env = {"HOOK_URL": receiver.url + "/alerts"}  # nothing listens on this port yet
    clock, sleeps = Clock(), []
    alerter = Alerter(state, cfg, env=env, clock=clock, sleep=sleeps.append)
    raised, report = alerter.raise_alert(make_alert())
    assert raised.accepted and report.delivered == [] and report.pending == 1
    assert len(report.failed) == 1 and "ConnectionError" in report.failed[0][2]
    assert sleeps == [0.01, 0.02]  # in-run retries with exponential backoff

    # Still down: not due yet (the persisted backoff), so a new run does not even try.
    assert Alerter(state, cfg, env=env, clock=clock).deliver_pending().failed == []
    row = list_outbox(state)[0]
    assert row["status"] == "pending" and row["attempts"] == 3 and "ConnectionError" in row["last_error"]

    receiver.start()
    clock.now += 60
    later = Alerter(state, cfg, env=env, clock=clock)  # a new process: everything it knows is in the file
    first = later.deliver_pending()
    assert first.delivered == [(raised.alert_id, "hook")] and first.pending == 0
    again = later.deliver_pending()
    clock.now += 3600
    third = Alerter(state, cfg, env=env, clock=clock).deliver_pending()
    assert again.delivered == [] and third.delivered == []
    assert len(receiver.requests) == 1  # exactly once
    req = receiver.requests[0]
    assert req.path == "/alerts" and req.headers["Idempotency-Key"] == raised.alert_id
    assert req.body["idempotency_key"] == raised.alert_id and req.body["details"]["drifted_features"] == [
        "Total_Trans_Amt"]


def test_failed_attempts_are_retried_with_backoff_in_the_same_run(state, receiver):
    receiver.statuses = [503, 502]
    receiver.start()
    cfg = settings_for({"name": "hook", "type": "webhook", "url_env": "HOOK_URL"})
    sleeps: list[float] = []
    alerter = Alerter(state, cfg, env={"HOOK_URL": receiver.url}, sleep=sleeps.append)
    _, report = alerter.raise_alert(make_alert())
    assert len(report.delivered) == 1 and report.pending == 0
    assert sleeps == [0.01, 0.02] and len(receiver.requests) == 3
    assert list_outbox(state)[0]["attempts"] == 3


def test_the_same_alert_within_the_cooldown_is_suppressed(state, receiver):
    receiver.start()
    cfg = settings_for({"name": "hook", "type": "webhook", "url_env": "HOOK_URL"}, cooldown_s=3600)
    clock = Clock()
    alerter = Alerter(state, cfg, env={"HOOK_URL": receiver.url}, clock=clock)
    first, _ = alerter.raise_alert(make_alert())
    clock.now += 1800
    dup, _ = alerter.raise_alert(make_alert())
    other, _ = alerter.raise_alert(make_alert(features=("Credit_Limit",)))  # a different alert
    clock.now += 1801
    after, _ = alerter.raise_alert(make_alert())
    assert first.accepted and not dup.accepted and dup.duplicate_of == first.alert_id
    assert other.accepted and after.accepted
    assert len(receiver.requests) == 3
    rows = {r["alert_id"]: r for r in list_outbox(state)}
    assert rows[first.alert_id]["suppressed"] == 1


def test_payload_formats_for_slack_alertmanager_and_webhook(state, receiver):
    receiver.start()
    cfg = settings_for({"name": "hook", "type": "webhook", "url_env": "HOOK_URL"},
                       {"name": "slack", "type": "slack", "url_env": "SLACK_URL"},
                       {"name": "am", "type": "alertmanager", "url_env": "AM_URL"},
                       {"name": "log", "type": "log"})
    env = {"HOOK_URL": receiver.url + "/hook", "SLACK_URL": receiver.url + "/slack", "AM_URL": receiver.url}
    raised, report = Alerter(state, cfg, env=env).raise_alert(make_alert(("Total_Trans_Amt", "Credit_Limit")))
    assert sorted(c for _, c in report.delivered) == ["am", "hook", "log", "slack"]
    (slack,) = receiver.bodies("/slack")
    assert slack["text"].startswith(":warning:") and slack["blocks"][0]["type"] == "header"
    (am,) = receiver.bodies("/api/v2/alerts")
    assert isinstance(am, list) and len(am) == 1
    assert am[0]["labels"]["alertname"] == "ChurnopsDrift" and am[0]["labels"]["severity"] == "warning"
    assert am[0]["annotations"]["drifted_features"] == "Total_Trans_Amt,Credit_Limit"
    assert am[0]["startsAt"].endswith("Z")
    (hook,) = receiver.bodies("/hook")
    assert hook["id"] == raised.alert_id and hook["kind"] == "drift"


def test_two_deliverers_at_once_send_each_alert_once(state, receiver):
    receiver.start()
    cfg = settings_for({"name": "hook", "type": "webhook", "url_env": "HOOK_URL"}, cooldown_s=0)
    env = {"HOOK_URL": receiver.url}
    enqueuer = Alerter(state, cfg, env=env)
    ids = {enqueuer.enqueue(make_alert(features=(f"f{i}",))).alert_id for i in range(20)}
    workers = [Alerter(state, cfg, env=env) for _ in range(3)]
    threads = [threading.Thread(target=w.deliver_pending) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sent = [r.headers["Idempotency-Key"] for r in receiver.requests]
    assert sorted(sent) == sorted(ids)  # all delivered, none twice
    assert enqueuer.count_pending() == 0


def test_http_channel_without_its_url_is_skipped_and_says_which_variable():
    cfg = settings_for({"name": "log", "type": "log"},
                       {"name": "slack", "type": "slack", "url_env": "SLACK_URL"})
    active, skipped = build_channels(cfg, env={})
    assert list(active) == ["log"] and skipped == {"slack": "set SLACK_URL to enable it"}


def test_pending_delivery_goes_out_once_its_channel_url_is_configured(state, receiver):
    receiver.start()
    cfg = settings_for({"name": "hook", "type": "webhook", "url_env": "HOOK_URL"})
    Alerter(state, cfg, env={"HOOK_URL": "http://127.0.0.1:9/nowhere"}, sleep=lambda s: None).raise_alert(
        make_alert())
    clock = Clock(now=10**10)  # long after the backoff
    report = Alerter(state, cfg, env={"HOOK_URL": receiver.url}, clock=clock).deliver_pending()
    assert len(report.delivered) == 1 and len(receiver.requests) == 1


def test_alert_queued_while_the_channel_url_is_unset_goes_out_once_it_is_set(state, receiver):
    receiver.start()
    cfg = settings_for({"name": "log", "type": "log"},
                       {"name": "hook", "type": "webhook", "url_env": "HOOK_URL"})
    raised, report = Alerter(state, cfg, env={}).raise_alert(make_alert())
    assert raised.channels == ["log"] and raised.waiting == ["hook"]
    assert report.pending == 0 and report.unconfigured == {"hook": 1}  # nothing failed: it waits for a URL
    (row,) = [r for r in list_outbox(state, active_channels={"log"}) if r["channel"] == "hook"]
    assert row["status"] == "pending" and not row["channel_active"]

    # The same alert raised again within the cooldown is suppressed, and still nothing is lost.
    again, _ = Alerter(state, cfg, env={}).raise_alert(make_alert())
    assert not again.accepted and receiver.requests == []

    later = Alerter(state, cfg, env={"HOOK_URL": receiver.url + "/hook"}).deliver_pending()
    assert later.delivered == [(raised.alert_id, "hook")] and later.unconfigured == {}
    (body,) = receiver.bodies("/hook")
    assert body["idempotency_key"] == raised.alert_id
    assert Alerter(state, cfg, env={"HOOK_URL": receiver.url + "/hook"}).deliver_pending().delivered == []
    assert len(receiver.requests) == 1


def test_a_delivery_another_process_is_sending_counts_as_in_flight_not_pending(state, receiver):
    release = threading.Event()

    def slow(_r, _method, _path, _headers, _body):
        release.wait(30)
        return 200, {"ok": True}

    receiver.handler = slow
    receiver.start()
    cfg = settings_for({"name": "hook", "type": "webhook", "url_env": "HOOK_URL"})
    env = {"HOOK_URL": receiver.url}
    Alerter(state, cfg, env=env).enqueue(make_alert())
    first = threading.Thread(target=Alerter(state, cfg, env=env).deliver_pending)
    first.start()
    try:
        deadline = time.monotonic() + 30
        while not receiver.requests and time.monotonic() < deadline:
            time.sleep(0.02)
        assert receiver.requests, "the first deliverer never reached the receiver"
        second = Alerter(state, cfg, env=env).deliver_pending()
        assert second.delivered == [] and second.pending == 0 and second.in_flight == 1
    finally:
        release.set()
        first.join(30)
    assert len(receiver.requests) == 1 and list_outbox(state)[0]["status"] == "delivered"
