"""Model files hold data, not code: every candidate round-trips through the churnops model format, a
crafted file is refused without running what it carries, and the registry refuses files that differ from
the SHA-256 recorded at registration (real MLflow store on disk)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.churnops.models.conftest import LABEL, gold_frame
from tests.conftest import crafted_pickle, plant_pickle_model, version_folder

PICKLE_PROTOCOL_2_PLUS = b"\x80"


def _fit(candidate: str, settings: Any, frame: Any) -> Any:
    from churnops.models.candidates import build_pipeline

    params = {"random_forest": {"n_estimators": 40, "max_depth": 6},
              "xgboost": {"n_estimators": 40, "max_depth": 4}}.get(candidate, {})
    pipeline = build_pipeline(candidate, settings.schema, seed=3, params=params)
    return pipeline.fit(frame[settings.schema.feature_columns], frame[LABEL])


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory, make_model_home: Any) -> tuple[Any, Any, dict[str, Any]]:
    settings = make_model_home(tmp_path_factory.mktemp("model-files") / "home")
    frame = gold_frame(settings.schema, 600, seed=5)
    pipelines = {c: _fit(c, settings, frame) for c in ("logistic_regression", "random_forest", "xgboost")}
    return settings, frame, pipelines


@pytest.mark.parametrize("candidate", ["logistic_regression", "random_forest", "xgboost"])
def test_every_candidate_round_trips_through_files_that_hold_no_pickle(fitted, candidate, tmp_path) -> None:
    from churnops.model_format import load_pipeline, save_pipeline
    from churnops.scoring import Scorer

    settings, frame, pipelines = fitted
    original = pipelines[candidate]
    folder = save_pipeline(original, tmp_path / "model")
    for path in folder.iterdir():
        assert not path.read_bytes().startswith(PICKLE_PROTOCOL_2_PLUS), f"{path.name} is a pickle"
    loaded = load_pipeline(folder)
    X = frame[settings.schema.feature_columns]  # noqa: N806
    np.testing.assert_array_equal(loaded.predict_proba(X), original.predict_proba(X))
    # the Scorer (compiled trees, verified against the library when they are built) works on the loaded model
    scorer, reference = Scorer(loaded, threshold=0.5), Scorer(original, threshold=0.5)
    expected_path = "library" if candidate == "logistic_regression" else "compiled"
    assert scorer.describe()["path"] == expected_path
    np.testing.assert_array_equal(scorer.predict_proba_frame(X), reference.predict_proba_frame(X))
    records = X.head(3).to_dict(orient="records")
    np.testing.assert_array_equal(scorer.predict_proba_records(records),
                                  reference.predict_proba_records(records))


def test_the_crafted_pickle_runs_its_command_when_unpickled(tmp_path) -> None:
    """The control for the tests below: the planted bytes are live (in a process of its own)."""
    marker = tmp_path / "control-marker"
    (tmp_path / "payload.pkl").write_bytes(crafted_pickle(marker))
    subprocess.run([sys.executable, "-c", "import pickle, sys; pickle.load(open(sys.argv[1], 'rb'))",
                    str(tmp_path / "payload.pkl")], check=True, timeout=120)
    assert marker.exists()


def test_a_model_file_replaced_by_a_pickle_is_refused_and_never_run(fitted, tmp_path) -> None:
    from churnops.model_format import ModelFormatError, load_pipeline, save_pipeline

    _, _, pipelines = fitted
    marker = tmp_path / "marker"
    for candidate, data_file in (("xgboost", "model.ubj"), ("random_forest", "model.skops")):
        folder = save_pipeline(pipelines[candidate], tmp_path / candidate)
        (folder / data_file).write_bytes(crafted_pickle(marker))
        with pytest.raises(ModelFormatError, match=data_file):
            load_pipeline(folder)
    assert not marker.exists()


class Planted:
    """A type no churnops model has: building it would create the marker named in its state."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __setstate__(self, state: dict[str, Any]) -> None:
        Path(state["marker"]).touch()
        self.__dict__.update(state)


def test_a_skops_file_that_needs_an_untrusted_type_is_refused_before_it_is_built(fitted, tmp_path) -> None:
    import skops.io as sio

    from churnops.model_format import ModelFormatError, load_pipeline, save_pipeline

    _, _, pipelines = fitted
    marker = tmp_path / "marker"
    folder = save_pipeline(pipelines["random_forest"], tmp_path / "model")
    sio.dump(Planted(str(marker)), folder / "model.skops")
    with pytest.raises(ModelFormatError, match="does not trust.*Planted"):
        load_pipeline(folder)
    assert not marker.exists()


def test_a_descriptor_cannot_point_outside_the_model_folder(fitted, tmp_path) -> None:
    import json

    from churnops.model_format import DESCRIPTOR, ModelFormatError, load_pipeline, save_pipeline

    _, _, pipelines = fitted
    folder = save_pipeline(pipelines["xgboost"], tmp_path / "model")
    doc = json.loads((folder / DESCRIPTOR).read_text())
    doc["steps"][0]["file"] = "../elsewhere.ubj"
    (folder / DESCRIPTOR).write_text(json.dumps(doc))
    with pytest.raises(ModelFormatError, match="bare file name"):
        load_pipeline(folder)


