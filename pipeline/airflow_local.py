"""A local Airflow 3 for the project's DAGs: `airflow standalone` started, watched and stopped from Python.

`churnops airflow up` runs :meth:`LocalAirflow.start`. What it sets up, and why:

- ``AIRFLOW_HOME`` is ``<project home>/airflow-home`` (gitignored): metadata DB, logs, the standalone's
  own log (``standalone.log``), its pid file and the admin password file all live there.
- The DAGs folder is the project's ``dags/``; example DAGs are off.
- Metadata DB: SQLite in ``AIRFLOW_HOME`` by default, or any SQLAlchemy URL (PostgreSQL:
  ``postgresql+psycopg2://user@host:5432/airflow``) from ``--db-url`` / ``CHURNOPS_AIRFLOW_DB_URL``.
- LocalExecutor with a small parallelism (2 to 4): the default of 32 spawns dozens of processes that fight
  over a laptop's cores.
- SimpleAuthManager with one ``admin`` user whose password is known: ``CHURNOPS_AIRFLOW_PASSWORD`` if set,
  otherwise generated once and kept (mode 0600) in ``AIRFLOW_HOME/passwords.json``, the file
  ``AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE`` points at.
- `airflow standalone` launches its parts (scheduler, dag-processor, api-server, triggerer) as plain
  ``airflow`` commands, so this interpreter's ``bin`` goes first on ``PATH`` (without it every part dies and
  the parent hangs). It runs in its own process group (``setsid``) so that `down` stops every part with one
  ``SIGTERM`` to the group.
- Ready means ``GET /api/v2/monitor/health`` reports the metadata DB, the scheduler and the dag-processor
  healthy (that endpoint answers 200 even when the scheduler is dead, so its JSON is read).

Tasks inherit the environment of `up`: ``CHURNOPS_HOME``, ``MLFLOW_TRACKING_URI``, ``REDIS_URL``, ... set
when `up` runs are what the DAGs use.

It talks to the running instance through the platform's one REST client,
:class:`churnops.airflow_rest.AirflowAPI`.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from churnops.airflow_rest import AirflowAPI, AirflowAPIError
from churnops.io import write_json_atomic
from churnops.logs import get_logger
from churnops.redaction import redact_url
from pipeline.processes import free_port, group_alive, pid_alive, port_free

log = get_logger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DAGS_FOLDER = PROJECT_ROOT / "dags"
PROJECT_DAGS = ("churn_training", "churn_drift_monitor", "churn_batch_scoring")
ADMIN_USER = "admin"
ENV_DB_URL = "CHURNOPS_AIRFLOW_DB_URL"
ENV_PASSWORD = "CHURNOPS_AIRFLOW_PASSWORD"
ENV_PORT = "CHURNOPS_AIRFLOW_PORT"
# The parts `airflow standalone` starts; each must report healthy before `up` returns.
REQUIRED_COMPONENTS = ("metadatabase", "scheduler", "dag_processor")


class AirflowLocalError(AirflowAPIError):
    """The local Airflow could not be started or stopped; the message says why and where to look.

    A kind of :class:`churnops.airflow_rest.AirflowAPIError`, so one ``except AirflowAPIError`` covers the
    instance and its API."""


def unhealthy_components(
    health: Mapping[str, Any], required: Iterable[str] = REQUIRED_COMPONENTS
) -> list[str]:
    """Names of required components the health JSON does not report as healthy."""
    return [name for name in required if (health.get(name) or {}).get("status") != "healthy"]


# -- the local standalone ------------------------------------------------------------------------
@dataclass
class LocalAirflow:
    """One local `airflow standalone` for a project home. Nothing happens until a method is called."""

    project_home: Path
    dags_folder: Path = DEFAULT_DAGS_FOLDER
    port: int = 8080
    db_url: str | None = None
    parallelism: int = 2
    airflow_home: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.project_home = Path(self.project_home).resolve()
        self.dags_folder = Path(self.dags_folder).resolve()
        self.airflow_home = Path(self.airflow_home or self.project_home / "airflow-home").resolve()
        if not 1 <= self.parallelism <= 32:
            raise AirflowLocalError(f"parallelism must be between 1 and 32, not {self.parallelism}")

    @classmethod
    def from_env(
        cls, project_home: Path, env: Mapping[str, str] | None = None, **overrides: Any
    ) -> LocalAirflow:
        env = os.environ if env is None else env
        kwargs: dict[str, Any] = {"db_url": env.get(ENV_DB_URL) or None}
        if env.get(ENV_PORT):
            kwargs["port"] = int(env[ENV_PORT])
        kwargs.update({k: v for k, v in overrides.items() if v is not None})
        return cls(project_home=project_home, **kwargs)

    # paths ----------------------------------------------------------------------------------
    @property
    def home(self) -> Path:
        assert self.airflow_home is not None
        return self.airflow_home

    @property
    def state_file(self) -> Path:
        return self.home / "standalone.json"

    @property
    def log_file(self) -> Path:
        return self.home / "standalone.log"

    @property
    def password_file(self) -> Path:
        return self.home / "passwords.json"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def sql_alchemy_conn(self) -> str:
        return self.db_url or f"sqlite:///{self.home / 'airflow.db'}"

    # credentials ----------------------------------------------------------------------------
    def password(self, env: Mapping[str, str] | None = None) -> str:
        """The admin password: CHURNOPS_AIRFLOW_PASSWORD, else the one kept in passwords.json (made once)."""
        env = os.environ if env is None else env
        wanted = env.get(ENV_PASSWORD)
        current: str | None = None
        if self.password_file.is_file():
            try:
                current = json.loads(self.password_file.read_text()).get(ADMIN_USER)
            except (ValueError, AttributeError) as exc:
                raise AirflowLocalError(
                    f"{self.password_file} is not a JSON object of user -> password; "
                    f"delete it and run `churnops airflow up` again"
                ) from exc
        password = wanted or current or secrets.token_urlsafe(12)
        if password != current:
            self.home.mkdir(parents=True, exist_ok=True)
            _write_private(self.password_file, json.dumps({ADMIN_USER: password}) + "\n")
        return password

    def api(self, timeout_s: float = 10.0) -> AirflowAPI:
        """A client of the running instance (its address from the state file `up` wrote), else of `url`."""
        url = (self.read_state() or {}).get("url") or self.url
        return AirflowAPI(url, ADMIN_USER, self.password(), timeout_s=timeout_s)

    # environment ----------------------------------------------------------------------------
    def environment(
        self, base: Mapping[str, str] | None = None, log_ports: tuple[int, int] = (8793, 8794)
    ) -> dict[str, str]:
        """The environment `airflow standalone` (and so every task) runs with."""
        env = dict(os.environ if base is None else base)
        bin_dir = str(Path(sys.executable).parent)
        env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
        env["CHURNOPS_HOME"] = str(self.project_home)  # the tasks work on this project
        env.setdefault("DVC_NO_ANALYTICS", "1")
        env.setdefault("TRANSFORMERS_VERBOSITY", "error")
        env["PYTHONUNBUFFERED"] = "1"  # standalone.log shows each line as it is written
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": str(self.parallelism),
                "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(self.parallelism),
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.password_file),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.sql_alchemy_conn,
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.port),
                "AIRFLOW__API__BASE_URL": self.url + "/",
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",  # new DAG files show up within 30 s
                # task-log servers of the scheduler and triggerer (the UI reads running tasks' logs there)
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(log_ports[0]),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(log_ports[1]),
            }
        )
        env.update(self.extra_env)
        return env

    # state ----------------------------------------------------------------------------------
    def read_state(self) -> dict[str, Any] | None:
        if not self.state_file.is_file():
            return None
        try:
            return json.loads(self.state_file.read_text())
        except ValueError:
            return None

    def running_pid(self) -> int | None:
        """The pid of our standalone (its process group id) if it is alive, else None."""
        state = self.read_state()
        if state is None:
            return None
        pid = int(state["pid"])
        return pid if pid_alive(pid) or group_alive(pid) else None

    def _log_tail(self, lines: int = 40) -> str:
        if not self.log_file.is_file():
            return "(no log)"
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])

    # lifecycle ------------------------------------------------------------------------------
    def start(
        self,
        timeout_s: float = 600,
        wait_dags: Iterable[str] = PROJECT_DAGS,
        progress: Callable[[str], None] | None = None,
    ) -> dict[str, Any]:
        """Start `airflow standalone` in its own process group and wait until it is healthy."""
        say = progress or (lambda msg: log.info("airflow.up", step=msg))
        if not self.dags_folder.is_dir():
            raise AirflowLocalError(f"no DAGs folder at {self.dags_folder}")
        pid = self.running_pid()
        if pid is not None:
            raise AirflowLocalError(
                f"a local Airflow already runs for {self.project_home} (pid {pid}, "
                f"{self.url}); `churnops airflow status` shows it, `down` stops it"
            )
        if not port_free(self.port):
            raise AirflowLocalError(
                f"port {self.port} is in use on 127.0.0.1: choose another with --port (or env {ENV_PORT})"
            )
        # Internal log servers: Airflow's defaults (8793, 8794) when free, else any free port.
        log_ports = tuple(p if port_free(p) and p != self.port else free_port() for p in (8793, 8794))
        self.home.mkdir(parents=True, exist_ok=True)
        password = self.password()
        env = self.environment(log_ports=log_ports)  # type: ignore[arg-type]
        airflow_bin = Path(sys.executable).parent / "airflow"
        if not airflow_bin.exists():
            raise AirflowLocalError(
                f"no `airflow` executable next to {sys.executable}: install the project's "
                f"environment (uv sync)"
            )
        with open(self.log_file, "ab") as out:
            out.write(f"\n==== churnops airflow up {time.strftime('%Y-%m-%d %H:%M:%S')} ====\n".encode())
            out.flush()
            proc = subprocess.Popen(
                [str(airflow_bin), "standalone"],
                cwd=self.home,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # setsid: its own process group
        state = {
            "pid": proc.pid,
            "url": self.url,
            "port": self.port,
            "started_at": time.time(),
            "airflow_home": str(self.home),
            "dags_folder": str(self.dags_folder),
            "project_home": str(self.project_home),
            "database": redact_url(self.sql_alchemy_conn),
            "parallelism": self.parallelism,
            "log": str(self.log_file),
        }
        write_json_atomic(self.state_file, state)
        say(f"started airflow standalone (pid {proc.pid}); waiting for {self.url}/api/v2/monitor/health")
        api = AirflowAPI(self.url, ADMIN_USER, password, timeout_s=5)
        try:
            health = self._wait_healthy(api, proc, timeout_s)
            say("healthy: " + ", ".join(f"{k}={(v or {}).get('status')}" for k, v in health.items()))
            dags = api.wait_for_dags(wait_dags, timeout_s=max(30.0, timeout_s / 2)) if wait_dags else []
        except BaseException:
            self.stop()
            raise
        return {
            **state,
            "user": ADMIN_USER,
            "password": password,
            "password_file": str(self.password_file),
            "health": health,
            "dags": dags,
        }

    def _wait_healthy(
        self, api: AirflowAPI, proc: subprocess.Popen[bytes], timeout_s: float
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        last: Any = "no answer yet"
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AirflowLocalError(
                    f"airflow standalone exited with code {proc.returncode}; "
                    f"log {self.log_file}:\n{self._log_tail()}"
                )
            try:
                health = api.health()
            except AirflowAPIError as exc:
                last = str(exc)
            else:
                bad = unhealthy_components(health)
                if not bad:
                    return health
                last = {name: health.get(name) for name in bad}
            time.sleep(2)
        raise AirflowLocalError(
            f"Airflow at {self.url} not healthy after {timeout_s:.0f} s (last: {last}); "
            f"log {self.log_file}:\n{self._log_tail()}"
        )

    def stop(self, timeout_s: float = 60) -> bool:
        """SIGTERM to the process group, then SIGKILL after `timeout_s`. False when nothing was running."""
        state = self.read_state()
        if state is None:
            return False
        pgid = int(state["pid"])
        if not group_alive(pgid):
            self.state_file.unlink(missing_ok=True)
            return False
        os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            pid_alive(pgid)  # reaps the leader when it is our child
            if not group_alive(pgid):
                break
            time.sleep(0.5)
        else:
            log.warning("airflow.kill", pgid=pgid, reason=f"still running {timeout_s:.0f} s after SIGTERM")
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            time.sleep(1)
            pid_alive(pgid)
        self.state_file.unlink(missing_ok=True)
        return True

    def status(self) -> dict[str, Any]:
        """Whether it runs, the health JSON and the DAGs it knows (when reachable)."""
        state = self.read_state() or {}
        pid = self.running_pid()
        out: dict[str, Any] = {
            "running": pid is not None,
            "pid": pid,
            "url": self.url,
            "airflow_home": str(self.home),
            "log": str(self.log_file),
            **state,
        }
        if pid is None:
            return out
        api = AirflowAPI(state.get("url", self.url), ADMIN_USER, self.password(), timeout_s=5)
        try:
            out["health"] = api.health()
            out["unhealthy"] = unhealthy_components(out["health"])
            out["dags"] = {d: api.dag(d).get("is_paused") for d in api.dag_ids()}
            out["import_errors"] = [e.get("filename") for e in api.import_errors()]
        except AirflowAPIError as exc:
            out["error"] = str(exc)
        return out


def _write_private(path: Path, text: str) -> None:
    """Write a secret atomically, readable by its owner only from the first byte."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
