"""The churnops model format: a model pipeline saved as data that runs no code when it is loaded.

A model pipeline (``FeatureEncoder`` -> optional numeric steps -> estimator,
:mod:`churnops.models.candidates`) is written to one folder:

- ``churnops_model.json``: the format, the encoder's parameters (:meth:`FeatureEncoder.fitted_config`:
  learned fill values written as constants, so the fitted state follows from them) and the list of steps
  with the file that holds each;
- an XGBoost estimator in XGBoost's own UBJSON (``<step>.ubj``, ``XGBClassifier.save_model``): parsed by
  XGBoost's C++ reader, no Python object is rebuilt from it;
- any scikit-learn step (scaler, logistic regression, random forest) through ``skops``
  (``<step>.skops``), loaded with the explicit list :data:`TRUSTED_SKOPS_TYPES` on top of skops' own
  defaults (scikit-learn estimators, numpy arrays): a file that needs any other type is refused before an
  object is built. Never ``trusted=True``, and never a list read from the file itself.

No pickle anywhere: a crafted file can make loading fail, never make it run code. Which bytes were
written is a separate question that :mod:`churnops.integrity` answers (SHA-256 recorded at registration).

In MLflow the folder is the data of a pyfunc model whose loader is this module (:func:`_load_pyfunc`), so
``mlflow.pyfunc.load_model`` and ``mlflow models serve`` load it as a normal MLflow model (their predict is
``predict_proba``: column 1 is the churn probability). Serving and batch scoring do not go through MLflow's
loader: :func:`churnops.registry.load_version` verifies the files and calls :func:`load_pipeline`.

Import is cheap: xgboost and skops are imported only when a file of theirs is read or written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from churnops.features import FeatureEncoder
from churnops.io import write_json_atomic

if TYPE_CHECKING:
    import pandas as pd
    from sklearn.pipeline import Pipeline

FORMAT = "churnops-model/1"
DESCRIPTOR = "churnops_model.json"
DATA_DIR = "churnops"  # the pyfunc data folder's name inside the MLflow model (data/churnops/)
ENCODER_STEP = "encode"
# Types a churnops model may need beyond skops' defaults: a forest's trees (sklearn's Cython Tree). Any
# other type named by a file is refused (skops.io.exceptions.UntrustedTypesFoundException).
TRUSTED_SKOPS_TYPES: tuple[str, ...] = ("sklearn.tree._tree.Tree",)


class ModelFormatError(ValueError):
    """A folder that is not a churnops model, or a step this format cannot hold; the message says which."""


def _is_xgboost(step: Any) -> bool:
    return type(step).__module__.startswith("xgboost") and hasattr(step, "save_model")


def save_pipeline(pipeline: Pipeline, folder: Path | str) -> Path:
    """Write a fitted model pipeline to `folder` (created); returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    name, encoder = pipeline.steps[0]
    if not isinstance(encoder, FeatureEncoder):
        raise ModelFormatError(f"the model pipeline must start with a FeatureEncoder, "
                               f"not {type(encoder).__name__}")
    steps = []
    for step_name, step in pipeline.steps[1:]:
        if not step_name.isidentifier():
            raise ModelFormatError(f"step name {step_name!r} cannot name a file: "
                                   f"use letters, digits and _")
        if _is_xgboost(step):
            file = f"{step_name}.ubj"
            step.save_model(folder / file)
            steps.append({"name": step_name, "kind": "xgboost", "class": type(step).__name__, "file": file})
            continue
        import skops.io as sio

        file = f"{step_name}.skops"
        sio.dump(step, folder / file)
        needs = sorted(set(sio.get_untrusted_types(file=folder / file)) - set(TRUSTED_SKOPS_TYPES))
        if needs:  # written now, refused at load: fail at training instead
            raise ModelFormatError(f"step {step_name!r} ({type(step).__name__}) needs types that churnops "
                                   f"does not trust when loading: {needs} (model_format.TRUSTED_SKOPS_TYPES)")
        steps.append({"name": step_name, "kind": "skops", "class": type(step).__name__, "file": file})
    write_json_atomic(folder / DESCRIPTOR, {"format": FORMAT, "encoder_step": name,
                                            "encoder": encoder.fitted_config(), "steps": steps})
    return folder


