"""MLflow tracking: the store, the experiment, logging a model, and the run layout's names.

- :func:`configure_tracking` points MLflow at ``settings.mlflow_tracking_uri`` (tracking and registry) and
  returns the id of the experiment ``churnops``, created with ``artifact_location = settings.artifact_root``
  (a local folder or ``s3://bucket/prefix``).
- :func:`log_model` logs the model itself (:mod:`churnops.model_format`: files that run no code when loaded,
  as a pyfunc model; explicit signature, environment and pinned requirements: no inference) with the
  SHA-256 of its files (:mod:`churnops.integrity`), which registration copies to the model version.
- the names of the run layout's tags and artifacts, which the registry reads back.

What one candidate's run records (params, metrics, evaluation artifacts and plots, the search table, the
reference data for drift monitoring, the model) is :mod:`churnops.models.candidate_run`: it calls this
module, and this module imports nothing of :mod:`churnops.models`. Run layout written by
:func:`churnops.models.training.train_candidates`::

    parent run "train-<time>"    tags git_commit, data_version, params_hash, churnops.role=pipeline,
    │                             best_candidate, best_run_id (+ promotion.* once the gate decided)
    ├── child run "<candidate>"  params: hyper-parameters, threshold, cv_folds, search_iterations, ...
    │                             metrics: cv_<m>_mean/std, oof_<m>, test_<m>, *_seconds
    │                             artifacts: model/, evaluation/, plots/, search/, reference/
    └── ...

Import is cheap: mlflow is imported inside the functions.
"""

from __future__ import annotations

import os
import tempfile
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from churnops.logs import get_logger
from churnops.redaction import redact_url
from churnops.settings import Settings

if TYPE_CHECKING:
    from mlflow.models.model import ModelInfo
    from sklearn.pipeline import Pipeline


log = get_logger(__name__)

EXPERIMENT_NAME = "churnops"
MODEL_NAME_IN_RUN = "model"
REFERENCE_ARTIFACT = "reference/reference.parquet"
OUTLIER_ARTIFACT = "outliers/isolation_forest.npz"  # an OutlierDetector fitted on the reference
REFERENCE_MAX_ROWS = 20_000

# Tags on runs (and, for the first four, on registered model versions).
TAG_GIT_COMMIT = "git_commit"
TAG_DATA_VERSION = "data_version"
TAG_PARAMS_HASH = "params_hash"
TAG_CANDIDATE = "candidate"
TAG_ROLE = "churnops.role"  # "pipeline" (parent) or "candidate" (child)
TAG_MODEL_URI = "churnops.model_uri"  # models:/m-<id> of the candidate's logged model
TAG_MODEL_ID = "churnops.model_id"
TAG_MODEL_SHA256 = "churnops.model_sha256"  # integrity.manifest_digest of the logged model's files
TAG_MODEL_FILES = "churnops.model_files"  # integrity.encode_files: path -> SHA-256
TAG_OUTLIERS_SHA256 = "churnops.outliers_sha256"  # SHA-256 of OUTLIER_ARTIFACT

# Distributions a logged model needs at load time (pinned to what is installed).
_REQUIREMENTS = ("churnops", "mlflow", "scikit-learn", "skops", "numpy", "pandas", "scipy",
                 "xgboost-cpu", "xgboost")
PYFUNC_LOADER = "churnops.model_format"  # the model's pyfunc flavour: loads churnops_model.json, no pickle


class TrackingError(RuntimeError):
    """The MLflow store cannot be used as configured; the message says which store and what to do."""


def quiet_downloads() -> None:
    """No progress bar per artifact download (a model is downloaded at every load); an explicit
    ``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR`` in the environment wins."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def configure_tracking(settings: Settings) -> str:
    """Point MLflow at the configured store and return the ``churnops`` experiment id (created if new)."""
    import mlflow
    from mlflow import MlflowClient

    quiet_downloads()
    uri = settings.mlflow_tracking_uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.get_experiment_by_name(EXPERIMENT_NAME)
    if experiment is None:
        if not settings.artifact_root.startswith(("s3://", "gs://", "wasbs://", "http://", "https://")):
            Path(settings.artifact_root).mkdir(parents=True, exist_ok=True)
        experiment_id = client.create_experiment(EXPERIMENT_NAME, artifact_location=settings.artifact_root)
        log.info("tracking.experiment_created", experiment=EXPERIMENT_NAME, id=experiment_id,
                 artifact_location=redact_url(settings.artifact_root), tracking_uri=redact_url(uri))
        return experiment_id
    if experiment.lifecycle_stage == "deleted":
        raise TrackingError(
            f"MLflow experiment {EXPERIMENT_NAME!r} is deleted in {redact_url(uri)}: restore it "
            f"(`mlflow experiments restore --experiment-id {experiment.experiment_id}`) or purge it "
            f"(`mlflow gc`) before training"
        )
    if experiment.artifact_location.rstrip("/") != settings.artifact_root.rstrip("/"):
        log.warning("tracking.artifact_location_differs", experiment=EXPERIMENT_NAME,
                    existing=redact_url(experiment.artifact_location),
                    configured=redact_url(settings.artifact_root),
                    hint="an experiment keeps the artifact location it was created with")
    return experiment.experiment_id


def pip_requirements() -> list[str]:
    """The pinned distributions a churnops model needs to load (only those installed here)."""
    reqs = []
    for dist in _REQUIREMENTS:
        try:
            reqs.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            continue
    return reqs


def conda_env() -> dict[str, Any]:
    """The model's environment, stated in full: MLflow then infers nothing (it would look for a pip
    version to pin, which a uv-made environment does not have, and warn on every training)."""
    import platform

    return {"name": "churnops", "channels": ["conda-forge"],
            "dependencies": [f"python={platform.python_version()}", "pip", {"pip": pip_requirements()}]}


def signature_frame(X: pd.DataFrame, settings: Settings) -> pd.DataFrame:  # noqa: N803
    """The raw feature columns in the schema's order, numerics as float64 (ints upcast safely at scoring)."""
    schema = settings.schema
    frame = X[schema.feature_columns].copy()
    for col in schema.numeric:
        frame[col] = frame[col].astype("float64")
    for col in schema.categorical:
        frame[col] = frame[col].astype(str)
    return frame


