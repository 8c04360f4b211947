"""A password in every URI the platform uses (Redis, MLflow, PostgreSQL, S3, Airflow, the alert webhooks)
appears in no answer and no log line: the server, a feature push, a drift check (alert and retraining
trigger), a batch scoring and `churnops airflow status`, each the real command against real services.

Redis requires the password (a redis-server of the test's own); MLflow is a real `mlflow server` reached
through a URI with user and password; PostgreSQL (trust auth) accepts the URL with its password; the
Airflow and the webhook are addresses where nothing answers, so their errors are what gets reported.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import requests

from tests.conftest import RedisProcess, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SECRET = "Pw4ssw0rdN0tShown"
BIN = Path(sys.executable).parent


def _unused_port() -> int:
    return free_port()  # bound and released: nothing listens there


@pytest.fixture(scope="module")
def secret_home(trained_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("secrets") / "home"
    shutil.copytree(trained_home, home, symlinks=True)
    return home


@pytest.fixture(scope="module")
def mlflow_url(secret_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `mlflow server` on the home's store, addressed with a user and the password."""
    port = free_port()
    log = tmp_path_factory.mktemp("mlflow") / "server.log"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{secret_home / 'mlflow' / 'mlflow.db'}"],
            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while True:
            assert proc.poll() is None, f"mlflow server exited:\n{log.read_text()[-3000:]}"
            try:
                if requests.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, f"mlflow server not healthy:\n{log.read_text()[-3000:]}"
            time.sleep(1)
        yield f"http://churnops:{SECRET}@127.0.0.1:{port}/"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def redis_with_password(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    import redis

    server = RedisProcess(tmp_path_factory.mktemp("redis-secret")).start()
    redis.Redis(port=server.port).config_set("requirepass", SECRET)
    try:
        yield f"redis://:{SECRET}@127.0.0.1:{server.port}/0"
    finally:
        server.stop(save=False)


class Seen:
    """Everything the platform said: command output, server answers, log files."""

    def __init__(self) -> None:
        self.texts: list[tuple[str, str]] = []

    def add(self, where: str, text: str) -> str:
        self.texts.append((where, text))
        return text

    def run(self, env: dict[str, str], *args: str, ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(BIN / "churnops"), *args], env=env, capture_output=True, text=True,
                              cwd=env["CHURNOPS_HOME"], timeout=900)
        self.add(f"churnops {' '.join(args)} (stdout)", proc.stdout)
        self.add(f"churnops {' '.join(args)} (stderr)", proc.stderr)
        what = f"churnops {' '.join(args)} exited {proc.returncode}"
        assert proc.returncode in ok, f"{what}:\n{proc.stderr[-3000:]}"
        return proc

    def answer(self, resp: requests.Response) -> requests.Response:
        headers = "\n".join(f"{k}: {v}" for k, v in resp.headers.items())
        self.add(f"{resp.request.method} {resp.url} -> {resp.status_code}", f"{headers}\n\n{resp.text}")
        return resp


def _payload(row: pd.Series, settings) -> dict:
    return {settings.schema.api_field(c): (row[c].item() if hasattr(row[c], "item") else row[c])
            for c in settings.schema.feature_columns}