def _file_in(folder: Path, name: Any) -> Path:
    """`name` as a plain file directly inside `folder` (no path, no link out of it)."""
    if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
        raise ModelFormatError(f"{folder / DESCRIPTOR} names the file {name!r}: expected a bare file name")
    path = folder / name
    if not path.is_file() or path.is_symlink():
        raise ModelFormatError(f"{path} is missing or not a regular file")
    return path


def read_descriptor(folder: Path | str) -> dict[str, Any]:
    folder = Path(folder)
    path = folder / DESCRIPTOR
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ModelFormatError(f"{folder} is not a churnops model: no {DESCRIPTOR} (models logged by an "
                               f"older churnops were pickles: retrain them with `churnops train`)") from exc
    except (OSError, ValueError) as exc:
        raise ModelFormatError(f"{path} cannot be read as JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise ModelFormatError(f"{path} has format {found!r}, expected {FORMAT!r}")
    return doc


def load_pipeline(folder: Path | str) -> Pipeline:
    """The fitted model pipeline saved in `folder` by :func:`save_pipeline`; runs no code from the files."""
    from sklearn.pipeline import Pipeline

    folder = Path(folder)
    doc = read_descriptor(folder)
    try:
        steps: list[tuple[str, Any]] = [(str(doc.get("encoder_step", ENCODER_STEP)),
                                         FeatureEncoder(**doc["encoder"]).fit())]
        specs = list(doc["steps"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFormatError(f"{folder / DESCRIPTOR} does not describe an encoder and steps: "
                               f"{exc}") from exc
    for spec in specs:
        if not isinstance(spec, dict):
            raise ModelFormatError(f"{folder / DESCRIPTOR}: a step is {type(spec).__name__}, not an object")
        path = _file_in(folder, spec.get("file"))
        kind = spec.get("kind")
        if kind == "xgboost":
            steps.append((str(spec["name"]), _load_xgboost(path, spec.get("class"))))
        elif kind == "skops":
            steps.append((str(spec["name"]), _load_skops(path)))
        else:
            raise ModelFormatError(f"{folder / DESCRIPTOR}: step {spec.get('name')!r} has kind {kind!r}; "
                                   f"expected 'xgboost' or 'skops'")
    if len(steps) < 2:
        raise ModelFormatError(f"{folder / DESCRIPTOR} describes no estimator")
    return Pipeline(steps)


def _load_xgboost(path: Path, cls: Any) -> Any:
    import xgboost

    if cls not in ("XGBClassifier",):
        raise ModelFormatError(f"{path}: XGBoost class {cls!r} is not one churnops builds (XGBClassifier)")
    raw = bytearray(path.read_bytes())
    if raw[:1] != b"{":  # UBJSON (and JSON) models are one object
        raise ModelFormatError(f"{path} is not an XGBoost model file (it does not start with an object)")
    model = xgboost.XGBClassifier()
    try:
        model.load_model(raw)
    except Exception as exc:  # XGBoostError, or its message failing to decode
        first = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        raise ModelFormatError(f"{path} is not an XGBoost model file: {first}") from exc
    return model


def _load_skops(path: Path) -> Any:
    import skops.io as sio
    from skops.io.exceptions import UntrustedTypesFoundException

    try:
        return sio.load(path, trusted=list(TRUSTED_SKOPS_TYPES))
    except UntrustedTypesFoundException as exc:
        raise ModelFormatError(f"{path} needs types that churnops does not trust, so it was not loaded: "
                               f"{exc}") from exc
    except Exception as exc:  # a damaged zip or schema: skops raises several kinds
        raise ModelFormatError(f"{path} is not a skops file churnops can load: {type(exc).__name__}: "
                               f"{exc}") from exc


# -- the MLflow pyfunc flavour (mlflow.pyfunc.load_model, `mlflow models serve`) ---------------------
class PyfuncModel:
    """What ``mlflow.pyfunc.load_model`` returns for a churnops model: predict = ``predict_proba``."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    def predict(self, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> Any:
        return self.pipeline.predict_proba(model_input)


def _load_pyfunc(data_path: str) -> PyfuncModel:
    """MLflow's entry point (``loader_module: churnops.model_format`` in the model's MLmodel file)."""
    return PyfuncModel(load_pipeline(data_path))
