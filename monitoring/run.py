"""One drift check from start to finish: load both samples, test, write the reports, alert, retrain.

``run_check`` is what ``churnops drift check`` runs, and what an Airflow task calls directly::

    from monitoring.run import run_check
    outcome = run_check(settings, retrain=False)      # the DAG triggers training itself
    if outcome.result.status == "drift":
        conf = outcome.conf                           # run configuration for churn_training

Raises :class:`CheckError` when a sample cannot be loaded or tested (the message says which and why).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from churnops.io import write_json_atomic
from churnops.settings import Settings
from monitoring.detect import DriftConfig, DriftDetector, DriftInputError, DriftResult
from monitoring.report import write_reports
from monitoring.sources import (
    SourceError,
    champion_reference,
    file_current,
    file_reference,
    prediction_log_current,
)

EXIT_ACTION_FAILED = 5


class CheckError(RuntimeError):
    """The check could not run: a sample is missing, unreadable or does not match the schema."""


@dataclass
class CheckOutcome:
    result: DriftResult
    json_path: Path
    html_path: Path
    actions: dict[str, Any] = field(default_factory=dict)
    retrain_failed: bool = False

    @property
    def exit_code(self) -> int:
        """0 no drift, 3 drift, 4 not enough data, 5 drift but the retraining trigger failed."""
        return EXIT_ACTION_FAILED if self.retrain_failed else self.result.exit_code

    @property
    def conf(self) -> dict[str, Any]:
        """Run configuration for the training DAG: the report summary, the report path and the reason."""
        return {"drift": self.result.summary(), "report": str(self.json_path),
                "reason": retrain_reason(self.result)}

    def to_dict(self) -> dict[str, Any]:
        return {**self.result.to_dict(), "actions": self.actions,
                "reports": {"json": str(self.json_path), "html": str(self.html_path)}}


def retrain_reason(result: DriftResult) -> str:
    changes = "; ".join(result.summary()["changes"])
    return (f"input drift ({changes}) on a window of {result.window_size} rows against model version "
            f"{result.reference_version or '-'}")


def run_check(settings: Settings, *, current_path: Path | None = None, last_n: int | None = None,
              since_ts: float | None = None, reference_path: Path | None = None,
              reference_version: str | None = None, backend: str | None = None, out_dir: Path | None = None,
              alert: bool = True, retrain: bool | None = None) -> CheckOutcome:
    mon = settings.params.monitoring
    try:
        ref = (file_reference(settings, reference_path) if reference_path
               else champion_reference(settings, reference_version))
        cur = (file_current(settings, current_path) if current_path
               else prediction_log_current(settings, last_n, since_ts))
        config = DriftConfig.from_settings(mon, backend)
        detector = DriftDetector.from_schema(ref.frame, settings.schema, config,
                                             reference_version=ref.version)
        result = detector.check(cur.frame, source={**cur.description, "reference": ref.description})
    except (SourceError, DriftInputError) as exc:
        raise CheckError(str(exc)) from exc

    out_dir = out_dir or settings.reports_dir / "drift"
    json_path, html_path = write_reports(result, out_dir, ref.frame, cur.frame)
    outcome = CheckOutcome(result, json_path, html_path)
    if alert:  # a refused model (files changed in the artifact store) pages on-call with every check
        from monitoring.integrity import raise_integrity_alerts

        integrity = raise_integrity_alerts(settings)
        if integrity:
            outcome.actions["integrity"] = integrity
    if result.drift and alert:
        outcome.actions["alert"] = raise_drift_alert(settings, result, str(html_path))
    if result.drift and (mon.retrain.enabled if retrain is None else retrain):
        outcome.actions["retrain"], outcome.retrain_failed = _retrain(settings, outcome)
    if outcome.actions:
        doc = json.loads(json_path.read_text())
        doc["actions"] = outcome.actions
        write_json_atomic(json_path, doc)
    return outcome


def raise_drift_alert(settings: Settings, result: DriftResult, report: str | None) -> dict[str, Any]:
    """Raise the drift alert on the configured channels (cooldown, outbox, retries: monitoring.alerts)."""
    from monitoring.alerts import Alerter, drift_alert

    alerter = Alerter.from_settings(settings)
    raised, delivery = alerter.raise_alert(drift_alert(result, report=report))
    status = "queued" if raised.accepted else "suppressed"
    out: dict[str, Any] = {"alert_id": raised.alert_id, "status": status}
    if raised.accepted:
        out["channels"] = raised.channels
        if raised.waiting:
            out["waiting_channels"] = raised.waiting  # delivered once their URL is set
    else:
        out["duplicate_of"] = raised.duplicate_of
    if alerter.skipped:
        out["skipped_channels"] = sorted(alerter.skipped)
    if delivery is not None:
        out["delivered"] = len(delivery.delivered)
        out["pending"] = delivery.pending
    return out


def _retrain(settings: Settings, outcome: CheckOutcome) -> tuple[dict[str, Any], bool]:
    from monitoring.retrain import RetrainError, RetrainTrigger

    conf = outcome.conf
    reason = conf.pop("reason")
    try:
        decision = RetrainTrigger.from_settings(settings).maybe_trigger(reason, conf)
    except RetrainError as exc:
        return {"status": "failed", "error": str(exc)}, True
    return decision.to_dict(), False
