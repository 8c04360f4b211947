"""Fixtures shared by every test tier. Area-specific fixtures live in tests/<area>/conftest.py."""

from __future__ import annotations

import copy
import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from churnops.settings import deep_merge, load_settings

REPO = Path(__file__).resolve().parents[1]
# project homes with a real pipeline, used by the pipeline and DAG tests alike
pytest_plugins = ["tests.project_homes"]
REAL_DATA = REPO.parent / "shared" / "data" / "BankChurners.csv"

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

# Budgets small enough for a 2-core CI machine; the real ones live in params.yaml.
FAST_TRAIN = {
    "cv_folds": 3,
    "n_jobs": 1,
    "search_iterations": {"logistic_regression": 2, "random_forest": 2, "xgboost": 2},
    "search_spaces": {
        "logistic_regression": {"C": {"log_uniform": [0.1, 10.0]}},
        "random_forest": {"n_estimators": {"choice": [50]}, "max_depth": {"choice": [8]}},
        "xgboost": {"n_estimators": {"choice": [80]}, "max_depth": {"int_uniform": [3, 5]},
                    "learning_rate": {"choice": [0.1]}},
    },
}

# Missing-value policies (schema.missing) for tables with gaps: an imputed numeric column with an indicator,
# a constant fill, a categorical column filled with its most frequent value.
GAP_POLICIES = {
    "Credit_Limit": {"impute": "median", "indicator": True},
    "Total_Revolving_Bal": {"impute": "constant", "value": 0},
    "Education_Level": {"impute": "most_frequent"},
}


def table_with_gaps(schema: Any, path: Path, rows: int = 1500, seed: int = 21) -> Path:
    """A generated customer table with blanks: empty fields and whitespace-only ones (as a telecom export
    has), in the three columns of GAP_POLICIES (rows // 25 gaps in each)."""
    import numpy as np

    from churnops.data.generate import generate

    frame = generate(schema, rows, seed).astype(object)
    rng = np.random.default_rng(seed)
    for col in GAP_POLICIES:
        gaps = rng.choice(rows, size=rows // 25, replace=False)
        frame.loc[gaps[::2], col] = ""
        frame.loc[gaps[1::2], col] = " "
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(autouse=True)
def _environment_restored() -> Iterator[None]:
    """Every test leaves the process environment as it found it. `mlflow.set_tracking_uri()` (called by
    in-process training and registry code) also sets MLFLOW_TRACKING_URI; a later test would otherwise
    follow it to a server that a finished test stopped."""
    saved = dict(os.environ)
    yield
    if dict(os.environ) != saved:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture
def make_home(tmp_path: Path) -> Callable[..., Path]:
    """A fresh project home with params.yaml (fast training budgets merged with `overrides`)."""

    def _make(overrides: dict[str, Any] | None = None, name: str = "home") -> Path:
        home = tmp_path / name
        home.mkdir(parents=True, exist_ok=True)
        params = yaml.safe_load((REPO / "params.yaml").read_text())
        params = deep_merge(params, {"train": FAST_TRAIN})
        params["train"]["search_spaces"] = copy.deepcopy(FAST_TRAIN["search_spaces"])  # replace, not merge
        params = deep_merge(params, overrides or {})
        (home / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        return home

    return _make


@pytest.fixture
def settings_factory(make_home: Callable[..., Path], monkeypatch: pytest.MonkeyPatch):
    """Settings for a fresh home, isolated from the caller's environment."""
    for var in ("CHURNOPS_HOME", "CHURNOPS_PARAMS", "MLFLOW_TRACKING_URI", "CHURNOPS_ARTIFACT_ROOT",
                "CHURNOPS_DVC_REMOTE", "CHURNOPS_DATABASE_URL"):
        monkeypatch.delenv(var, raising=False)

    def _make(overrides: dict[str, Any] | None = None, name: str = "home"):
        return load_settings(home=make_home(overrides, name))

    return _make


@pytest.fixture
def real_data() -> Path:
    if not REAL_DATA.is_file():
        pytest.skip(f"reference data not present at {REAL_DATA}")
    return REAL_DATA


def _redis_answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_timeout=1).ping())
    except redis.RedisError:
        return False


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A real Redis database reserved for tests (db 15), emptied before and after each test."""
    import redis

    url = os.environ.get("CHURNOPS_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    if not _redis_answers(url):
        pytest.fail(f"no Redis answers at {url}: start one (.ci/run does) or set CHURNOPS_TEST_REDIS_URL")
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A throwaway database on the local PostgreSQL (trust auth), dropped afterwards."""
    import sqlalchemy as sa

    admin = sa.create_engine(
        "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT"
    )
    name = f"churnops_test_{uuid.uuid4().hex[:8]}"
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f"CREATE DATABASE {name}"))
    except sa.exc.OperationalError as exc:
        pytest.fail(f"no PostgreSQL answers at 127.0.0.1:5432 ({exc}); start it (.ci/run does)")
    yield f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    admin.dispose()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisProcess:
    """A redis-server of a test's own, on its own port: it may be stopped, hung and restarted without
    touching the shared Redis on 6379. Its data survives a :meth:`stop` (``SAVE`` first, then reloaded)."""

    def __init__(self, workdir: Path) -> None:
        import shutil

        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed: tests that stop a Redis of their own need it")
        self.binary = binary
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: Any = None

    def start(self, timeout_s: float = 10.0) -> RedisProcess:
        import subprocess
        import time

        import redis

        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir), "--dbfilename", "dump.rdb", "--protected-mode", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if redis.Redis(port=self.port, socket_timeout=0.5).ping():
                    return self
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not start within {timeout_s} s")

    def stop(self, save: bool = True) -> None:
        import redis

        if self.proc is None:
            return
        if save and self.proc.poll() is None:
            try:  # saves the data set and exits in one step: nothing written in between is lost
                redis.Redis(port=self.port, socket_timeout=10).shutdown(save=True)
            except redis.RedisError:
                pass
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(timeout=10)
        self.proc = None

    def pause(self) -> None:
        """SIGSTOP: the server accepts connections but never answers (a hung Redis)."""
        import signal

        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        import signal

        self.proc.send_signal(signal.SIGCONT)