def test_no_password_in_any_answer_or_log_line(
    secret_home: Path, mlflow_url: str, redis_with_password: str, postgres_url: str, tmp_path: Path
) -> None:
    from churnops.data.generate import DriftSpec, generate
    from churnops.settings import load_settings

    others = ("CHURNOPS_", "MLFLOW_", "REDIS_", "AWS_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(others)}
    env.update({
        "CHURNOPS_HOME": str(secret_home),
        "PATH": str(BIN) + os.pathsep + env.get("PATH", ""),
        "MLFLOW_TRACKING_URI": mlflow_url,
        "REDIS_URL": redis_with_password,
        "CHURNOPS_DATABASE_URL": postgres_url.replace("postgres@", f"postgres:{SECRET}@", 1),  # trust auth
        "AWS_ENDPOINT_URL_S3": f"http://churnops:{SECRET}@127.0.0.1:{_unused_port()}",
        "AWS_ACCESS_KEY_ID": "churnops",
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "CHURNOPS_AIRFLOW_URL": f"http://admin:{SECRET}@127.0.0.1:{_unused_port()}",
        "CHURNOPS_AIRFLOW_USER": "admin",
        "CHURNOPS_AIRFLOW_PASSWORD": SECRET,
        "CHURNOPS_ALERT_WEBHOOK_URL": f"http://hook:{SECRET}@127.0.0.1:{_unused_port()}/alert?token={SECRET}",
        # Slack's kind of address: the credential is the path itself
        "CHURNOPS_SLACK_WEBHOOK_URL": f"http://127.0.0.1:{_unused_port()}/services/T0001/B0002/{SECRET}",
        "CHURNOPS_LOG_LEVEL": "DEBUG",
    })
    seen = Seen()
    settings = load_settings(home=secret_home, env=env)

    # the feature store, in the Redis that requires the password
    seen.run(env, "features", "push")

    # the server: answers of every kind, then its log
    port = free_port()
    server_log = tmp_path / "serve.log"
    with open(server_log, "wb") as out:
        server = subprocess.Popen(
            [str(BIN / "churnops"), "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env, cwd=secret_home, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            assert server.poll() is None, f"churnops serve exited:\n{server_log.read_text()[-3000:]}"
            try:
                health = requests.get(f"{base}/health", timeout=5)
                if health.status_code == 200 and health.json().get("model_version"):
                    break
            except (requests.RequestException, ValueError, AttributeError):
                pass
            assert time.monotonic() < deadline, f"server not ready:\n{server_log.read_text()[-3000:]}"
            time.sleep(1)
        test = pd.read_parquet(secret_home / "data" / "features" / "test.parquet")
        customer = str(test.iloc[0][settings.schema.id_column])
        for path in ("/health", "/model", "/metrics", "/openapi.json"):
            seen.answer(requests.get(base + path, timeout=30))
        assert seen.answer(requests.post(f"{base}/predict", json=_payload(test.iloc[0], settings),
                                         timeout=30)).status_code == 200
        assert seen.answer(requests.post(f"{base}/predict?explain=true", json={"customer_id": customer},
                                         timeout=30)).status_code == 200
        seen.answer(requests.post(f"{base}/predict", json={"customer_id": "no-such-customer"}, timeout=30))
        seen.answer(requests.post(f"{base}/predict", json={"Customer_Age": "old"}, timeout=30))
        # a drifted window through /predict: the drift check below reads it from the prediction log
        spec = DriftSpec.parse(shifts=("Total_Trans_Ct=-0.8", "Total_Trans_Amt=-0.5"), mixes=(), scales=())
        drifted = generate(settings.schema, rows=600, seed=11, drift=spec)
        bodies = [_payload(r, settings) for _, r in drifted.iterrows()]
        limit = settings.params.serving.max_batch
        for start in range(0, len(bodies), limit):
            batch = {"instances": bodies[start:start + limit]}
            resp = requests.post(f"{base}/predict", json=batch, timeout=60)
            assert resp.status_code == 200, resp.text
        time.sleep(2)  # the prediction log's background writer sends its rows
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
    seen.add("churnops serve log", server_log.read_text())

    # the drift check: drift found, the webhook does not answer, the Airflow does not answer (exit 5)
    check = seen.run(env, "drift", "check", "--last-n", "600", ok=(3, 5))
    assert check.returncode == 5, check.stdout + check.stderr
    seen.run(env, "drift", "triggers")
    seen.run(env, "drift", "outbox")

    # a batch scoring into PostgreSQL, reached by a URL with the password
    scored = seen.run(env, "score", "--top", "3")
    assert "postgresql" in scored.stdout
    seen.run(env, "score", "--top", "3", "--json")

    # the local Airflow's status (none runs for this home)
    seen.run(env, "airflow", "status", ok=(1,))
    seen.run(env, "airflow", "status", "--json", ok=(1,))

    leaks = [f"{where}:\n{line}" for where, text in seen.texts for line in text.splitlines()
             if SECRET in line]
    assert not leaks, "the password appears in:\n" + "\n\n".join(leaks[:10])
    # and what the reports on disk say (drift report, its actions) is clean too
    for path in (secret_home / "reports" / "drift").rglob("*.json"):
        assert SECRET not in path.read_text(), path
    doc = json.loads((secret_home / "reports" / "drift" / "drift.json").read_text())
    assert doc["actions"]["retrain"]["status"] == "failed"  # it tried, and said why without the password
    assert "***" in doc["actions"]["retrain"]["error"]
