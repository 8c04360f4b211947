"""train_candidates() on a real MLflow SQLite store: parent/child runs, params, metrics, tags, artifacts."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from churnops.models.candidate_run import reference_sample
from churnops.models.candidates import CANDIDATES
from churnops.models.evaluation import HOLDOUT_METRICS
from churnops.models.training import TrainingDataError, train_candidates
from churnops.tracking import EXPERIMENT_NAME, REFERENCE_ARTIFACT, signature_frame
from tests.churnops.models.conftest import LABEL

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def trained(make_model_home, tmp_path_factory, synthetic_split):
    home = tmp_path_factory.mktemp("tracking") / "home"
    settings = make_model_home(home)
    train, test = synthetic_split(settings.schema, n=1000, seed=3)
    result = train_candidates(train, test, settings, data_version="md5-abc", git_commit="c0ffee",
                              reports_dir=home / "reports")
    return settings, result, train, test


def _client(settings):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=settings.mlflow_tracking_uri)


def test_experiment_uses_the_configured_artifact_root(trained) -> None:
    settings, result, _, _ = trained
    experiment = _client(settings).get_experiment_by_name(EXPERIMENT_NAME)
    assert experiment.experiment_id == result.experiment_id
    assert experiment.artifact_location == settings.artifact_root


def test_one_parent_run_with_a_finished_child_run_per_candidate(trained) -> None:
    settings, result, _, _ = trained
    client = _client(settings)
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["churnops.role"] == "pipeline"
    assert parent.data.tags["best_candidate"] == result.best_candidate
    children = client.search_runs([result.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{result.parent_run_id}'")
    assert sorted(r.data.tags["candidate"] for r in children) == sorted(CANDIDATES)
    assert {r.info.run_id for r in children} == {c.run_id for c in result.candidates}
    assert all(r.info.status == "FINISHED" for r in children)
    for run in [parent, *children]:
        assert run.data.tags["git_commit"] == "c0ffee"
        assert run.data.tags["data_version"] == "md5-abc"
        assert run.data.tags["params_hash"] == settings.params_hash


def test_child_runs_record_params_and_cv_and_holdout_metrics(trained) -> None:
    settings, result, _, test = trained
    client = _client(settings)
    for cand in result.candidates:
        run = client.get_run(cand.run_id)
        params, metrics = run.data.params, run.data.metrics
        assert float(params["threshold"]) == pytest.approx(cand.threshold, abs=1e-6)
        assert params["cv_folds"] == str(settings.params.train.cv_folds)
        assert params["search_iterations"] == str(settings.params.train.search_iterations[cand.candidate])
        for name, value in cand.best_params.items():
            assert params[name] == str(value)
        for m in ("roc_auc", "average_precision", "f1"):
            assert metrics[f"cv_{m}_mean"] == pytest.approx(cand.cv_metrics[m]["mean"])
            assert f"cv_{m}_std" in metrics
        for m in HOLDOUT_METRICS:
            assert metrics[f"test_{m}"] == pytest.approx(cand.holdout_metrics[m])
        assert params["test_rows"] == str(len(test))


def test_child_runs_carry_evaluation_artifacts_plots_and_reference(trained, tmp_path) -> None:
    import mlflow

    settings, result, train, test = trained
    client = _client(settings)
    cand = result.candidate("xgboost")
    listed = {f.path for d in ("evaluation", "plots", "search", "reference")
              for f in client.list_artifacts(cand.run_id, d)}
    assert {"evaluation/metrics.json", "evaluation/confusion_matrix.json",
            "evaluation/classification_report.txt", "plots/roc_curve.png", "plots/pr_curve.png",
            "plots/calibration_curve.png", "plots/confusion_matrix.png", "plots/feature_importance.png",
            "search/cv_results.csv", REFERENCE_ARTIFACT} <= listed
    local = mlflow.artifacts.download_artifacts(run_id=cand.run_id, artifact_path="evaluation",
                                                dst_path=str(tmp_path),
                                                tracking_uri=settings.mlflow_tracking_uri)
    confusion = json.loads((tmp_path / "evaluation" / "confusion_matrix.json").read_text())
    assert confusion["matrix"] == cand.confusion_matrix
    assert sum(map(sum, confusion["matrix"])) == len(test)
    assert local
    ref_path = mlflow.artifacts.download_artifacts(run_id=cand.run_id, artifact_path=REFERENCE_ARTIFACT,
                                                   dst_path=str(tmp_path / "ref"),
                                                   tracking_uri=settings.mlflow_tracking_uri)
    reference = pd.read_parquet(ref_path)
    assert list(reference.columns) == settings.schema.feature_columns  # no id, no label
    assert len(reference) == len(train)


def test_logged_model_has_signature_pinned_requirements_and_reloads_identically(trained, tmp_path) -> None:
    import mlflow

    settings, result, _, test = trained
    cand = result.candidate("random_forest")
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    logged = mlflow.get_logged_model(cand.model_uri.removeprefix("models:/"))
    assert logged.source_run_id == cand.run_id
    model_meta = mlflow.models.Model.load(cand.model_uri)
    assert model_meta.signature is not None
    assert model_meta.signature.inputs.input_names() == settings.schema.feature_columns
    assert model_meta.flavors["python_function"]["loader_module"] == "churnops.model_format"
    assert set(model_meta.flavors) == {"python_function"}  # no sklearn flavour: nothing is pickled
    reqs_path = mlflow.artifacts.download_artifacts(f"{logged.artifact_location}/requirements.txt",
                                                    dst_path=str(tmp_path))
    reqs = [line for line in open(reqs_path).read().splitlines() if line and not line.startswith("#")]
    assert any(r.startswith("scikit-learn==") for r in reqs) and all("==" in r for r in reqs)
    model = mlflow.pyfunc.load_model(cand.model_uri)
    proba = model.predict(signature_frame(test, settings))[:, 1]
    from churnops.models.evaluation import classification_metrics

    assert classification_metrics(test[LABEL], proba, cand.threshold) == pytest.approx(cand.holdout_metrics)


def test_best_candidate_is_chosen_by_cv_score_not_holdout(trained) -> None:
    settings, result, _, _ = trained
    scoring = settings.params.train.scoring
    best = max(result.candidates, key=lambda c: c.cv_metrics[scoring]["mean"])
    assert result.best_candidate == best.candidate
    assert result.selection_metric == f"cv_{scoring}_mean"


def test_reports_dir_receives_training_summary_and_plots(trained) -> None:
    settings, result, _, _ = trained
    reports = settings.home / "reports"
    summary = json.loads((reports / "training.json").read_text())
    assert summary["parent_run_id"] == result.parent_run_id
    assert summary["best"]["candidate"] == result.best_candidate
    for cand in CANDIDATES:
        assert (reports / cand / "plots" / "roc_curve.png").is_file()
        assert json.loads((reports / cand / "evaluation" / "metrics.json").read_text())["candidate"] == cand


def test_threshold_does_not_depend_on_the_holdout(make_model_home, tmp_path, synthetic_split) -> None:
    settings = make_model_home(tmp_path / "home")
    train, test = synthetic_split(settings.schema, n=600, seed=5)
    flipped = test.assign(**{LABEL: 1 - test[LABEL]})
    a = train_candidates(train, test, settings, "d", "g", candidates=["logistic_regression"])
    b = train_candidates(train, flipped, settings, "d", "g", candidates=["logistic_regression"])
    assert a.best.threshold == b.best.threshold
    assert a.best.best_params == b.best.best_params
    assert a.best.holdout_metrics["roc_auc"] == pytest.approx(1 - b.best.holdout_metrics["roc_auc"])


def test_reference_sample_is_capped_and_reproducible(model_settings, monkeypatch) -> None:
    import churnops.models.candidate_run as candidate_run
    from tests.churnops.models.conftest import gold_frame

    frame = gold_frame(model_settings.schema, 500, seed=1)
    monkeypatch.setattr(candidate_run, "REFERENCE_MAX_ROWS", 100)
    a = reference_sample(frame, model_settings)
    b = reference_sample(frame, model_settings)
    assert len(a) == 100 and a.equals(b)
    assert list(a.columns) == model_settings.schema.feature_columns


def test_malformed_gold_frame_is_rejected_before_any_run(model_settings, synthetic_split) -> None:
    train, test = synthetic_split(model_settings.schema, n=300)
    with pytest.raises(TrainingDataError, match=r"test split: missing columns \['Customer_Age'\]"):
        train_candidates(train, test.drop(columns=["Customer_Age"]), model_settings, "d", "g")
    with pytest.raises(TrainingDataError, match="0/1 only"):
        train_candidates(train.assign(churn=np.where(train[LABEL] == 1, "yes", "no")), test,
                         model_settings, "d", "g")
    from mlflow import MlflowClient

    assert MlflowClient(model_settings.mlflow_tracking_uri).get_experiment_by_name(EXPERIMENT_NAME) is None


def test_failing_candidate_marks_the_runs_failed(make_model_home, tmp_path, synthetic_split) -> None:
    settings = make_model_home(tmp_path / "home", {"train": {"search_spaces": {
        "logistic_regression": {"C": {"choice": [-1.0]}}}}})
    train, test = synthetic_split(settings.schema, n=300)
    with pytest.raises(Exception, match="C"):
        train_candidates(train, test, settings, "d", "g", candidates=["logistic_regression"])
    from mlflow import MlflowClient

    client = MlflowClient(settings.mlflow_tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name(EXPERIMENT_NAME).experiment_id])
    assert runs and {r.info.status for r in runs} == {"FAILED"}
