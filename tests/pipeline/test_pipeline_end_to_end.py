"""The training pipeline end to end: real `churnops` CLI, real DVC commands, real MLflow store.

One project home is trained once per module and then probed; the tests run in file order.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import REPO
from tests.pipeline.conftest import make_project, run_cli, settings_of, state

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROWS = 1500


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = make_project(tmp_path_factory.mktemp("pipeline") / "home")
    # The stages depend on the code that computes them: here a copy of it, so the tests below can change it.
    code = tmp_path_factory.mktemp("code")
    for folder in ("src/churnops", "pipeline", "monitoring", "serving"):
        shutil.copytree(REPO / folder, code / folder, ignore=shutil.ignore_patterns("__pycache__"))
    paths = {"core": str(code / "src/churnops"), "pipeline": str(code / "pipeline"),
             "monitoring": str(code / "monitoring")}
    (home / "code_paths.yaml").write_text(yaml.safe_dump({"code": paths}))
    run_cli(home, "data", "generate", "--rows", str(ROWS), "--seed", "3", "--out", "incoming/first.csv")
    return home


def dvc_repro(home: Path) -> subprocess.CompletedProcess:
    """Plain `dvc repro` in the home, as a user runs it by hand."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHURNOPS_", "MLFLOW_"))}
    env.update(DVC_NO_ANALYTICS="1", PATH=str(Path(sys.executable).parent) + os.pathsep + env["PATH"])
    return subprocess.run([str(Path(sys.executable).parent / "dvc"), "repro"], cwd=home, env=env,
                          capture_output=True, text=True, check=True)


def test_train_versions_the_data_and_registers_a_champion(home: Path) -> None:
    proc = run_cli(home, "train", "--data", "incoming/first.csv", "--json")
    report = json.loads(proc.stdout)

    dvc_doc = yaml.safe_load((home / "data/raw/customers.csv.dvc").read_text())
    md5 = dvc_doc["outs"][0]["md5"]
    assert report["data_version"] == md5
    # the raw version was pushed to the default (local) remote
    assert any(p.is_file() for p in (home / ".dvc-storage").rglob(md5[2:] + "*"))
    assert report["rows"]["raw"] == ROWS
    assert report["rows"]["train"] + report["rows"]["test"] == ROWS
    assert report["validation"]["ok"] is True
    assert set(report["candidates"]) == {"logistic_regression", "random_forest", "xgboost"}
    assert report["promotion"]["promoted"] is True
    assert report["champion"] == report["registered_version"] == "1"

    champion = json.loads(run_cli(home, "models", "champion", "--json").stdout)
    assert str(champion["version"]) == "1"
    assert champion["data_version"] == md5

    metrics = json.loads((home / "reports/metrics.json").read_text())
    assert metrics["best_candidate"] == report["best_candidate"]
    assert 0.5 < metrics["best"]["roc_auc"] <= 1.0
    for plot in ("roc", "precision_recall", "confusion"):
        assert json.loads((home / f"reports/plots/{plot}.json").read_text())


def test_mlflow_has_a_parent_run_with_a_child_per_candidate(home: Path) -> None:
    import mlflow

    settings = settings_of(home)
    client = mlflow.MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
    report = json.loads((home / "reports/run_report.json").read_text())
    parent = client.get_run(report["mlflow_parent_run_id"])
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(r.data.tags["candidate"] for r in children) == [
        "logistic_regression", "random_forest", "xgboost"]
    for run in children:
        assert run.data.tags["data_version"] == report["data_version"]
        assert "git_commit" in run.data.tags and "params_hash" in run.data.tags
        assert {"test_roc_auc", "test_f1"} <= {k.replace("holdout_", "test_") for k in run.data.metrics}


def test_second_repro_with_nothing_changed_does_nothing(home: Path) -> None:
    before = state(home)
    assert "Running stage" not in dvc_repro(home).stdout
    assert state(home) == before


def test_train_with_nothing_changed_says_nothing_was_retrained(home: Path) -> None:
    before = state(home)
    proc = run_cli(home, "train")
    assert "nothing was retrained" in proc.stdout
    assert "promotion" not in proc.stdout  # not the previous run's promotion line
    report = json.loads(run_cli(home, "train", "--json").stdout)
    assert report["retrained"] is False
    assert report["champion"] == before["@champion"]
    assert state(home) == before


