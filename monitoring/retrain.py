"""Retraining on drift: trigger the training DAG through the Airflow REST API, with a cooldown, and
record every decision (triggered, suppressed by the cooldown, failed) with its reason in the trigger log
(the ``retrain_triggers`` table of the monitoring state database).

Airflow 3 REST API: ``POST /auth/token`` with JSON ``{"username", "password"}`` returns
``{"access_token": <JWT>}``; ``POST /api/v2/dags/{dag_id}/dagRuns`` with
``{"dag_run_id", "logical_date": null, "conf": {...}, "note"}`` creates the run. The run id is derived from
the trigger id, so a retried request cannot start a second run (Airflow answers 409, taken as success).

Environment: ``CHURNOPS_AIRFLOW_URL`` (e.g. http://airflow:8080), ``CHURNOPS_AIRFLOW_USER``,
``CHURNOPS_AIRFLOW_PASSWORD``.

Inside Airflow the monitoring DAG does not need this module: it runs the check with ``--no-retrain`` and
triggers the training DAG itself (``TriggerDagRunOperator`` with the report summary as ``conf``).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from churnops.logs import get_logger
from monitoring.state import StateDB

log = get_logger(__name__)

ENV_URL, ENV_USER, ENV_PASSWORD = "CHURNOPS_AIRFLOW_URL", "CHURNOPS_AIRFLOW_USER", "CHURNOPS_AIRFLOW_PASSWORD"


class RetrainError(RuntimeError):
    """Retraining could not be triggered; the message says where it failed and what to check."""


class AirflowClient:
    def __init__(self, base_url: str, username: str, password: str, timeout_s: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.username, self.password = username, password
        self.timeout_s = timeout_s

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, timeout_s: float = 10.0) -> AirflowClient:
        env = os.environ if env is None else env
        missing = [v for v in (ENV_URL, ENV_USER, ENV_PASSWORD) if not env.get(v)]
        if missing:
            raise RetrainError(f"cannot reach Airflow: set {', '.join(missing)} "
                               "(or run the check with --no-retrain)")
        return cls(env[ENV_URL], env[ENV_USER], env[ENV_PASSWORD], timeout_s)

    def _post(self, path: str, body: Any, token: str | None = None) -> Any:
        import requests

        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        url = self.base_url + path
        try:
            return requests.post(url, data=json.dumps(body), headers=headers, timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise RetrainError(f"Airflow at {self.base_url} did not answer POST {path}: {exc}") from exc

    def token(self) -> str:
        resp = self._post("/auth/token", {"username": self.username, "password": self.password})
        if resp.status_code not in (200, 201):
            raise RetrainError(f"Airflow refused the credentials of {ENV_USER}={self.username!r} "
                               f"(POST /auth/token: HTTP {resp.status_code} {resp.text[:200]})")
        try:
            return str(resp.json()["access_token"])
        except (ValueError, KeyError) as exc:
            raise RetrainError(f"POST /auth/token answered without an access_token: "
                               f"{resp.text[:200]}") from exc

    def trigger_dag(self, dag_id: str, dag_run_id: str, conf: dict[str, Any], note: str | None = None) -> str:
        body = {"dag_run_id": dag_run_id, "logical_date": None, "conf": conf, "note": note}
        resp = self._post(f"/api/v2/dags/{dag_id}/dagRuns", body, token=self.token())
        if resp.status_code == 409:  # this very run exists already: an earlier attempt got through
            log.info("retrain.already_triggered", dag_id=dag_id, dag_run_id=dag_run_id)
            return dag_run_id
        if resp.status_code not in (200, 201):
            hint = " (is the DAG deployed and unpaused?)" if resp.status_code == 404 else ""
            raise RetrainError(f"Airflow did not start {dag_id}: HTTP {resp.status_code} "
                               f"{resp.text[:300]}{hint}")
        return str(resp.json().get("dag_run_id", dag_run_id))


@dataclass(frozen=True)
class TriggerDecision:
    id: str
    status: str  # triggered | suppressed | failed
    reason: str
    dag_id: str
    dag_run_id: str | None = None
    error: str | None = None
    last_triggered_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


class RetrainTrigger:
    def __init__(self, state: StateDB, retrain_settings: Any, client_factory: Callable[[], AirflowClient],
                 clock: Callable[[], float] = time.time) -> None:
        self.state = state
        self.settings = retrain_settings
        self.client_factory = client_factory
        self.clock = clock

    @classmethod
    def from_settings(cls, settings: Any, env: Mapping[str, str] | None = None) -> RetrainTrigger:
        m = settings.params.monitoring
        return cls(StateDB(settings.path(m.state_db)), m.retrain,
                   lambda: AirflowClient.from_env(env, m.retrain.timeout_s))

    def last_triggered(self) -> float | None:
        with self.state.read() as db:
            row = db.execute("SELECT MAX(created_at) FROM retrain_triggers "
                             "WHERE status = 'triggered'").fetchone()
        return None if row[0] is None else float(row[0])

    def maybe_trigger(self, reason: str, conf: dict[str, Any]) -> TriggerDecision:
        """Trigger the training DAG unless one was triggered within the cooldown; record the decision.

        Raises :class:`RetrainError` (after recording it) when Airflow cannot be reached or refuses.
        """
        dag_id = self.settings.dag_id
        trigger_id = uuid.uuid4().hex[:12]
        now = self.clock()
        # Decide and reserve under the write lock, so two concurrent checks cannot both trigger.
        with self.state.transaction() as db:
            row = db.execute("SELECT MAX(created_at) FROM retrain_triggers "
                             "WHERE status IN ('triggered', 'pending')"
                             ).fetchone()
            last = None if row[0] is None else float(row[0])
            if last is not None and now - last < self.settings.cooldown_s:
                decision = TriggerDecision(trigger_id, "suppressed",
                                           f"{reason}; suppressed: retraining was triggered "
                                           f"{(now - last) / 3600:.1f} h ago (cooldown "
                                           f"{self.settings.cooldown_s / 3600:.1f} h)", dag_id,
                                           last_triggered_at=last)
                self._record(db, decision, now, conf)
                log.info("retrain.suppressed", reason=decision.reason)
                return decision
            self._record(db, TriggerDecision(trigger_id, "pending", reason, dag_id), now, conf)
        dag_run_id = f"drift__{time.strftime('%Y%m%dT%H%M%S', time.gmtime(now))}__{trigger_id}"
        full_conf = {**conf, "reason": reason, "trigger_id": trigger_id}
        try:
            run_id = self.client_factory().trigger_dag(dag_id, dag_run_id, full_conf, note=reason[:1000])
        except RetrainError as exc:
            decision = TriggerDecision(trigger_id, "failed", reason, dag_id, dag_run_id, str(exc))
            self._update(decision)
            log.error("retrain.failed", dag_id=dag_id, error=str(exc))
            raise
        decision = TriggerDecision(trigger_id, "triggered", reason, dag_id, run_id)
        self._update(decision)
        log.info("retrain.triggered", dag_id=dag_id, dag_run_id=run_id, reason=reason)
        return decision

    def _record(self, db: Any, d: TriggerDecision, now: float, conf: dict[str, Any]) -> None:
        db.execute("INSERT INTO retrain_triggers (id, created_at, status, reason, dag_id, dag_run_id, error, "
                   "conf) VALUES (?,?,?,?,?,?,?,?)",
                   (d.id, now, d.status, d.reason, d.dag_id, d.dag_run_id, d.error,
                    json.dumps(conf, default=str)))

    def _update(self, d: TriggerDecision) -> None:
        with self.state.transaction() as db:
            db.execute("UPDATE retrain_triggers SET status = ?, dag_run_id = ?, error = ? WHERE id = ?",
                       (d.status, d.dag_run_id, d.error, d.id))


def list_triggers(state: StateDB, limit: int = 50) -> list[dict[str, Any]]:
    with state.read() as db:
        rows = db.execute("SELECT id, created_at, status, reason, dag_id, dag_run_id, error "
                          "FROM retrain_triggers "
                          "ORDER BY created_at DESC LIMIT ?", (limit,)).fetchall()
    return [dict(r) for r in rows]
