"""Alerts for refused models: a version whose files failed their SHA-256 check when serving or batch
scoring tried to load it.

Serving may not import monitoring, so the refusal travels through the registry: the loader
(:func:`churnops.registry.load_version`) records it on the version as ``integrity.*`` tags, in whichever
process or host refused it, and :func:`raise_integrity_alerts` turns each recorded refusal into a critical
alert in the outbox (:mod:`monitoring.alerts`). Same version and same found digest = same alert, so the
cooldown keeps repeated checks from paging twice; a version that verifies again has its tags cleared and
stops alerting. It runs in every drift check (``churnops drift check``, the drift DAG), in
``churnops drift deliver``, and at once when batch scoring refuses its champion.
"""

from __future__ import annotations

from typing import Any

from churnops import registry
from churnops.settings import Settings
from monitoring.alerts import Alert, Alerter, fingerprint

KIND = "integrity"  # alertmanager: alertname ChurnopsIntegrity


def integrity_alert(failure: dict[str, Any]) -> Alert:
    """The alert for one refused version (:func:`churnops.registry.integrity_failures` entry)."""
    record = failure["integrity"]
    version = failure["version"]
    return Alert(
        kind=KIND,
        severity="critical",
        title=f"churnops: model {failure['name']} version {version} refused: its files do not match the "
              f"SHA-256 recorded at registration",
        summary=(f"{record.get('error', 'refused')} Refused at {record.get('refused_at')} by "
                 f"{record.get('refused_by')}. Someone or something wrote to the artifact store: find out "
                 f"who, then roll back (`churnops models rollback`) or retrain."),
        fingerprint=fingerprint(KIND, failure["name"], version, record.get("found_sha256")),
        details={"model": failure["name"], "version": version, "expected_sha256": failure.get("model_sha256"),
                 "found_sha256": record.get("found_sha256"), "refused_at": record.get("refused_at"),
                 "refused_by": record.get("refused_by"), "aliases": failure.get("aliases", [])},
    )


def raise_integrity_alerts(settings: Settings, *, deliver: bool = True) -> list[dict[str, Any]]:
    """Queue (and by default send) an alert for every refused version; what was done, one dict each."""
    failures = registry.integrity_failures(settings)
    if not failures:
        return []
    alerter = Alerter.from_settings(settings)
    out = []
    for failure in failures:
        raised = alerter.enqueue(integrity_alert(failure))
        out.append({"version": failure["version"], "alert_id": raised.alert_id,
                    "status": "queued" if raised.accepted else "suppressed"})
    if deliver:
        alerter.deliver_pending()
    return out