BAD_INPUTS = {
    "missing file": None,
    "empty file": "",
    "wrong delimiter": "semicolon",
    "missing column": "drop:Customer_Age",
    "extra columns only": None,
    "text in a numeric column": "set:Credit_Limit=lots",
    "unknown category": "set:Card_Category=Diamond",
    "duplicate ids": "dup",
    "a single class": "single",
    "truncated file": "truncate",
}


def make_bad(kind: str, good: Path, dest: Path) -> Path:
    text = good.read_text()
    frame = pd.read_csv(good, dtype=str, keep_default_na=False)
    if kind == "missing file":
        return dest.with_name("does-not-exist.csv")
    if kind == "empty file":
        dest.write_text("")
    elif kind == "wrong delimiter":
        frame.to_csv(dest, sep=";", index=False)
    elif kind == "missing column":
        frame.drop(columns=["Customer_Age"]).to_csv(dest, index=False)
    elif kind == "text in a numeric column":
        frame.loc[5, "Credit_Limit"] = "lots"
        frame.to_csv(dest, index=False)
    elif kind == "unknown category":
        frame.loc[7, "Card_Category"] = "Diamond"
        frame.to_csv(dest, index=False)
    elif kind == "duplicate ids":
        frame.loc[9, "CLIENTNUM"] = frame.loc[8, "CLIENTNUM"]
        frame.to_csv(dest, index=False)
    elif kind == "a single class":
        frame["Attrition_Flag"] = "Existing Customer"
        frame.to_csv(dest, index=False)
    elif kind == "truncated file":
        dest.write_text(text[: len(text) // 2])
    return dest


@pytest.mark.parametrize("kind", [k for k in BAD_INPUTS if k != "extra columns only"])
def test_bad_input_gets_a_clear_error_and_changes_nothing(home: Path, kind: str) -> None:
    from pipeline.run import run_training

    before = state(home)
    bad = make_bad(kind, home / "incoming/first.csv", home / "incoming" / f"bad-{kind.replace(' ', '-')}.csv")
    with pytest.raises(Exception) as err:  # noqa: PT011 - the type differs per case; the message matters
        run_training(settings_of(home), bad)
    message = str(err.value)
    assert len(message) > 20 and str(bad.name) in message or "not found" in message or "empty" in message
    assert state(home) == before


def test_bad_input_from_the_cli_exits_1_with_the_reason(home: Path) -> None:
    bad = make_bad("unknown category", home / "incoming/first.csv", home / "incoming/bad-cli.csv")
    proc = run_cli(home, "train", "--data", str(bad), check=False)
    assert proc.returncode == 1
    assert "Card_Category" in proc.stderr and "Diamond" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_stage_failing_midway_restores_the_previous_data_version_and_layers(home: Path) -> None:
    from pipeline.run import PipelineError, run_training

    before = state(home)
    params_path = home / "params.yaml"
    original = params_path.read_text()
    params = yaml.safe_load(original)
    params["train"]["search_spaces"]["xgboost"]["not_a_hyperparameter"] = {"choice": [1]}
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    new_data = home / "incoming/second.csv"
    run_cli(home, "data", "generate", "--rows", str(ROWS), "--seed", "4", "--out", str(new_data))
    try:
        with pytest.raises(PipelineError, match="not_a_hyperparameter"):
            run_training(settings_of(home), new_data)
    finally:
        params_path.write_text(original)
    assert state(home) == before


def test_retraining_on_new_data_goes_through_the_promotion_gate(home: Path) -> None:
    run_cli(home, "data", "generate", "--rows", str(ROWS), "--seed", "5", "--out", "incoming/third.csv")
    report = json.loads(run_cli(home, "train", "--data", "incoming/third.csv", "--json").stdout)
    decision = report["promotion"]
    assert report["registered_version"] == "2"
    assert decision["champion_version"] == "1"
    assert decision["champion_score"] is not None  # the old champion was re-scored on the new hold-out
    assert report["champion"] == ("2" if decision["promoted"] else "1")
    assert decision["reason"]
    # the run report carries the paired comparison: difference, its interval, the decision
    assert decision["decision"] in ("promoted", "kept", "undecided")
    if decision["decision"] != "undecided":
        cmp = decision["comparison"]
        assert cmp["method"] == "delong" and cmp["ci_low"] <= cmp["difference"] <= cmp["ci_high"]
        assert decision["promoted"] == (cmp["ci_low"] > 0 and cmp["difference"] >= decision["margin"])


# -- dvc.yaml knows the code -----------------------------------------------------------------------
def _code(home: Path) -> dict[str, Path]:
    return {k: Path(v) for k, v in yaml.safe_load((home / "code_paths.yaml").read_text())["code"].items()}


def _touch(path: Path) -> None:
    path.write_text(path.read_text() + "\n# a change\n")


def test_a_change_to_serving_code_retrains_nothing(home: Path) -> None:
    code = _code(home)
    dvc_repro(home)  # up to date first (a run the gate did not promote put the champion's data back)
    before = state(home)
    _touch(code["core"].parents[1] / "serving" / "app.py")
    for module in ("held_connections.py", "prediction_log.py", "feature_store/store.py"):  # serving's, core
        _touch(code["core"] / module)
    assert "Running stage" not in dvc_repro(home).stdout
    assert state(home) == before


def test_a_change_to_the_model_code_retrains_and_the_summary_is_printed_once(home: Path) -> None:
    before = json.loads((home / "reports/run_report.json").read_text())
    _touch(_code(home)["core"] / "models" / "search.py")
    proc = run_cli(home, "train")  # the current raw table: only the code changed
    assert "Running stage 'train'" in proc.stderr
    assert "Running stage 'evaluate'" in proc.stderr and "Running stage 'register'" in proc.stderr
    assert "Running stage 'validate'" not in proc.stderr and "Running stage 'featurize'" not in proc.stderr
    after = json.loads((home / "reports/run_report.json").read_text())
    assert after["mlflow_parent_run_id"] != before["mlflow_parent_run_id"]
    assert after["registered_version"] == str(int(before["registered_version"]) + 1)
    output = proc.stdout + proc.stderr
    assert output.count("promotion: ") == 1, output[-3000:]  # the run's summary, once
    assert f"data version {after['data_version']}" in proc.stdout


def test_every_module_a_stage_runs_is_a_dependency_of_the_stage() -> None:
    """A module added to the model code (and imported by it) must be added to dvc.yaml, or `dvc repro`
    would not see it change."""
    from tests.test_architecture import import_graph

    graph = import_graph()
    # computes nothing of a stage's output (params.yaml is a stage's `params`, not its code)
    infrastructure = {"churnops", "pipeline", "monitoring", "churnops.settings", "churnops.logs",
                      "churnops.io", "churnops.redaction"}

    def closure(module: str) -> set[str]:
        seen: set[str] = set()
        todo = [module]
        while todo:
            m = todo.pop()
            if m not in seen:
                seen.add(m)
                todo.extend(graph.get(m, ()))
        return seen - infrastructure

    def path_of(module: str) -> str:
        parts = module.split(".")
        roots = {"churnops": "${code.core}/", "pipeline": "${code.pipeline}/",
                 "monitoring": "${code.monitoring}/"}
        root = roots[parts[0]]
        base = root + "/".join(parts[1:])
        return base + ("/__init__.py" if (REPO / "src" / "/".join(parts)).is_dir() else ".py")

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    entry = {"validate": "pipeline.layers", "featurize": "pipeline.layers", "train": "pipeline.modelling",
             "evaluate": "pipeline.modelling", "register": "pipeline.modelling"}
    assert set(stages) == set(entry)
    for stage, module in entry.items():
        deps = set(stages[stage]["deps"])
        missing = sorted(path_of(m) for m in closure(module) if path_of(m) not in deps)
        assert not missing, f"dvc.yaml stage {stage} runs code it does not list as deps: {missing}"
        assert not [d for d in deps if "serving" in d], f"{stage} lists serving code"

