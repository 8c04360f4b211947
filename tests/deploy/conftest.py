"""Deployment fixtures: a real S3-compatible server (moto's standalone server, no Docker here), an environment
pointing boto3 / MLflow / DVC at it, and one fresh bucket per test."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from deploy_support import REPO, VENV_BIN, free_port

from pipeline.processes import stop_process_group

# Variables that would point the clients somewhere else than the test server.
FOREIGN_AWS = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "MLFLOW_S3_ENDPOINT_URL",
    "AWS_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_PROFILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "MLFLOW_TRACKING_URI",
    "CHURNOPS_ARTIFACT_ROOT",
    "CHURNOPS_DVC_REMOTE",
    "CHURNOPS_HOME",
    "CHURNOPS_PARAMS",
)


def _wait_http(url: str, proc: subprocess.Popen, timeout_s: float, log: Path) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return  # it answered
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    raise RuntimeError(f"nothing answered at {url} within {timeout_s} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's standalone S3-compatible HTTP server on a free localhost port (≈2 s to start)."""
    binary = VENV_BIN / "moto_server"
    if not binary.exists():
        pytest.fail(f"{binary} is missing: `uv sync` installs moto[server] from the dev group")
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto_server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(binary), "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=log.parent,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_http(url, proc, 60, log)
        yield url
    finally:
        stop_process_group(proc)


@pytest.fixture
def s3_env(s3_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """The process environment of a machine configured as docs/deployment.md prescribes: credentials and
    AWS_ENDPOINT_URL_S3 only (no MLflow- or DVC-specific endpoint variable); ~/.aws is ignored."""
    for name in FOREIGN_AWS:
        monkeypatch.delenv(name, raising=False)
    env = {
        "AWS_ACCESS_KEY_ID": "churnops-test",
        "AWS_SECRET_ACCESS_KEY": "churnops-test-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_S3": s3_server,
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "DVC_NO_ANALYTICS": "1",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def bucket(s3_env: dict[str, str]) -> str:
    """A new, empty bucket on the test server."""
    from churnops.storage import s3_client

    name = f"churnops-test-{uuid.uuid4().hex[:12]}"
    s3_client(s3_env).create_bucket(Bucket=name)
    return name


def run_cli(
    *args: str, env: dict[str, str], cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """`churnops ARGS` as a separate process (the console script of the project's environment)."""
    full_env = {**os.environ, **env, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(
        [str(VENV_BIN / "churnops"), *args],
        env=full_env,
        cwd=cwd or REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
