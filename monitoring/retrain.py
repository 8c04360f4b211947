"""Retraining on drift: trigger the training DAG through the Airflow REST API, with a cooldown, and
record every decision (triggered, suppressed by the cooldown, failed) with its reason in the trigger log
(the ``retrain_triggers`` table of the monitoring state database).

The request goes through the platform's one Airflow client, :class:`churnops.airflow_rest.AirflowAPI`
(environment ``CHURNOPS_AIRFLOW_URL``, ``CHURNOPS_AIRFLOW_USER``, ``CHURNOPS_AIRFLOW_PASSWORD``). The run id
is derived from the trigger id, so a retried request cannot start a second run.

Inside Airflow the drift DAG does not call the REST API: its tasks (:mod:`monitoring.drift_tasks`) apply
the same cooldown and record the decision, and its ``TriggerDagRunOperator`` starts the run.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from churnops.airflow_rest import AirflowAPI, AirflowAPIError
from churnops.logs import get_logger
from monitoring.state import StateDB

log = get_logger(__name__)


class RetrainError(RuntimeError):
    """Retraining could not be triggered; the message says where it failed and what to check."""


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


class DagTrigger(Protocol):
    """What the trigger needs of a client: :meth:`churnops.airflow_rest.AirflowAPI.trigger`."""

    def trigger(self, dag_id: str, conf: Mapping[str, Any] | None = None, *, dag_run_id: str | None = None,
                note: str | None = None, unpause: bool = True) -> dict[str, Any]: ...


def airflow_from_env(env: Mapping[str, str] | None = None, timeout_s: float = 10.0) -> AirflowAPI:
    """The Airflow client of CHURNOPS_AIRFLOW_URL / _USER / _PASSWORD; RetrainError names what is unset."""
    try:
        return AirflowAPI.from_env(env, timeout_s)
    except AirflowAPIError as exc:
        raise RetrainError(f"{exc} (or run the check with --no-retrain)") from exc


class RetrainTrigger:
    def __init__(self, state: StateDB, retrain_settings: Any, client_factory: Callable[[], DagTrigger],
                 clock: Callable[[], float] = time.time) -> None:
        self.state = state
        self.settings = retrain_settings
        self.client_factory = client_factory
        self.clock = clock

    @classmethod
    def from_settings(cls, settings: Any, env: Mapping[str, str] | None = None) -> RetrainTrigger:
        m = settings.params.monitoring
        return cls(StateDB(settings.path(m.state_db)), m.retrain,
                   lambda: airflow_from_env(env, m.retrain.timeout_s))

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
            run = self.client_factory().trigger(dag_id, full_conf, dag_run_id=dag_run_id, note=reason[:1000],
                                                unpause=False)
            run_id = str(run.get("dag_run_id", dag_run_id))
        except (RetrainError, AirflowAPIError) as exc:
            decision = TriggerDecision(trigger_id, "failed", reason, dag_id, dag_run_id, str(exc))
            self._update(decision)
            log.error("retrain.failed", dag_id=dag_id, error=str(exc))
            if isinstance(exc, RetrainError):
                raise
            raise RetrainError(str(exc)) from exc
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


def mark_trigger_failed(state: StateDB, trigger_id: str, error: str) -> None:
    """The training DAG could not be started after all: mark the trigger failed, so the cooldown skips it."""
    with state.transaction() as db:
        db.execute("UPDATE retrain_triggers SET status = 'failed', error = ? WHERE id = ?",
                   (error[:2000], trigger_id))
    log.error("retrain.trigger_failed", trigger_id=trigger_id, error=error)


def list_triggers(state: StateDB, limit: int = 50) -> list[dict[str, Any]]:
    with state.read() as db:
        rows = db.execute("SELECT id, created_at, status, reason, dag_id, dag_run_id, error "
                          "FROM retrain_triggers "
                          "ORDER BY created_at DESC LIMIT ?", (limit,)).fetchall()
    return [dict(r) for r in rows]