@pytest.fixture(scope="session")
def redis_process_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], RedisProcess]]:
    """Start redis-server processes of the test's own (each on a free port); all are stopped at the end."""
    started: list[RedisProcess] = []

    def _make() -> RedisProcess:
        server = RedisProcess(tmp_path_factory.mktemp("redis")).start()
        started.append(server)
        return server

    yield _make
    for server in started:
        if server.proc is not None:
            server.resume()
            server.stop(save=False)


# -- tampered model files (tests of issue 17's "model files run code when loaded") ------------------
def crafted_pickle(marker: Path) -> bytes:
    """What an attacker with write access to the artifact store would plant: a pickle that creates `marker`
    when it is unpickled (``pickle.load`` calls ``Path.touch(marker)``)."""
    import pathlib
    import pickle

    class Plant:
        def __reduce__(self) -> tuple[Any, ...]:
            return (pathlib.Path.touch, (marker,))

    return pickle.dumps(Plant())


def version_folder(settings: Any, version: str) -> Path:
    """The local folder holding a registered version's model files (file-based artifact store)."""
    from urllib.parse import urlparse

    from mlflow import MlflowClient

    uri = settings.mlflow_tracking_uri
    location = MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version_download_uri(
        settings.model_name, version)
    path = Path(urlparse(location).path if location.startswith("file:") else location)
    assert (path / "MLmodel").is_file(), f"no model files at {path}"
    return path


def plant_pickle_model(folder: Path, marker: Path) -> None:
    """Turn a logged churnops model into a pickle model that runs a command when loaded: the crafted pickle
    replaces the model data and is added as ``model.pkl``, and ``MLmodel`` is rewritten to MLflow's sklearn
    flavour (what ``mlflow.sklearn.load_model`` / pyfunc would unpickle)."""
    import yaml

    payload = crafted_pickle(marker)
    for data in (folder / "data" / "churnops").glob("*.ubj"):
        data.write_bytes(payload)
    for data in (folder / "data" / "churnops").glob("*.skops"):
        data.write_bytes(payload)
    (folder / "model.pkl").write_bytes(payload)
    meta = yaml.safe_load((folder / "MLmodel").read_text())
    meta["flavors"] = {
        "python_function": {"loader_module": "mlflow.sklearn", "model_path": "model.pkl",
                            "env": {"conda": "conda.yaml", "virtualenv": "python_env.yaml"},
                            "python_version": "3.11"},
        "sklearn": {"pickled_model": "model.pkl", "serialization_format": "cloudpickle",
                    "sklearn_version": "1.9.1", "code": None},
    }
    (folder / "MLmodel").write_text(yaml.safe_dump(meta))


@pytest.fixture(scope="session")
def schema():
    """The repository's params.yaml schema (BankChurners); folders with their own schema override it."""
    return load_settings(home=REPO).schema


@pytest.fixture(scope="session")
def make_table(schema) -> Callable[..., pd.DataFrame]:
    """Customers from the generator calibrated on the real table (drift options as in `data generate`)."""
    from churnops.data.generate import DriftSpec, generate

    cache: dict[Any, pd.DataFrame] = {}

    def _make(rows: int, seed: int, shifts: dict[str, float] | None = None,
              mixes: dict[str, dict[str, float]] | None = None) -> pd.DataFrame:
        key = (rows, seed, json.dumps(shifts, sort_keys=True), json.dumps(mixes, sort_keys=True))
        if key not in cache:
            spec = DriftSpec(shifts=shifts or {}, mixes=mixes or {})
            cache[key] = generate(schema, rows, seed, drift=spec)
        return cache[key].copy()

    return _make


@pytest.fixture(scope="session")
def reference(make_table) -> pd.DataFrame:
    """3,000 generated customers: the training reference of drift and outlier tests."""
    return make_table(3000, seed=1)
