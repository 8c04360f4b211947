"""Serving fixtures: a real MLflow registry with two registered versions, a Redis of the suite's own, the
Flask app in-process and the real server (gunicorn through `churnops serve`) in a subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests
import yaml

from churnops.settings import deep_merge

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "churnops-test"
SERVING_OVERRIDES = {
    "serving": {"reload_interval_s": 0.25, "workers": 2, "max_batch": 5, "max_body_bytes": 65536,
                "client_timeout_s": 2},
    "feature_store": {"namespace": NAMESPACE, "chunk_size": 500},
}


@dataclass
class ModelStore:
    """A project home whose MLflow registry holds versions trained on `gold` (v1 is champion at first)."""

    home: Path
    settings: Any
    gold: pd.DataFrame
    versions: list[str] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR", "SYSTEMROOT")}
        return {**keep, "CHURNOPS_HOME": str(self.home), "REDIS_URL": self.settings.redis_url,
                "MLFLOW_TRACKING_URI": self.settings.mlflow_tracking_uri, "CHURNOPS_LOG_FORMAT": "text",
                "TRANSFORMERS_VERBOSITY": "error", "GIT_PYTHON_REFRESH": "quiet"}

    def set_champion(self, version: str) -> None:
        from mlflow import MlflowClient

        uri = self.settings.mlflow_tracking_uri
        MlflowClient(tracking_uri=uri, registry_uri=uri).set_registered_model_alias(
            self.settings.params.register_.model_name, "champion", version)

    @property
    def features(self) -> pd.DataFrame:
        schema = self.settings.schema
        return self.gold[[schema.id_column, *schema.feature_columns]]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_home(home: Path, overrides: dict[str, Any]) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    (home / "params.yaml").write_text(yaml.safe_dump(deep_merge(params, overrides), sort_keys=False))
    return home


def settings_for(home: Path, redis_url: str) -> Any:
    from churnops.settings import load_settings

    return load_settings(home=home, env={"REDIS_URL": redis_url})


def make_gold(settings: Any, rows: int = 800, seed: int = 7) -> pd.DataFrame:
    from churnops.data.generate import generate

    schema = settings.schema
    table = generate(schema, rows, seed)
    gold = table[[schema.id_column, *schema.feature_columns]].copy()
    gold["churn"] = (table[schema.target.column] == schema.target.positive).astype("int8")
    return gold


def register_xgboost(settings: Any, gold: pd.DataFrame, *, n_estimators: int, max_depth: int,
                     threshold: float, with_outliers: bool = False) -> str:
    """Train a small XGBoost pipeline, log it the way training does, register it (no alias moves)."""
    import mlflow
    from sklearn.pipeline import Pipeline
    from xgboost import XGBClassifier

    from churnops import registry, tracking
    from churnops.features import FeatureEncoder

    schema = settings.schema
    X, y = gold[schema.feature_columns], gold["churn"].to_numpy()  # noqa: N806
    pipeline = Pipeline([("encode", FeatureEncoder.from_schema(schema)),
                         ("model", XGBClassifier(n_estimators=n_estimators, max_depth=max_depth, n_jobs=1,
                                                 random_state=0, tree_method="hist"))]).fit(X, y)
    experiment = tracking.configure_tracking(settings)
    with mlflow.start_run(experiment_id=experiment) as run:
        info = tracking.log_model(pipeline, X, settings)
        if with_outliers:  # as training logs it; versions without one are served without `anomaly`
            import tempfile

            from churnops.outliers import fit_from_settings

            with tempfile.TemporaryDirectory() as tmp:
                path = fit_from_settings(X, settings).save(Path(tmp) / "isolation_forest.npz")
                mlflow.log_artifact(str(path), artifact_path="outliers")
        mlflow.log_param("threshold", threshold)
        mlflow.log_metric("test_roc_auc", 0.9)
        mlflow.set_tags({tracking.TAG_MODEL_URI: info.model_uri, tracking.TAG_MODEL_ID: info.model_id,
                         "candidate": "xgboost", "data_version": "test-data"})
    return registry.register(settings, run.info.run_id)


@pytest.fixture(scope="session")
def serving_redis(redis_process_factory: Any) -> Any:
    """The serving suite's own Redis (the shared one's db 15 is flushed by other suites' fixtures)."""
    return redis_process_factory()