# -- the registry: digests at registration, checked before loading ---------------------------------
def _log_and_register(settings: Any, pipeline: Any, frame: Any, *, register: bool = True) -> tuple[str, Any]:
    import mlflow

    from churnops import registry, tracking

    X = frame[settings.schema.feature_columns]  # noqa: N806
    experiment = tracking.configure_tracking(settings)
    with mlflow.start_run(experiment_id=experiment) as run:
        info = tracking.log_model(pipeline, X, settings)
        mlflow.log_param("threshold", 0.5)
        mlflow.log_metric("test_roc_auc", 0.9)
        mlflow.set_tags({tracking.TAG_MODEL_URI: info.model_uri, tracking.TAG_MODEL_ID: info.model_id,
                         "candidate": "xgboost"})
    return (registry.register(settings, run.info.run_id) if register else run.info.run_id), info


@pytest.fixture
def registered(tmp_path: Path, make_model_home: Any, fitted) -> tuple[Any, str, Any, Any]:
    """A fresh store with the XGBoost pipeline logged and registered as version 1."""
    _, frame, pipelines = fitted
    settings = make_model_home(tmp_path / "home")
    version, info = _log_and_register(settings, pipelines["xgboost"], frame)
    return settings, version, info, frame


def test_registration_records_the_sha256_of_the_model_files_on_the_version(registered) -> None:
    from churnops import integrity, registry

    settings, version, _, _ = registered
    info = registry.version_info(settings, version)
    files = integrity.file_digests(version_folder(settings, version))
    assert info["model_sha256"] == integrity.manifest_digest(files)
    assert {"MLmodel", "data/churnops/churnops_model.json", "data/churnops/model.ubj"} <= set(files)
    assert info["integrity"] == {}


def test_the_logged_model_loads_as_an_mlflow_pyfunc_model(registered, fitted) -> None:
    import mlflow

    from churnops.tracking import signature_frame

    settings, version, info, frame = registered
    rows = signature_frame(frame.head(20), settings)
    model = mlflow.pyfunc.load_model(f"models:/{settings.params.register_.model_name}/{version}")
    np.testing.assert_array_equal(model.predict(rows), fitted[2]["xgboost"].predict_proba(rows))


def test_a_tampered_version_is_refused_recorded_and_the_command_it_carries_never_runs(registered,
                                                                                     tmp_path) -> None:
    from churnops import registry
    from churnops.integrity import IntegrityError

    settings, version, _, frame = registered
    folder = version_folder(settings, version)
    backup = shutil.copytree(folder, tmp_path / "backup")
    marker = tmp_path / "marker"
    plant_pickle_model(folder, marker)

    with pytest.raises(IntegrityError, match="do not match the SHA-256") as caught:
        registry.load_version(settings, version)
    assert set(caught.value.problems) == {"MLmodel changed", "data/churnops/model.ubj changed",
                                          "model.pkl was added"}
    assert not marker.exists()
    refused = registry.integrity_failures(settings)
    assert [f["version"] for f in refused] == [version]
    assert refused[0]["integrity"]["found_sha256"] == caught.value.actual
    assert "model.pkl was added" in refused[0]["integrity"]["error"]

    # the files put back: the version loads again and the refusal record is cleared
    shutil.rmtree(folder)
    shutil.copytree(backup, folder)
    model = registry.load_version(settings, version)
    assert model.scorer.predict_proba_frame(frame[settings.schema.feature_columns]).shape == (len(frame),)
    assert registry.integrity_failures(settings) == []
    assert not marker.exists()


def test_a_version_without_a_recorded_digest_is_refused(registered) -> None:
    from mlflow import MlflowClient

    from churnops import registry
    from churnops.integrity import IntegrityError

    settings, version, _, _ = registered
    uri = settings.mlflow_tracking_uri
    MlflowClient(tracking_uri=uri, registry_uri=uri).delete_model_version_tag(
        settings.params.register_.model_name, version, registry.TAG_MODEL_SHA256)
    with pytest.raises(IntegrityError, match="no model_sha256 tag|no recorded SHA-256"):
        registry.load_version(settings, version)


def test_a_model_changed_between_logging_and_registration_is_not_registered(tmp_path, make_model_home,
                                                                          fitted) -> None:
    import mlflow

    from churnops import registry
    from churnops.integrity import IntegrityError

    _, frame, pipelines = fitted
    settings = make_model_home(tmp_path / "home")
    run_id, info = _log_and_register(settings, pipelines["xgboost"], frame, register=False)
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    folder = Path(mlflow.get_logged_model(info.model_id).artifact_location.removeprefix("file://"))
    marker = tmp_path / "marker"
    plant_pickle_model(folder, marker)
    with pytest.raises(IntegrityError, match="model.pkl was added"):
        registry.register(settings, run_id)
    assert registry.list_versions(settings) == []
    assert not marker.exists()


