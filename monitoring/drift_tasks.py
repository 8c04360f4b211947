"""The steps of the drift DAG (``churn_drift_monitor``): each task of ``dags/churn_drift_monitor.py`` is
one call here.

No Airflow here (``dags/`` is the only code that imports it): every function takes plain values and
returns JSON-able dicts, so each is testable alone.

``drift_tests`` -> ``alert_on_call`` -> ``decide_retraining`` -> (the DAG's ``TriggerDagRunOperator``),
with ``mark_trigger_failed`` when that operator could not start the training run. They run the same code
as ``churnops drift check`` (:func:`monitoring.run.run_check`), split so that Airflow shows, retries and
skips each step on its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from churnops.io import safe_run_id
from churnops.logs import get_logger
from churnops.settings import Settings

log = get_logger(__name__)


def drift_run_dir(settings: Settings, run_id: str) -> Path:
    """Where a drift-monitor run writes its reports: <reports>/drift/runs/<run id>/."""
    return settings.reports_dir / "drift" / "runs" / safe_run_id(run_id)


def drift_tests(settings: Settings, run_id: str, last_n: int | None = None) -> dict[str, Any]:
    """The latest prediction-log window against the champion's training reference (monitoring.run.run_check,
    without its alerting and retraining: the DAG runs those as their own tasks).

    Returns the result as a dict (``status``: drift | no_drift | not_enough_data) with the report paths;
    ``no_champion`` when no model holds @champion yet (nothing to compare with).
    """
    from churnops import registry
    from monitoring.integrity import raise_integrity_alerts
    from monitoring.run import run_check

    # a model refused for changed files pages on-call at every scheduled check, drift or not
    integrity = raise_integrity_alerts(settings)
    if registry.champion_version(settings) is None:
        return {
            "status": "no_champion",
            "drift": False,
            "message": "no model holds @champion yet: nothing to compare the window with",
            "integrity": integrity,
        }
    outcome = run_check(
        settings, last_n=last_n, out_dir=drift_run_dir(settings, run_id), alert=False, retrain=False
    )
    result = outcome.result
    log.info(
        "drift.result",
        status=result.status,
        drifted=",".join(result.drifted_features) or "-",
        window=result.window_size,
        reference_version=result.reference_version,
        message=result.message,
    )
    return {**result.to_dict(), "report_json": str(outcome.json_path), "report_html": str(outcome.html_path),
            "integrity": integrity}


def alert_on_call(settings: Settings, result: dict[str, Any]) -> dict[str, Any]:
    """Raise the drift alert on the configured channels (cooldown, outbox, retries: monitoring.alerts)."""
    from monitoring.detect import DriftResult
    from monitoring.run import raise_drift_alert

    out = raise_drift_alert(settings, DriftResult.from_dict(result), result.get("report_html"))
    out.setdefault("skipped_channels", [])
    log.info("drift.alert", **{k: v for k, v in out.items() if isinstance(v, str | int)})
    return out


class _OperatorTrigger:
    """Stands in for the Airflow client inside Airflow: it records the run the DAG's TriggerDagRunOperator
    starts right after, instead of calling the REST API."""

    def __init__(self) -> None:
        self.request: dict[str, Any] | None = None

    def trigger(self, dag_id: str, conf: Mapping[str, Any] | None = None, *, dag_run_id: str | None = None,
                note: str | None = None, unpause: bool = True) -> dict[str, Any]:
        self.request = {"dag_id": dag_id, "dag_run_id": dag_run_id, "conf": dict(conf or {}), "note": note}
        return {"dag_run_id": dag_run_id}


def decide_retraining(settings: Settings, result: dict[str, Any]) -> dict[str, Any]:
    """Apply the retraining cooldown (monitoring.retrain) and record the decision in the trigger log.

    Returns ``{"trigger": True, "dag_id", "dag_run_id", "conf", "trigger_id"}`` when the training DAG
    should run now, else ``{"trigger": False, "reason"}``.
    """
    from monitoring.detect import DriftResult
    from monitoring.retrain import RetrainTrigger
    from monitoring.run import CheckOutcome
    from monitoring.state import StateDB

    retrain = settings.params.monitoring.retrain
    if not retrain.enabled:
        return {"trigger": False, "reason": "monitoring.retrain.enabled is false"}
    drift = DriftResult.from_dict(result)
    conf = CheckOutcome(drift, Path(result["report_json"]), Path(result["report_html"])).conf
    reason = conf.pop("reason")
    stand_in = _OperatorTrigger()
    trigger = RetrainTrigger(
        StateDB(settings.path(settings.params.monitoring.state_db)), retrain, client_factory=lambda: stand_in
    )
    decision = trigger.maybe_trigger(reason, conf)
    if decision.status != "triggered" or stand_in.request is None:
        return {"trigger": False, "reason": decision.reason, "status": decision.status}
    return {"trigger": True, "trigger_id": decision.id, "reason": reason, **stand_in.request}


def mark_trigger_failed(settings: Settings, trigger_id: str, error: str) -> None:
    """The training DAG could not be started: mark the trigger failed so the cooldown does not count it."""
    from monitoring.retrain import mark_trigger_failed as mark_failed
    from monitoring.state import StateDB

    mark_failed(StateDB(settings.path(settings.params.monitoring.state_db)), trigger_id, error)
