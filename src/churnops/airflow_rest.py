"""The one client of Airflow's REST API (Airflow 3): HTTP only, no Airflow import.

Every part of churnops that talks to an Airflow uses :class:`AirflowAPI`: the demo and ``churnops airflow``
(:mod:`pipeline.airflow_local`, which starts a local ``airflow standalone``) and the retraining trigger of
drift monitoring (:mod:`monitoring.retrain`). It does what the UI does:

- ``POST /auth/token`` with JSON ``{"username", "password"}`` returns ``{"access_token": <JWT>}``; every
  other call sends it as a bearer token (a 401 on an old token fetches a new one, once);
- ``POST /api/v2/dags/{dag_id}/dagRuns`` with ``{"dag_run_id", "logical_date": null, "conf", "note"}``
  creates a run. A run id given by the caller makes the request idempotent: when that run exists already
  (HTTP 409, an earlier attempt got through) :meth:`AirflowAPI.trigger` returns it instead of failing;
- unpause a DAG, read a run, its task instances and their XComs, follow a run, wait for DAGs to be parsed.

Errors say which Airflow (its address without a password) and which request: :class:`AirflowUnreachable`
when nothing answers, :class:`AirflowAPIError` when Airflow answers but refuses.

Environment (:meth:`AirflowAPI.from_env`): ``CHURNOPS_AIRFLOW_URL`` (e.g. http://airflow:8080),
``CHURNOPS_AIRFLOW_USER``, ``CHURNOPS_AIRFLOW_PASSWORD``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from churnops.logs import get_logger
from churnops.redaction import redact_url

log = get_logger(__name__)

ENV_URL, ENV_USER, ENV_PASSWORD = "CHURNOPS_AIRFLOW_URL", "CHURNOPS_AIRFLOW_USER", "CHURNOPS_AIRFLOW_PASSWORD"


class AirflowAPIError(RuntimeError):
    """Airflow refused a request (or cannot be configured); the message says which request and why."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  # the HTTP status Airflow answered with, when it answered


class AirflowAuthError(AirflowAPIError):
    """Airflow refused the user name and password."""


class AirflowUnreachable(AirflowAPIError):
    """No answer from the API (connection refused or timed out), as opposed to an answer that refuses."""


