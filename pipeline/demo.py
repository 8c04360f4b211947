"""`churnops demo`: the whole loop on demo data, with embedded defaults, in one command.

generate a demo table -> version it with DVC and run the training pipeline -> push every customer's features
to Redis -> start the server -> send real predictions (full payload, by customer id, a batch) -> send a
drifted batch through /predict -> run the drift check on what the server saw (alert + retraining trigger).

The server and the drift check run as the real `churnops serve` / `churnops drift check` processes, exactly
as an operator would start them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pandas as pd
import requests

from churnops.logs import get_logger
from churnops.settings import Settings

log = get_logger(__name__)


class DemoError(RuntimeError):
    """The demo cannot go on; the message says what to do."""


def _say(text: str) -> None:
    print(f"\n=== {text}", flush=True)


def _churnops() -> str:
    exe = Path(sys.executable).parent / "churnops"
    return str(exe) if exe.exists() else "churnops"


def _env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env["CHURNOPS_HOME"] = str(settings.home)
    env["CHURNOPS_PARAMS"] = str(settings.params_path)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def ensure_redis(settings: Settings) -> str:
    """Make sure Redis answers at REDIS_URL; start a local redis-server when it does not and one exists."""
    import redis

    url = settings.redis_url
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1).ping()
        return url
    except redis.RedisError:
        pass
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 6379
    binary = shutil.which("redis-server")
    if binary is None or host not in ("127.0.0.1", "localhost", "::1"):
        raise DemoError(
            f"no Redis answers at {url}. Start one, e.g. `redis-server --daemonize yes --port {port} "
            f"--save '' --appendonly no` (Debian: `apt-get install redis-server`), or set REDIS_URL.")
    workdir = settings.home / ".redis"
    workdir.mkdir(exist_ok=True)
    subprocess.run([binary, "--daemonize", "yes", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                    "--appendonly", "no", "--dir", str(workdir), "--logfile", str(workdir / "redis.log")],
                   check=True)
    for _ in range(50):
        try:
            redis.Redis(host="127.0.0.1", port=port, socket_timeout=1).ping()
            log.info("demo.redis_started", port=port)
            return url
        except redis.RedisError:
            time.sleep(0.1)
    raise DemoError(f"started redis-server on port {port} but it does not answer; see {workdir}/redis.log")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(settings: Settings, port: int, timeout_s: float = 180) -> Iterator[str]:
    """`churnops serve` in its own process group, stopped on exit; yields its base URL."""
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([_churnops(), "serve", "--host", "127.0.0.1", "--port", str(port)],
                            env=_env(settings), start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise DemoError(f"`churnops serve` exited with {proc.returncode} before answering")
            try:
                if requests.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise DemoError(f"the server did not become healthy within {timeout_s:.0f} s")
            time.sleep(0.5)
        yield base
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def payload(row: pd.Series, settings: Settings) -> dict[str, Any]:
    """A gold-layer row as an application sends it (API field names, JSON types)."""
    schema = settings.schema
    body: dict[str, Any] = {}
    for col in schema.feature_columns:
        value = row[col]
        body[schema.api_field(col)] = value.item() if hasattr(value, "item") else value
    return body


def _show(title: str, response: requests.Response) -> dict[str, Any]:
    doc = response.json()
    print(f"--- {title} -> HTTP {response.status_code}")
    print(json.dumps(doc, indent=2)[:1500])
    return doc


def run_demo(settings: Settings, *, rows: int | None = None, seed: int | None = None,
             drift: bool = True) -> dict[str, Any]:
    from churnops.data.generate import DriftSpec, generate_to_csv
    from churnops.feature_store import FeatureStore
    from pipeline.cli import summarise_report
    from pipeline.run import run_training

    demo = settings.params.data.demo
    rows, seed = rows or demo.rows, demo.seed if seed is None else seed
    incoming = settings.home / "data" / "incoming"

    _say(f"1/5 generating {rows} demo customers (seed {seed})")
    table = generate_to_csv(settings.schema, rows=rows, seed=seed, out=incoming / "demo-customers.csv")
    print(table)

    _say("2/5 versioning with DVC and running the training pipeline (validate -> features -> train -> "
         "evaluate -> register)")
    report = run_training(settings, table)
    print(summarise_report(report))

    _say("3/5 pushing every customer's features to the Redis feature store")
    ensure_redis(settings)
    pushed = FeatureStore.from_settings(settings).push_file(settings.features_dir / "customers.parquet")
    print(json.dumps(pushed.to_dict(), indent=2, default=str))

    _say("4/5 starting the server and sending predictions")
    test = pd.read_parquet(settings.features_dir / "test.parquet")
    churner = test[test["churn"] == 1].iloc[0]
    stayer = test[test["churn"] == 0].iloc[0]
    results: dict[str, Any] = {"report": report}
    with running_server(settings, _free_port()) as base:
        results["full_payload"] = _show("full payload (a customer who churned)",
                                        requests.post(f"{base}/predict", json=payload(churner, settings)))
        cid = str(stayer[settings.schema.id_column])
        results["by_id"] = _show(f"by customer id {cid} (features from Redis), with explanation",
                                 requests.post(f"{base}/predict?explain=true", json={"customer_id": cid}))
        batch = [payload(r, settings) for _, r in test.head(3).iterrows()]
        results["batch"] = _show("a batch of 3", requests.post(f"{base}/predict", json={"instances": batch}))
        if drift:
            _say("5/5 a drifted batch through /predict, then the drift check on what the server saw")
            spec = DriftSpec.parse(shifts=("Total_Trans_Ct=-0.8", "Total_Trans_Amt=-0.5"),
                                   mixes=("Card_Category=Blue:0.5,Silver:0.3,Gold:0.15,Platinum:0.05",),
                                   scales=())
            drifted = generate_to_csv(settings.schema, rows=1000, seed=seed + 1, drift=spec,
                                      out=incoming / "demo-drifted.csv")
            frame = pd.read_csv(drifted)
            bodies = [payload(r, settings) for _, r in frame.iterrows()]
            limit = settings.params.serving.max_batch
            for start in range(0, len(bodies), limit):
                r = requests.post(f"{base}/predict", json={"instances": bodies[start:start + limit]})
                r.raise_for_status()
            print(f"sent {len(bodies)} drifted customers through /predict")
            # Retraining goes through Airflow's REST API; without a running Airflow the demo only shows the
            # alert and the run configuration the trigger would send (`churnops airflow up` enables it).
            airflow = bool(os.environ.get("CHURNOPS_AIRFLOW_URL"))
            args = [_churnops(), "drift", "check", *([] if airflow else ["--no-retrain"])]
            check = subprocess.run(args, env=_env(settings))
            results["drift_exit_code"] = check.returncode
            print(f"drift check exit code: {check.returncode} (0 no drift, 3 drift, 4 not enough data)")
            if not airflow:
                print("retraining: no Airflow configured (CHURNOPS_AIRFLOW_URL), so nothing was triggered; "
                      "with `churnops airflow up` the same check triggers churn_training with the drift "
                      "report as its configuration (see docs/monitoring.md)")
    return results