def test_a_refused_version_raises_one_critical_alert_until_it_verifies_again(registered, tmp_path) -> None:
    from churnops import registry
    from churnops.integrity import IntegrityError
    from monitoring.alerts import list_outbox
    from monitoring.integrity import raise_integrity_alerts
    from monitoring.state import StateDB

    settings, version, _, _ = registered
    assert raise_integrity_alerts(settings, deliver=False) == []
    plant_pickle_model(version_folder(settings, version), tmp_path / "marker")
    with pytest.raises(IntegrityError):
        registry.load_version(settings, version)

    first = raise_integrity_alerts(settings, deliver=False)
    again = raise_integrity_alerts(settings, deliver=False)
    assert [(a["version"], a["status"]) for a in first] == [(version, "queued")]
    assert [(a["version"], a["status"]) for a in again] == [(version, "suppressed")]
    rows = list_outbox(StateDB(settings.path(settings.params.monitoring.state_db)))
    assert {r["alert_id"] for r in rows} == {first[0]["alert_id"]}
    assert f"version {version} refused" in rows[0]["title"]


@pytest.mark.parametrize("candidate", ["random_forest", "xgboost"])
def test_logging_a_model_prints_no_pickle_pip_or_progress_noise(fitted, candidate, tmp_path, make_model_home,
                                                                 capfd) -> None:
    """Issue 15: every training used to print MLflow's pickle and pip-version warnings."""
    _, frame, pipelines = fitted
    settings = make_model_home(tmp_path / "home")
    capfd.readouterr()
    _log_and_register(settings, pipelines[candidate], frame)
    printed = "".join(capfd.readouterr())
    for noise in ("pickle", "pip version", "Downloading artifacts", "WARNING"):
        assert noise not in printed, printed


@pytest.mark.integration
def test_mlflow_models_serve_answers_with_the_churnops_model(registered, fitted, tmp_path) -> None:
    """The serving benchmark's reference: MLflow's own server loads the model through its pyfunc flavour."""
    import os
    import signal
    import time

    import requests

    from churnops.tracking import signature_frame
    from tests.conftest import free_port

    settings, version, _, frame = registered
    port = free_port()
    bin_dir = Path(sys.executable).parent  # mlflow starts `uvicorn` by name
    env = {**os.environ, "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
           "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    log = tmp_path / "mlflow-serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(bin_dir / "mlflow"), "models", "serve", "-m",
             f"models:/{settings.params.register_.model_name}/{version}", "-h", "127.0.0.1", "-p", str(port),
             "--env-manager", "local", "--workers", "1"],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                if requests.get(f"http://127.0.0.1:{port}/ping", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.5)
        rows = signature_frame(frame.head(5), settings)
        answer = requests.post(f"http://127.0.0.1:{port}/invocations", timeout=30,
                               json={"dataframe_split": rows.to_dict(orient="split")})
        assert answer.status_code == 200, answer.text
        np.testing.assert_allclose(np.asarray(answer.json()["predictions"]),
                                   fitted[2]["xgboost"].predict_proba(rows), rtol=1e-6)
        # as the serving benchmark sends it: records with integer counts
        records = frame[settings.schema.feature_columns].head(2).to_dict(orient="records")
        answer = requests.post(f"http://127.0.0.1:{port}/invocations", timeout=30,
                               json={"dataframe_records": records})
        assert answer.status_code == 200, answer.text
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


def test_learned_fill_values_travel_in_the_model_files(fitted, tmp_path) -> None:
    """An encoder that imputes (median learned from the training rows, with an indicator) loads back
    encoding exactly as it did: the learned value is written as a constant, not recomputed."""
    from sklearn.pipeline import Pipeline
    from xgboost import XGBClassifier

    from churnops.features import FeatureEncoder
    from churnops.model_format import load_pipeline, save_pipeline

    settings, frame, _ = fitted
    schema = settings.schema
    X = frame[schema.feature_columns].copy()  # noqa: N806
    X.loc[X.index[::7], "Credit_Limit"] = np.nan
    base = FeatureEncoder.from_schema(schema)
    encoder = FeatureEncoder(numeric=base.numeric, categorical=base.categorical, ratios=base.ratios,
                             missing={"Credit_Limit": {"impute": "median", "indicator": True}})
    model = XGBClassifier(n_estimators=20, max_depth=3, n_jobs=1)
    original = Pipeline([("encode", encoder), ("model", model)])
    original.fit(X, frame[LABEL])
    loaded = load_pipeline(save_pipeline(original, tmp_path / "model"))
    assert loaded.steps[0][1].same_encoding(original.steps[0][1])
    np.testing.assert_array_equal(loaded.steps[0][1].transform(X), original.steps[0][1].transform(X))
    np.testing.assert_array_equal(loaded.predict_proba(X), original.predict_proba(X))
