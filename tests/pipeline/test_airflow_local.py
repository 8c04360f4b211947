"""`churnops airflow up/down/status`: the environment the local standalone gets, its password, its guards."""

from __future__ import annotations

import json
import os
import socket
import stat
import sys
from pathlib import Path

import pytest

from pipeline.airflow_local import (
    ADMIN_USER,
    AirflowLocalError,
    LocalAirflow,
    unhealthy_components,
)


def test_the_standalone_gets_the_projects_dags_a_known_login_and_a_small_parallelism(tmp_path: Path) -> None:
    local = LocalAirflow(project_home=tmp_path, port=8123, parallelism=3)
    env = local.environment(base={"PATH": "/usr/bin"})
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)  # its parts run `airflow`
    assert env["AIRFLOW_HOME"] == str(tmp_path / "airflow-home")
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(Path(__file__).resolve().parents[2] / "dags")
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["AIRFLOW__CORE__PARALLELISM"] == "3"
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] == str(local.password_file)
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == f"{ADMIN_USER}:admin"
    assert (
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"sqlite:///{tmp_path / 'airflow-home' / 'airflow.db'}"
    )
    assert env["AIRFLOW__API__BASE_URL"] == "http://127.0.0.1:8123/"  # tasks reach the execution API there
    assert env["CHURNOPS_HOME"] == str(tmp_path)


def test_postgresql_metadata_db_by_url(tmp_path: Path) -> None:
    url = "postgresql+psycopg2://airflow:secret@127.0.0.1:5432/airflow"
    local = LocalAirflow.from_env(
        tmp_path, env={"CHURNOPS_AIRFLOW_DB_URL": url, "CHURNOPS_AIRFLOW_PORT": "8181"}
    )
    assert local.environment(base={})["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == url
    assert local.port == 8181


def test_the_admin_password_is_made_once_kept_private_and_overridable(tmp_path: Path) -> None:
    local = LocalAirflow(project_home=tmp_path)
    first = local.password(env={})
    assert len(first) >= 12 and local.password(env={}) == first
    assert json.loads(local.password_file.read_text()) == {ADMIN_USER: first}
    assert stat.S_IMODE(local.password_file.stat().st_mode) == 0o600
    assert local.password(env={"CHURNOPS_AIRFLOW_PASSWORD": "chosen-one"}) == "chosen-one"
    assert json.loads(local.password_file.read_text()) == {ADMIN_USER: "chosen-one"}


def test_health_json_is_read_not_just_the_status_code() -> None:
    healthy = {
        "metadatabase": {"status": "healthy"},
        "scheduler": {"status": "healthy"},
        "triggerer": {"status": "healthy"},
        "dag_processor": {"status": "healthy"},
    }
    assert unhealthy_components(healthy) == []
    dead_scheduler = {**healthy, "scheduler": {"status": "unhealthy", "latest_scheduler_heartbeat": None}}
    assert unhealthy_components(dead_scheduler) == ["scheduler"]
    assert unhealthy_components({"metadatabase": {"status": "healthy"}}) == ["scheduler", "dag_processor"]


def test_up_refuses_a_port_in_use_at_once(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(AirflowLocalError, match=f"port {port} is in use"):
            LocalAirflow(project_home=tmp_path, port=port).start(timeout_s=10)
    assert not (tmp_path / "airflow-home" / "standalone.json").exists()


def test_status_and_down_when_nothing_runs(tmp_path: Path) -> None:
    local = LocalAirflow(project_home=tmp_path)
    assert local.status()["running"] is False
    assert local.stop() is False


def test_following_a_run_survives_an_api_server_that_misses_a_poll() -> None:
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from churnops.airflow_rest import AirflowAPI, AirflowAPIError

    polls: list[float] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802  (POST /auth/token)
            self._json({"access_token": "jwt"})

        def do_GET(self) -> None:  # noqa: N802
            polls.append(time.monotonic())
            if len(polls) == 1:
                time.sleep(1.5)  # longer than the client's timeout: a missed poll
            self._json({"dag_run_id": "r1", "state": "running" if len(polls) < 3 else "success"})

        def _json(self, doc: dict) -> None:
            body = json.dumps(doc).encode()
            try:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        api = AirflowAPI(f"http://127.0.0.1:{server.server_address[1]}", "admin", "pw", timeout_s=0.5)
        run = api.wait_for_run("churn_training", "r1", timeout_s=30, poll_s=0.05, patience_s=10)
        assert run["state"] == "success" and len(polls) >= 3
        with pytest.raises(AirflowAPIError, match="no answer for"):
            polls.clear()
            api.wait_for_run("churn_training", "r1", timeout_s=30, poll_s=0.05, patience_s=0.2)
    finally:
        server.shutdown()
        server.server_close()


def test_commands_talk_to_the_port_the_running_instance_was_started_on(tmp_path: Path) -> None:
    from churnops.io import write_json_atomic

    started = LocalAirflow(project_home=tmp_path, port=8931)
    started.home.mkdir(parents=True)
    write_json_atomic(started.state_file, {"pid": 999999999, "url": started.url})
    later = LocalAirflow(project_home=tmp_path)  # `churnops airflow trigger` without --port
    assert later.api().base_url == "http://127.0.0.1:8931"
