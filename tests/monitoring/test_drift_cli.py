"""`churnops drift ...` end to end: exit codes, reports, alerts to a real webhook receiver, retraining
through an Airflow API double, the outbox commands, and windows read from a real Redis prediction log."""

from __future__ import annotations

import json
import re
import time

import pytest
from click.testing import CliRunner

from churnops.cli import main


def run(home, *args: str):
    result = CliRunner().invoke(main, ["--home", str(home), "drift", *args], catch_exceptions=False)
    return result


@pytest.fixture
def wired(monkeypatch, receiver, airflow):
    """Alert webhook -> the test receiver (started), retraining -> the Airflow double."""
    receiver.start()
    monkeypatch.setenv("CHURNOPS_ALERT_WEBHOOK_URL", receiver.url + "/hook")
    for key, value in airflow.env().items():
        monkeypatch.setenv(key, value)
    for var in ("CHURNOPS_SLACK_WEBHOOK_URL", "CHURNOPS_ALERTMANAGER_URL"):
        monkeypatch.delenv(var, raising=False)
    return receiver, airflow


def test_no_drift_exits_0_writes_both_reports_and_alerts_nobody(monitoring_home, wired):
    receiver, airflow = wired
    home = monitoring_home()
    result = run(home, "check", "--reference", str(home / "reference.parquet"),
                 "--current", str(home / "same.parquet"))
    assert result.exit_code == 0, result.output
    assert "drift check: no drift" in result.output
    doc = json.loads((home / "reports" / "drift" / "drift.json").read_text())
    assert doc["status"] == "no_drift" and doc["window_size"] == 800 and "actions" not in doc
    html = (home / "reports" / "drift" / "drift.html").read_text()
    assert len(re.findall(r"<div class='plot'", html)) == 19  # one plot per feature
    assert html.count("<svg ") == 14 * 2 + 5  # numeric: distribution + cumulative; categorical: shares
    assert receiver.requests == [] and airflow.runs == []


def test_drift_exits_3_alerts_once_triggers_retraining_once_and_logs_why(monitoring_home, wired):
    receiver, airflow = wired
    home = monitoring_home()
    args = ["check", "--reference", str(home / "reference.parquet"),
            "--current", str(home / "drifted.parquet")]
    first = run(home, *args)
    assert first.exit_code == 3, first.output
    assert "DRIFT" in first.output and "Total_Trans_Amt" in first.output
    (alert,) = receiver.bodies("/hook")
    assert alert["details"]["drifted_features"] == ["Total_Trans_Amt"]
    (run_,) = airflow.runs
    assert run_["conf"]["drift"]["drifted_features"] == ["Total_Trans_Amt"]
    assert "Total_Trans_Amt" in run_["conf"]["reason"]
    doc = json.loads((home / "reports" / "drift" / "drift.json").read_text())
    assert doc["actions"]["alert"]["status"] == "queued"
    assert doc["actions"]["retrain"]["status"] == "triggered"

    second = run(home, *args)  # the same drift an hour later: no second page, no second retraining
    assert second.exit_code == 3
    assert len(receiver.requests) == 1 and len(airflow.runs) == 1
    doc = json.loads((home / "reports" / "drift" / "drift.json").read_text())
    assert doc["actions"]["alert"]["status"] == "suppressed"
    assert doc["actions"]["retrain"]["status"] == "suppressed"

    log = run(home, "triggers")
    assert log.exit_code == 0
    assert "triggered" in log.output and "suppressed" in log.output and "Total_Trans_Amt" in log.output


def test_short_window_exits_4_and_does_nothing_else(monitoring_home, wired):
    receiver, airflow = wired
    home = monitoring_home()
    result = run(home, "check", "--reference", str(home / "reference.parquet"),
                 "--current", str(home / "tiny.parquet"))
    assert result.exit_code == 4, result.output
    assert "not enough data" in result.output
    assert receiver.requests == [] and airflow.runs == []


def test_retraining_that_cannot_be_triggered_exits_5_and_the_alert_still_goes_out(monitoring_home, wired,
                                                                                  monkeypatch):
    receiver, airflow = wired
    monkeypatch.setenv("CHURNOPS_AIRFLOW_PASSWORD", "wrong")
    home = monitoring_home()
    result = run(home, "check", "--reference", str(home / "reference.parquet"),
                 "--current", str(home / "drifted.parquet"))
    assert result.exit_code == 5
    assert "refused the credentials" in result.output
    assert len(receiver.bodies("/hook")) == 1 and airflow.runs == []