class AirflowAPI:
    """Airflow 3 REST client: JWT from ``POST /auth/token``, then ``/api/v2`` with a bearer token."""

    def __init__(self, base_url: str, username: str, password: str, timeout_s: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.username, self.password = username, password
        self.timeout_s = timeout_s
        self._token: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, timeout_s: float = 10.0) -> AirflowAPI:
        """A client of the Airflow that ``CHURNOPS_AIRFLOW_URL`` / ``_USER`` / ``_PASSWORD`` name."""
        env = os.environ if env is None else env
        missing = [v for v in (ENV_URL, ENV_USER, ENV_PASSWORD) if not env.get(v)]
        if missing:
            raise AirflowAPIError(f"cannot reach Airflow: set {', '.join(missing)}")
        return cls(env[ENV_URL], env[ENV_USER], env[ENV_PASSWORD], timeout_s)

    @property
    def address(self) -> str:
        """The base URL as it may be shown (no password)."""
        return redact_url(self.base_url)

    def _request(
        self, method: str, path: str, body: Any = None, *, auth: bool = True, ok: Iterable[int] = (200, 201)
    ) -> Any:
        import requests

        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token()}"
        try:
            resp = requests.request(
                method,
                self.base_url + path,
                headers=headers,
                timeout=self.timeout_s,
                data=None if body is None else json.dumps(body),
            )
        except requests.RequestException as exc:
            raise AirflowUnreachable(
                f"Airflow at {self.address} did not answer {method} {path}: {redact_url(str(exc))}"
            ) from exc
        if resp.status_code == 401 and auth and self._token is not None:
            self._token = None  # expired: get a new one once
            return self._request(method, path, body, auth=auth, ok=ok)
        if resp.status_code not in set(ok):
            raise AirflowAPIError(
                f"{method} {self.address}{path} answered HTTP {resp.status_code}: {resp.text[:500]}",
                status=resp.status_code,
            )
        return resp.json() if resp.content else None

    def token(self) -> str:
        if self._token is None:
            try:
                doc = self._request(
                    "POST", "/auth/token", {"username": self.username, "password": self.password}, auth=False
                )
            except AirflowUnreachable:
                raise
            except AirflowAPIError as exc:
                raise AirflowAuthError(
                    f"Airflow at {self.address} refused the credentials of user {self.username!r} "
                    f"({ENV_USER} / {ENV_PASSWORD}): {exc}",
                    status=exc.status,
                ) from exc
            try:
                self._token = str(doc["access_token"])
            except (TypeError, KeyError) as exc:
                raise AirflowAPIError(f"POST /auth/token answered without an access_token: {doc!r}") from exc
        return self._token

    def health(self) -> dict[str, Any]:
        """The JSON of ``/api/v2/monitor/health`` (no authentication needed)."""
        return self._request("GET", "/api/v2/monitor/health", auth=False)

    def dag(self, dag_id: str) -> dict[str, Any]:
        return self._request("GET", f"/api/v2/dags/{dag_id}")

    def dag_ids(self) -> list[str]:
        doc = self._request("GET", "/api/v2/dags?limit=100")
        return sorted(d["dag_id"] for d in doc.get("dags", []))

    def import_errors(self) -> list[dict[str, Any]]:
        doc = self._request("GET", "/api/v2/importErrors?limit=100")
        return list(doc.get("import_errors", []))

    def unpause(self, dag_id: str) -> None:
        self._request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})

    def trigger(
        self,
        dag_id: str,
        conf: Mapping[str, Any] | None = None,
        *,
        dag_run_id: str | None = None,
        note: str | None = None,
        unpause: bool = True,
    ) -> dict[str, Any]:
        """Create a run of `dag_id` with `conf` (with `unpause`, first what the UI's toggle does).

        With a `dag_run_id`, a run of that id that exists already (an earlier attempt got through) is
        returned as ``{"dag_run_id": ..., "existed": True}``: a retried request never starts a second run.
        """
        if unpause:
            self.unpause(dag_id)
        body: dict[str, Any] = {"logical_date": None, "conf": dict(conf or {})}
        if dag_run_id:
            body["dag_run_id"] = dag_run_id
        if note:
            body["note"] = note
        try:
            return self._request("POST", f"/api/v2/dags/{dag_id}/dagRuns", body)
        except (AirflowUnreachable, AirflowAuthError):
            raise
        except AirflowAPIError as exc:
            if exc.status == 409 and dag_run_id:
                log.info("airflow.run_exists", dag_id=dag_id, dag_run_id=dag_run_id)
                return {"dag_run_id": dag_run_id, "existed": True}
            hint = " (is the DAG deployed and unpaused?)" if exc.status == 404 else ""
            raise AirflowAPIError(f"Airflow did not start {dag_id}: {exc}{hint}", status=exc.status) from exc

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        doc = self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=200")
        return list(doc.get("task_instances", []))

    def set_task_state(self, dag_id: str, run_id: str, task_id: str, state: str) -> None:
        """What "Mark as failed/success" in the UI does: Airflow then ends a running task (SIGTERM)."""
        self._request("PATCH", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}",
                      {"new_state": state})

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        doc = self._request(
            "GET",
            f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}"
            f"/xcomEntries/{key}?deserialize=true",
        )
        return doc.get("value")

    def wait_for_run(
        self,
        dag_id: str,
        run_id: str,
        timeout_s: float = 1800,
        poll_s: float = 3.0,
        on_poll: Callable[[dict[str, Any]], None] | None = None,
        patience_s: float = 120.0,
    ) -> dict[str, Any]:
        """Poll the run until it finishes (success or failed); AirflowAPIError on timeout.

        A busy API server may miss a poll or two (one worker, CPU taken by the tasks): polling goes on
        until it has not answered for `patience_s`.
        """
        deadline = time.monotonic() + timeout_s
        last_answer = time.monotonic()
        while True:
            try:
                run = self.dag_run(dag_id, run_id)
            except AirflowUnreachable as exc:
                if time.monotonic() - last_answer > patience_s:
                    raise AirflowAPIError(f"{exc} (no answer for {patience_s:.0f} s)") from exc
                log.warning("airflow.poll_missed", dag_id=dag_id, run_id=run_id, error=str(exc))
                time.sleep(poll_s)
                continue
            last_answer = time.monotonic()
            if on_poll is not None:
                on_poll(run)
            if run.get("state") in ("success", "failed"):
                return run
            if time.monotonic() > deadline:
                raise AirflowAPIError(
                    f"run {run_id} of {dag_id} is still {run.get('state')} after "
                    f"{timeout_s:.0f} s; follow it in the UI"
                )
            time.sleep(poll_s)

    def wait_for_dags(self, dag_ids: Iterable[str], timeout_s: float = 120, poll_s: float = 2.0) -> list[str]:
        """Wait until the dag-processor has parsed `dag_ids`; AirflowAPIError names import errors."""
        wanted = set(dag_ids)
        deadline = time.monotonic() + timeout_s
        while True:
            found = set(self.dag_ids())
            if wanted <= found:
                return sorted(found)
            errors = self.import_errors()
            if errors or time.monotonic() > deadline:
                detail = "\n".join(
                    f"{e.get('filename')}: {str(e.get('stack_trace', ''))[-800:]}" for e in errors
                )
                raise AirflowAPIError(
                    f"DAGs {sorted(wanted - found)} are not loaded"
                    + (
                        f"; import errors:\n{detail}"
                        if detail
                        else f" after {timeout_s:.0f} s (see the dag-processor log)"
                    )
                )
            time.sleep(poll_s)