def log_model(pipeline: Pipeline, X_sample: pd.DataFrame, settings: Settings) -> ModelInfo:  # noqa: N803
    """Log the fitted pipeline as ``model`` in the active run and tag the run with its files' SHA-256.

    The files are :mod:`churnops.model_format` (XGBoost UBJSON, skops with an explicit trust list, the
    encoder as JSON) inside a pyfunc model whose predict is the pipeline's ``predict_proba`` (column 1 =
    churn probability); loading it needs the ``churnops`` package importable. The digests are taken from
    what the artifact store holds after the upload, and its copy of the model data is checked against the
    bytes written here (a store that changed them fails the logging).
    """
    import mlflow
    from mlflow.models import infer_signature

    from churnops import integrity, model_format

    example = signature_frame(X_sample.head(5), settings)
    signature = infer_signature(example, pipeline.predict_proba(example))
    with tempfile.TemporaryDirectory(prefix="churnops-model-") as tmp:
        data = model_format.save_pipeline(pipeline, Path(tmp) / model_format.DATA_DIR)
        written = integrity.file_digests(data)
        info = mlflow.pyfunc.log_model(
            name=MODEL_NAME_IN_RUN,
            loader_module=PYFUNC_LOADER,
            data_path=str(data),
            signature=signature,
            input_example=example,
            conda_env=conda_env(),
        )
        stored = integrity.file_digests(_download(info.model_uri, Path(tmp) / "stored"))
    prefix = f"data/{model_format.DATA_DIR}/"
    differ = sorted(p for p, h in written.items() if stored.get(prefix + p) != h)
    if differ:
        raise integrity.IntegrityError(f"the artifact store's copy of {info.model_uri} differs from the "
                                       f"files just written: {differ}")
    mlflow.set_tags({TAG_MODEL_SHA256: integrity.manifest_digest(stored),
                     TAG_MODEL_FILES: integrity.encode_files(stored)})
    return info


def _download(artifact_uri: str, dst: Path) -> Path:
    import mlflow

    dst.mkdir(parents=True, exist_ok=True)
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=artifact_uri, dst_path=str(dst)))


def load_verified_pipeline(model_uri: str, expected_sha256: str | None, files_text: str | None, *,
                           what: str) -> Pipeline:
    """Download a logged model once, check the folder against its recorded digests, and read the pipeline
    from that folder (:mod:`churnops.model_format`). IntegrityError when it differs or has no digest."""
    from churnops import integrity, model_format

    if not expected_sha256:
        raise integrity.IntegrityError(
            f"{what} has no recorded SHA-256 of its model files, so they cannot be checked: refused (models "
            f"logged by an older churnops were pickles; retrain with `churnops train`)")
    with tempfile.TemporaryDirectory(prefix="churnops-model-") as tmp:
        folder = _download(model_uri, Path(tmp))
        integrity.verify(folder, expected_sha256, integrity.decode_files(files_text), what=what)
        return model_format.load_pipeline(folder / "data" / model_format.DATA_DIR)


def load_candidate_pipeline(run_id: str, model_uri: str, settings: Settings) -> Pipeline:
    """A candidate run's logged pipeline, checked against the digests training recorded on the run."""
    from mlflow import MlflowClient

    quiet_downloads()
    uri = settings.mlflow_tracking_uri
    tags = MlflowClient(tracking_uri=uri, registry_uri=uri).get_run(run_id).data.tags
    return load_verified_pipeline(model_uri, tags.get(TAG_MODEL_SHA256), tags.get(TAG_MODEL_FILES),
                                  what=f"run {run_id}'s model {model_uri}")