def test_no_retrain_flag_leaves_airflow_alone(monitoring_home, wired):
    _, airflow = wired
    home = monitoring_home()
    result = run(home, "check", "--no-retrain", "--reference", str(home / "reference.parquet"),
                 "--current", str(home / "drifted.parquet"))
    assert result.exit_code == 3 and airflow.runs == []


def test_alert_waits_in_the_outbox_until_deliver_finds_the_receiver_up(monitoring_home, receiver,
                                                                       monkeypatch):
    monkeypatch.setenv("CHURNOPS_ALERT_WEBHOOK_URL", receiver.url)  # receiver not started: down
    home = monitoring_home({"monitoring": {"retrain": {"enabled": False}}})
    result = run(home, "check", "--reference", str(home / "reference.parquet"),
                 "--current", str(home / "drifted.parquet"))
    assert result.exit_code == 3 and "pending=1" in result.output
    outbox = run(home, "outbox", "--status", "pending")
    assert "webhook" in outbox.output and "ConnectionError" in outbox.output

    still_down = run(home, "deliver")
    assert still_down.exit_code == 5

    receiver.start()
    time.sleep(0.2)  # past the persisted backoff (0.01 s * 2^attempts)
    up = run(home, "deliver")
    assert up.exit_code == 0, up.output
    assert "delivered 1" in up.output
    assert run(home, "deliver").exit_code == 0
    assert len(receiver.requests) == 1
    rows = {r["channel"]: r for r in json.loads(run(home, "outbox", "--json").stdout)}
    assert rows["webhook"]["status"] == "delivered"
    assert rows["slack"]["status"] == "pending" and not rows["slack"]["channel_active"]  # waits for its URL


def test_window_from_the_redis_prediction_log(monitoring_home, make_table, redis_url, monkeypatch, schema):
    import redis

    from churnops.prediction_log import PredictionLog
    from churnops.settings import load_settings

    monkeypatch.setenv("REDIS_URL", redis_url)
    home = monitoring_home({"monitoring": {"retrain": {"enabled": False}}})
    settings = load_settings(home=home)
    plog = PredictionLog.from_settings(settings, client=redis.Redis.from_url(redis_url))
    now = time.time()

    def write(frame, version, ts):
        rows = frame[schema.feature_columns].to_dict("records")
        plog.write([(ts, version, 0.5, "", r) for r in rows])

    write(make_table(700, seed=2), "3", now - 7200)  # two hours ago: like the reference
    write(make_table(600, seed=3, shifts={"Total_Trans_Amt": 0.6}), "4", now - 60)  # the last minute: drifted

    ref = str(home / "reference.parquet")
    recent = run(home, "check", "--reference", ref, "--last-n", "600", "--json")
    assert recent.exit_code == 3
    doc = json.loads(recent.stdout)
    assert doc["window_size"] == 600 and doc["source"]["kind"] == "prediction_log"
    assert doc["source"]["model_versions"] == ["4"] and doc["drifted_features"] == ["Total_Trans_Amt"]

    older = run(home, "check", "--reference", ref, "--since", "3h", "--last-n", "650", "--json")
    assert json.loads(older.stdout)["window_size"] == 650

    everything = json.loads(run(home, "check", "--reference", ref, "--since", "3h", "--json").stdout)
    assert everything["window_size"] == 1300 and everything["source"]["model_versions"] == ["3", "4"]
    tiny = run(home, "check", "--reference", ref, "--since", "10s")
    assert tiny.exit_code == 4


def test_a_bad_csv_is_an_error_that_names_the_column(monitoring_home, make_table, tmp_path):
    home = monitoring_home()
    frame = make_table(400, seed=2).astype({"Customer_Age": object})
    frame.loc[7, "Customer_Age"] = "forty"
    path = tmp_path / "window.csv"
    frame.to_csv(path, index=False)
    result = run(home, "check", "--reference", str(home / "reference.parquet"), "--current", str(path))
    assert result.exit_code == 1
    assert "Customer_Age" in result.output and "forty" in result.output


def test_an_unlabelled_csv_window_is_checked(monitoring_home, make_table, tmp_path, schema):
    home = monitoring_home({"monitoring": {"retrain": {"enabled": False}}})
    path = tmp_path / "batch.csv"
    make_table(400, seed=2)[schema.feature_columns].to_csv(path, index=False)  # no id, no label
    result = run(home, "check", "--no-alert", "--reference", str(home / "reference.parquet"),
                 "--current", str(path))
    assert result.exit_code == 0, result.output


