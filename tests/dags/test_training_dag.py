"""churn_training end to end with dag.test(): real DVC remote, MLflow SQLite store and Redis."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.dags.conftest import dag_run_state, task_states
from tests.project_homes import make_project

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_training_dag_versions_the_data_trains_promotes_and_pushes_features(
    airflow_db, dagbag, tmp_path: Path, project_env
) -> None:
    from churnops import registry
    from churnops.feature_store import FeatureStore
    from churnops.io import safe_run_id
    from churnops.settings import load_settings
    from pipeline.versioning import data_version, dvc_file_for

    home = make_project(tmp_path / "home")
    project_env(home)
    conf = {
        "data_path": "incoming/customers.csv",
        "candidates": ["logistic_regression", "xgboost"],
        "search_iterations": 1,
        "promotion_margin": 0.002,
        "reason": "first model",
    }

    dr = dagbag.dags["churn_training"].test(run_conf=conf)

    states = task_states(dr)
    assert dag_run_state(dr) == "success", states
    assert states.pop("restore_on_failure") == "skipped"
    assert set(states.values()) == {"success"}, states
    # one mapped train task per candidate of the run's conf, then one gathering
    mapped = {t for t in states if t.startswith("train_candidate")}
    assert mapped == {"train_candidate[0]", "train_candidate[1]"}
    settings = load_settings(home=home)
    # the data version: raw table in place, tracked and pushed to the local remote
    assert md5(settings.raw_path) == md5(home / "incoming" / "customers.csv")
    version = data_version(dvc_file_for(settings.raw_path))
    assert version == md5(settings.raw_path)
    assert (Path(settings.dvc_remote) / "files" / "md5" / version[:2] / version[2:]).is_file()
    # a champion, trained on that data version with the run's overrides
    champion = registry.champion_info(settings)
    assert champion is not None and champion["version"] == "1"
    assert champion["data_version"] == version
    assert champion["candidate"] in ("logistic_regression", "xgboost")
    # the run's parameters: params.yaml + the conf, recorded in the run's workspace
    run_dir = home / "data" / "runs" / safe_run_id(dr.run_id)
    run_params = yaml.safe_load((run_dir / "params.yaml").read_text())
    assert run_params["train"]["candidates"] == ["logistic_regression", "xgboost"]
    assert run_params["train"]["search_iterations"]["logistic_regression"] == 1
    assert run_params["train"]["search_iterations"]["xgboost"] == 1
    assert run_params["register"]["promotion_margin"] == 0.002
    report = json.loads((run_dir / "run_report.json").read_text())
    assert report["reason"] == "first model"
    assert report["pipeline"]["promotion"]["promoted"] is True
    assert set(report["pipeline"]["candidates"]) == {"logistic_regression", "xgboost"}
    assert report["training"]["failed_candidates"] == [] == report["pipeline"]["failed_candidates"]
    assert set(report["training"]["finished_candidates"]) == {"logistic_regression", "xgboost"}
    assert not (run_dir / "features").exists(), "staged layers are removed once published"
    # the layers and reports became the project's
    gold = pd.read_parquet(settings.features_dir / "customers.parquet")
    assert len(gold) == 1500
    assert json.loads((settings.reports_dir / "run_report.json").read_text())["registered_version"] == "1"
    # every customer's features are in Redis, under the current feature-set version
    store = FeatureStore.from_settings(settings)
    assert store.info()["rows"] == 1500
    some = gold.iloc[7]
    found = store.get(some[settings.schema.id_column])
    assert found is not None
    assert found.features["Customer_Age"] == some["Customer_Age"]
    assert report["serving"]["status"] == "not_checked"  # no CHURNOPS_SERVING_URL in this test


def _copy_home(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest, symlinks=True)
    return dest


def _state(home: Path) -> dict[str, str]:
    """Fingerprints of everything a failed run must leave as it was."""
    files = [
        "data/raw/customers.csv",
        "data/raw/customers.csv.dvc",
        "data/validated/customers.parquet",
        "data/features/customers.parquet",
        "data/features/train.parquet",
        "reports/run_report.json",
    ]
    return {f: md5(home / f) for f in files}


def test_a_training_run_that_fails_after_versioning_restores_the_previous_data_version(
    airflow_db, dagbag, trained_home: Path, tmp_path: Path, project_env, monkeypatch
) -> None:
    from churnops import registry
    from churnops.data.generate import generate_to_csv
    from churnops.settings import load_settings

    home = _copy_home(trained_home, tmp_path / "home")
    project_env(home)
    settings = load_settings(home=home)
    before = _state(home)
    champion_before = registry.champion_version(settings)
    new_data = generate_to_csv(settings.schema, rows=1200, seed=11, out=tmp_path / "new.csv")
    # The tracking store cannot be opened: training fails after the new data was versioned and pushed.
    (tmp_path / "not-a-dir").write_text("")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'not-a-dir' / 'mlflow.db'}")

    dr = dagbag.dags["churn_training"].test(run_conf={"data_path": str(new_data), "reason": "doomed"})

    states = task_states(dr)
    assert dag_run_state(dr) == "failed"
    assert states["version_data"] == "success" and states["open_training"] == "failed", states
    assert states["restore_on_failure"] == "success"
    assert states["register"] == "upstream_failed" and states["push_features"] == "upstream_failed"
    assert _state(home) == before, "the raw table, its .dvc file, the layers and reports are as before"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert registry.champion_version(load_settings(home=home)) == champion_before


def test_a_training_run_with_invalid_data_fails_at_once_and_changes_nothing(
    airflow_db, dagbag, tmp_path: Path, project_env
) -> None:
    home = make_project(tmp_path / "home", rows=300)
    project_env(home)
    bad = home / "incoming" / "customers.csv"
    frame = pd.read_csv(bad)
    frame.loc[:4, "Customer_Age"] = -3  # out of the schema's range
    frame.to_csv(bad, index=False)

    dr = dagbag.dags["churn_training"].test(run_conf={"data_path": str(bad)})

    states = task_states(dr)
    assert dag_run_state(dr) == "failed"
    assert states["version_data"] == "failed" and states["validate"] == "upstream_failed", states
    assert states["restore_on_failure"] == "success"
    assert not (home / "data" / "raw" / "customers.csv").exists()
    assert not (home / "mlflow").exists()
    run_dirs = list((home / "data" / "runs").iterdir())
    report = (run_dirs[0] / "reports" / "incoming" / "validation.txt").read_text()
    assert "Customer_Age" in report


def _try_numbers(dr) -> dict[str, int]:
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = dr.get_task_instances(session=session)
        return {f"{ti.task_id}[{ti.map_index}]": ti.try_number for ti in tis if ti.map_index >= 0}


# max_depth -1 passes the name check of params.yaml but fails every fit: this candidate always fails
BROKEN_FOREST = {"train": {"search_spaces": {"random_forest": {"max_depth": {"choice": [-1]}}}}}


def test_a_candidate_that_fails_after_its_retry_is_reported_and_the_run_goes_on_with_the_others(
    airflow_db, dagbag, tmp_path: Path, project_env
) -> None:
    from churnops import registry
    from churnops.io import safe_run_id
    from churnops.settings import load_settings

    home = make_project(tmp_path / "home", BROKEN_FOREST)
    project_env(home)
    conf = {"data_path": "incoming/customers.csv", "candidates": ["random_forest", "logistic_regression"],
            "search_iterations": 1, "reason": "one candidate is broken"}

    dr = dagbag.dags["churn_training"].test(run_conf=conf)

    states = task_states(dr)
    assert dag_run_state(dr) == "success", states
    assert states["train_candidate[0]"] == "failed" and states["train_candidate[1]"] == "success", states
    assert _try_numbers(dr)["train_candidate[0]"] == 2, "the failed candidate was retried once"
    assert states["gather"] == "success" and states["register"] == "success"
    assert states["restore_on_failure"] == "skipped"
    report = json.loads((home / "data" / "runs" / safe_run_id(dr.run_id) / "run_report.json").read_text())
    assert report["training"]["failed_candidates"] == ["random_forest"]
    assert report["training"]["finished_candidates"] == ["logistic_regression"]
    assert report["pipeline"]["failed_candidates"] == ["random_forest"]
    assert list(report["pipeline"]["candidates"]) == ["logistic_regression"]
    champion = registry.champion_info(load_settings(home=home))
    assert champion is not None and champion["candidate"] == "logistic_regression"


def test_a_run_whose_every_candidate_fails_restores_the_data_and_keeps_the_champion(
    airflow_db, dagbag, trained_home: Path, tmp_path: Path, project_env
) -> None:
    from churnops import registry
    from churnops.data.generate import generate_to_csv
    from churnops.settings import load_settings

    home = _copy_home(trained_home, tmp_path / "home")
    project_env(home)
    params = yaml.safe_load((home / "params.yaml").read_text())
    params["train"]["search_spaces"]["random_forest"]["max_depth"] = {"choice": [-1]}
    (home / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    settings = load_settings(home=home)
    before = _state(home)
    champion_before = registry.champion_version(settings)
    new_data = generate_to_csv(settings.schema, rows=1200, seed=12, out=tmp_path / "new.csv")

    dr = dagbag.dags["churn_training"].test(
        run_conf={"data_path": str(new_data), "candidates": ["random_forest"], "reason": "all broken"})

    states = task_states(dr)
    assert dag_run_state(dr) == "failed", states
    assert states["train_candidate[0]"] == "failed" and states["gather"] == "failed", states
    assert _try_numbers(dr)["train_candidate[0]"] == 2
    assert states["register"] == "upstream_failed"
    assert states["restore_on_failure"] == "success"
    assert _state(home) == before, "the raw table, its .dvc file, the layers and reports are as before"
    assert registry.champion_version(load_settings(home=home)) == champion_before


def _layers(home: Path) -> dict[str, str]:
    """Fingerprints of the raw table, its .dvc pointer and the published layers."""
    return {f: md5(home / f) for f in _state(home) if f != "reports/run_report.json"}


def test_data_follows_the_champion_a_run_not_promoted_moves_no_data_layer_or_feature_a_promoted_one_does(
    airflow_db, dagbag, weak_champion_home: Path, tmp_path: Path, project_env
) -> None:
    from churnops import registry
    from churnops.data.generate import generate_to_csv
    from churnops.feature_store import FeatureStore
    from churnops.io import safe_run_id
    from churnops.settings import load_settings
    from pipeline.versioning import data_version, dvc_file_for

    home = _copy_home(weak_champion_home, tmp_path / "home")
    project_env(home)
    settings = load_settings(home=home)
    store = FeatureStore.from_settings(settings)
    store.push_file(settings.features_dir / "customers.parquet")  # `churnops features push`: the champion's
    champion_data = data_version(dvc_file_for(settings.raw_path))
    before = _layers(home)
    features_before = store.current_version()
    good = generate_to_csv(settings.schema, rows=1500, seed=11, out=tmp_path / "good.csv")
    conf = {"data_path": str(good), "candidates": ["logistic_regression"], "search_iterations": 1}

    # not promoted: no challenger beats the champion by a whole ROC-AUC
    kept = dagbag.dags["churn_training"].test(run_conf={**conf, "promotion_margin": 1.0, "reason": "kept"})

    assert dag_run_state(kept) == "success", task_states(kept)
    report = json.loads((home / "data/runs" / safe_run_id(kept.run_id) / "run_report.json").read_text())
    assert report["pipeline"]["promotion"]["promoted"] is False
    assert report["pipeline"]["data_version"] == md5(good) != champion_data
    assert report["next_training_data"]["data_version"] == champion_data  # what retraining uses next
    assert report["published"]["layers"] is False and report["features"]["pushed"] is False
    assert _layers(home) == before, "raw table, pointer and layers stay on the champion's data"
    assert store.current_version() == features_before, "the feature store keeps the champion's features"
    assert registry.champion_version(settings) == "1"
    published = json.loads((settings.reports_dir / "run_report.json").read_text())
    assert published["registered_version"] == report["pipeline"]["registered_version"]  # the run's report

    # promoted: the same table with its real labels beats the champion that learned nothing
    # (None: params.yaml's margin; dag.test() keeps the previous run's conf in the DAG's params otherwise)
    moved = dagbag.dags["churn_training"].test(
        run_conf={**conf, "promotion_margin": None, "reason": "better"})

    assert dag_run_state(moved) == "success", task_states(moved)
    report = json.loads((home / "data/runs" / safe_run_id(moved.run_id) / "run_report.json").read_text())
    assert report["pipeline"]["promotion"]["promoted"] is True, report["pipeline"]["promotion"]
    assert report["next_training_data"]["data_version"] == md5(good)
    assert data_version(dvc_file_for(settings.raw_path)) == md5(good) == md5(settings.raw_path)
    after = _layers(home)
    assert all(after[f] != before[f] for f in after), "the raw table, pointer and every layer moved"
    assert report["published"]["layers"] is True and report["features"]["pushed"] is True
    assert store.current_version() not in (None, features_before)
    assert store.info()["rows"] == 1500
    assert registry.champion_version(settings) == report["pipeline"]["registered_version"]
