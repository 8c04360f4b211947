"""### churn_drift_monitor: is production still like the training data?

Every interval (env `CHURNOPS_DRIFT_SCHEDULE`, a cron expression or preset; default `@hourly`):

`drift_tests` (the latest rows of the prediction log that `/predict` writes, tested against the champion's
training reference: KS on numeric, chi-squared on categorical features, multiple-testing correction and
effect-size floor; reports `drift.json` and `drift.html`; `monitoring.run.run_check`) → `alert_on_call`
→ `decide_retraining` (cooldown `monitoring.retrain.cooldown_s`, recorded in the trigger log) →
`trigger_training` (`churn_training` with the drift report as its configuration).

No drift: the run ends green after `drift_tests` (the rest is skipped). Not enough rows in the window, or
no champion yet: `drift_tests` is *skipped*, not failed. docs/monitoring.md explains the tests.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Param, dag, get_current_context, task

from churnops.logs import task_default_args

SCHEDULE = os.environ.get("CHURNOPS_DRIFT_SCHEDULE", "@hourly")


def _settings():
    from churnops.settings import load_settings

    return load_settings()


def _trigger_failed(context) -> None:
    """The training DAG could not be started: the cooldown must not count this trigger."""
    from monitoring.drift_tasks import mark_trigger_failed

    decision = context["ti"].xcom_pull(task_ids="decide_retraining") or {}
    if decision.get("trigger_id"):
        mark_trigger_failed(_settings(), decision["trigger_id"], str(context.get("exception")))


@dag(
    dag_id="churn_drift_monitor",
    description="Drift tests on the latest prediction-log window; alert on-call; trigger retraining",
    doc_md=__doc__,
    schedule=SCHEDULE,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(minutes=30),
    tags=["churnops", "monitoring"],
    default_args=task_default_args(
        retries=2, retry_delay=timedelta(seconds=30), execution_timeout=timedelta(minutes=15)
    ),
    params={
        "last_n": Param(
            None,
            type=["null", "integer"],
            minimum=2,
            title="Window size",
            description="Test the last N rows of the prediction log. Empty: monitoring.window_last_n of "
            "params.yaml.",
        ),
    },
)
def churn_drift_monitor():
    @task
    def drift_tests() -> dict:
        """The latest prediction-log window vs the champion's reference; skipped without data or champion."""
        from airflow.sdk.exceptions import AirflowSkipException

        from monitoring.drift_tasks import drift_tests

        context = get_current_context()
        result = drift_tests(_settings(), context["run_id"], context["params"].get("last_n"))
        if result["status"] in ("not_enough_data", "no_champion"):
            raise AirflowSkipException(result["message"])
        return result

    @task.short_circuit(ignore_downstream_trigger_rules=True)
    def drift_found(result: dict) -> bool:
        """Continue to alerting and retraining only when drift was found."""
        return bool(result["drift"])

    @task
    def alert_on_call(result: dict) -> dict:
        """Raise the drift alert (webhook / Slack / Alertmanager / log; cooldown and durable outbox)."""
        from monitoring.drift_tasks import alert_on_call

        return alert_on_call(_settings(), result)

    @task(multiple_outputs=True, retries=0)
    def decide_retraining(result: dict, alerted: dict) -> dict:
        """Apply the retraining cooldown; skip when retraining is off or ran recently."""
        from airflow.sdk.exceptions import AirflowSkipException

        from monitoring.drift_tasks import decide_retraining

        decision = decide_retraining(_settings(), result)
        if not decision["trigger"]:
            raise AirflowSkipException(f"no retraining: {decision['reason']}")
        return decision

    result = drift_tests()
    alerted = alert_on_call(result)
    decision = decide_retraining(result, alerted)
    drift_found(result) >> alerted
    trigger = TriggerDagRunOperator(
        task_id="trigger_training",
        trigger_dag_id="churn_training",
        trigger_run_id=decision["dag_run_id"],
        conf=decision["conf"],
        note="triggered by churn_drift_monitor",
        wait_for_completion=False,
        retries=3,
        on_failure_callback=_trigger_failed,
    )
    decision >> trigger


churn_drift_monitor()