def test_a_csv_window_is_validated_without_its_labels(monitoring_home, make_table, tmp_path, schema):
    """Labels play no part in drift: a window of one class, with a label no model knows, is still checked
    (validate_table(labelled=False)); its features are validated as strictly as ever."""
    home = monitoring_home({"monitoring": {"retrain": {"enabled": False}}})
    frame = make_table(400, seed=2)
    frame[schema.target.column] = schema.target.negative
    frame.loc[3, schema.target.column] = "Churned"
    path = tmp_path / "labelled.csv"
    frame.to_csv(path, index=False)
    args = ("check", "--no-alert", "--reference", str(home / "reference.parquet"), "--current", str(path))
    result = run(home, *args)
    assert result.exit_code == 0, result.output

    frame.loc[5, "Card_Category"] = "Diamond"
    frame.to_csv(path, index=False)
    result = run(home, *args)
    assert result.exit_code == 1 and "Diamond" in result.output and "unlabelled" in result.output


def test_conflicting_window_options_are_a_usage_error(monitoring_home):
    home = monitoring_home()
    result = run(home, "check", "--current", str(home / "same.parquet"), "--last-n", "10")
    assert result.exit_code == 2 and "--last-n" in result.output


def test_alert_raised_while_the_webhook_url_is_unset_reaches_it_once_the_url_is_set(monitoring_home, receiver,
                                                                                     monkeypatch):
    for var in ("CHURNOPS_ALERT_WEBHOOK_URL", "CHURNOPS_SLACK_WEBHOOK_URL", "CHURNOPS_ALERTMANAGER_URL"):
        monkeypatch.delenv(var, raising=False)
    home = monitoring_home({"monitoring": {"retrain": {"enabled": False}}})
    args = ["check", "--reference", str(home / "reference.parquet"),
            "--current", str(home / "drifted.parquet")]
    first = run(home, *args)
    assert first.exit_code == 3, first.output
    doc = json.loads((home / "reports" / "drift" / "drift.json").read_text())
    assert doc["actions"]["alert"]["waiting_channels"] == ["webhook", "slack", "alertmanager"]
    waiting = run(home, "deliver")
    assert waiting.exit_code == 0, waiting.output  # nothing failed: the channels have no URL yet
    assert "waiting for channel webhook (set CHURNOPS_ALERT_WEBHOOK_URL to enable it)" in waiting.output
    assert "channel not configured now" in run(home, "outbox", "--status", "pending").output

    receiver.start()
    monkeypatch.setenv("CHURNOPS_ALERT_WEBHOOK_URL", receiver.url + "/hook")
    again = run(home, *args)  # the rerun is suppressed as a duplicate, but the waiting delivery goes out
    assert again.exit_code == 3
    assert json.loads((home / "reports" / "drift" / "drift.json").read_text())["actions"]["alert"][
        "status"] == "suppressed"
    (alert,) = receiver.bodies("/hook")
    assert alert["details"]["drifted_features"] == ["Total_Trans_Amt"]
    assert run(home, "deliver").exit_code == 0 and len(receiver.requests) == 1


def test_second_deliver_racing_the_first_exits_0_saying_already_being_delivered(monitoring_home, receiver,
                                                                                monkeypatch):
    import threading

    from churnops.settings import load_settings
    from monitoring.alerts import Alert, Alerter

    release = threading.Event()

    def slow(_r, _method, _path, _headers, _body):
        release.wait(60)
        return 200, {"ok": True}

    receiver.handler = slow
    receiver.start()
    monkeypatch.setenv("CHURNOPS_ALERT_WEBHOOK_URL", receiver.url + "/hook")
    for var in ("CHURNOPS_SLACK_WEBHOOK_URL", "CHURNOPS_ALERTMANAGER_URL"):
        monkeypatch.delenv(var, raising=False)
    home = monitoring_home({"monitoring": {"retrain": {"enabled": False},
                                           "alerts": {"channels": [
                                               {"name": "webhook", "type": "webhook",
                                                "url_env": "CHURNOPS_ALERT_WEBHOOK_URL"}]}}})
    settings = load_settings(home=home)
    Alerter.from_settings(settings).enqueue(Alert(kind="drift", title="t", summary="s", fingerprint="f"))
    first = threading.Thread(target=Alerter.from_settings(settings).deliver_pending)
    first.start()
    try:
        deadline = time.monotonic() + 60
        while not receiver.requests and time.monotonic() < deadline:
            time.sleep(0.02)
        assert receiver.requests, "the first deliver never reached the receiver"
        second = run(home, "deliver")
        assert second.exit_code == 0, second.output
        assert "1 already being delivered by another process" in second.output
    finally:
        release.set()
        first.join(60)
    assert len(receiver.requests) == 1
    assert json.loads(run(home, "outbox", "--json").stdout)[0]["status"] == "delivered"
