"""Retraining through the Airflow REST API (a real HTTP server speaking its two endpoints), with a
cooldown and a trigger log that says why."""

from __future__ import annotations

import pytest

from churnops.airflow_rest import AirflowAPI
from churnops.settings import RetrainSettings
from monitoring.retrain import RetrainError, RetrainTrigger, airflow_from_env, list_triggers
from monitoring.state import StateDB

CONF = {"drift": {"status": "drift", "drifted_features": ["Total_Trans_Amt"], "window_size": 800}}


class Clock:
    def __init__(self, now: float = 2_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_trigger(tmp_path, env, clock, cooldown_s=3600.0) -> RetrainTrigger:
    settings = RetrainSettings(cooldown_s=cooldown_s, dag_id="churn_training", timeout_s=5)
    return RetrainTrigger(StateDB(tmp_path / "state.sqlite"), settings,
                          lambda: airflow_from_env(env, 5), clock=clock)


def test_drift_triggers_the_training_dag_with_the_report_as_conf(tmp_path, airflow):
    trigger = make_trigger(tmp_path, airflow.env(), Clock())
    decision = trigger.maybe_trigger("input drift in Total_Trans_Amt", CONF)
    assert decision.status == "triggered"
    (run,) = airflow.runs
    assert run["dag_id"] == "churn_training" and run["logical_date"] is None
    assert run["conf"]["drift"] == CONF["drift"]
    assert run["conf"]["reason"] == "input drift in Total_Trans_Amt"
    assert run["dag_run_id"] == decision.dag_run_id and run["note"] == "input drift in Total_Trans_Amt"
    paths = [r.path for r in airflow.receiver.requests]
    assert paths == ["/auth/token", "/api/v2/dags/churn_training/dagRuns"]
    (logged,) = list_triggers(trigger.state)
    assert logged["status"] == "triggered" and logged["reason"] == "input drift in Total_Trans_Amt"


def test_second_drift_within_the_cooldown_is_suppressed_and_logged(tmp_path, airflow):
    clock = Clock()
    trigger = make_trigger(tmp_path, airflow.env(), clock, cooldown_s=3600)
    trigger.maybe_trigger("first", CONF)
    clock.now += 1800
    suppressed = trigger.maybe_trigger("second", CONF)
    clock.now += 1801
    third = trigger.maybe_trigger("third", CONF)
    assert suppressed.status == "suppressed" and "cooldown" in suppressed.reason
    assert third.status == "triggered"
    assert len(airflow.runs) == 2
    assert [t["status"] for t in list_triggers(trigger.state)] == ["triggered", "suppressed", "triggered"]


def test_refused_credentials_fail_loudly_and_do_not_start_the_cooldown(tmp_path, airflow):
    clock = Clock()
    bad = make_trigger(tmp_path, airflow.env(CHURNOPS_AIRFLOW_PASSWORD="wrong"), clock)
    with pytest.raises(RetrainError, match="refused the credentials"):
        bad.maybe_trigger("drift", CONF)
    (logged,) = list_triggers(bad.state)
    assert logged["status"] == "failed" and "HTTP 401" in logged["error"]
    good = make_trigger(tmp_path, airflow.env(), clock)
    assert good.maybe_trigger("drift again", CONF).status == "triggered"


def test_unknown_dag_and_unreachable_airflow_say_what_to_check(tmp_path, airflow):
    airflow.dags.clear()
    with pytest.raises(RetrainError, match="deployed and unpaused"):
        make_trigger(tmp_path, airflow.env(), Clock()).maybe_trigger("drift", CONF)
    with pytest.raises(RetrainError, match="did not answer"):
        make_trigger(tmp_path, airflow.env(CHURNOPS_AIRFLOW_URL="http://127.0.0.1:9"), Clock()).maybe_trigger(
            "drift", CONF)


def test_missing_environment_names_the_variables(tmp_path):
    with pytest.raises(RetrainError, match="CHURNOPS_AIRFLOW_URL, CHURNOPS_AIRFLOW_USER"):
        make_trigger(tmp_path, {}, Clock()).maybe_trigger("drift", CONF)


def test_a_resent_run_id_is_not_a_second_run(airflow):
    client = AirflowAPI(airflow.url, airflow.username, airflow.password)
    first = client.trigger("churn_training", {"a": 1}, dag_run_id="drift__x", unpause=False)
    again = client.trigger("churn_training", {"a": 1}, dag_run_id="drift__x", unpause=False)  # 409: there
    assert first["dag_run_id"] == again["dag_run_id"] == "drift__x" and again["existed"]
    assert len(airflow.runs) == 1