@pytest.fixture(scope="session")
def model_store(tmp_path_factory: pytest.TempPathFactory, serving_redis: Any) -> ModelStore:
    home = write_home(tmp_path_factory.mktemp("serving") / "home", SERVING_OVERRIDES)
    settings = settings_for(home, serving_redis.url)
    gold = make_gold(settings)
    store = ModelStore(home, settings, gold)
    store.versions.append(register_xgboost(settings, gold, n_estimators=30, max_depth=3, threshold=0.5,
                                           with_outliers=True))
    store.versions.append(register_xgboost(settings, gold, n_estimators=8, max_depth=2, threshold=0.4))
    store.set_champion(store.versions[0])
    return store


@pytest.fixture
def champion_v1(model_store: ModelStore) -> Iterator[ModelStore]:
    """v1 is champion during the test and after it."""
    model_store.set_champion(model_store.versions[0])
    yield model_store
    model_store.set_champion(model_store.versions[0])


@pytest.fixture(scope="session")
def pushed(model_store: ModelStore) -> str:
    """Every gold customer's features in the suite's Redis; returns the feature-set version."""
    from churnops.feature_store import FeatureStore

    return FeatureStore.from_settings(model_store.settings).push(model_store.features).version


@pytest.fixture(scope="session")
def example_body(model_store: ModelStore) -> dict[str, Any]:
    from serving.openapi import example_request

    return example_request(model_store.settings)


# -- the real server -------------------------------------------------------------------------------
class LiveServer:
    def __init__(self, store: ModelStore, log_path: Path, *, env: dict[str, str] | None = None,
                 workers: int = 2, threads: int = 1, args: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.workers = workers
        self.headers: dict[str, str] = {}  # sent with /metrics (an operator token when tokens are required)
        self._log = open(log_path, "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "churnops"), "serve", "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", str(workers), "--threads", str(threads), *args],
            cwd=store.home, env=env or store.env, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True)

    def wait_ready(self, timeout_s: float = 300.0) -> LiveServer:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                # healthy, and every worker has loaded the model (one answering is not enough: tests
                # count on all of them)
                if (requests.get(self.url + "/health", timeout=2).status_code == 200
                        and self.workers_serving() == self.workers):
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the server did not become healthy in {timeout_s} s:\n{self.log()}")

    def workers_serving(self) -> int:
        """Workers that have loaded a model, by the churnops_model_workers gauge of /metrics."""
        text = requests.get(self.url + "/metrics", headers=self.headers, timeout=2).text
        return int(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                       if line.startswith("churnops_model_workers{")))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def children(self) -> set[int]:
        """The pids of the master's child processes (the workers, and nginx in front of them)."""
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return {int(pid) for pid in path.read_text().split()}

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._log.close()


@pytest.fixture(scope="session")
def live_server(model_store: ModelStore, pushed: str, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[LiveServer]:
    """`churnops serve` (gunicorn, 2 workers) on the suite's registry and Redis."""
    model_store.set_champion(model_store.versions[0])
    with running(LiveServer(model_store, tmp_path_factory.mktemp("server") / "serve.log")) as server:
        yield server


@contextmanager
def running(server: LiveServer) -> Iterator[LiveServer]:
    """The server once ready; stopped afterwards (also when it never became ready)."""
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture
def server_factory(model_store: ModelStore, tmp_path: Path) -> Iterator[Any]:
    """Start extra servers (e.g. on a Redis of the test's own): `server_factory(env_overrides)`."""
    started: list[LiveServer] = []

    def _start(env_overrides: dict[str, str] | None = None, workers: int = 2, threads: int = 1,
               args: tuple[str, ...] = ()) -> LiveServer:
        env = {**model_store.env, **(env_overrides or {})}
        server = LiveServer(model_store, tmp_path / f"serve-{len(started)}.log", env=env, workers=workers,
                            threads=threads, args=args)
        started.append(server)
        return server.wait_ready()

    yield _start
    for server in started:
        server.stop()
