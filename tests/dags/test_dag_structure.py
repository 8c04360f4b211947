"""The DAG files import cleanly, hold the tasks and dependencies as designed, and stay cheap to parse."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import typing

import pytest

from tests.dags.conftest import DAG_IDS, DAGS, REPO

# Libraries a DAG file must not import at parse time (airflow itself brings sqlalchemy, pydantic, yaml).
HEAVY = (
    "mlflow",
    "sklearn",
    "xgboost",
    "alibi_detect",
    "pandas",
    "numpy",
    "matplotlib",
    "redis",
    "dvc",
    "churnops.registry",
    "pipeline.training_run",
    "monitoring.drift_tasks",
    "pipeline.modelling",
    "monitoring.detect",
)


def edges(dag) -> set[tuple[str, str]]:
    return {(t.task_id, d) for t in dag.tasks for d in t.downstream_task_ids}


def test_every_dag_file_imports_without_errors(dagbag) -> None:
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == set(DAG_IDS)


def test_training_dag_runs_the_pipeline_stages_in_order_with_restore_before_the_gate(dagbag) -> None:
    dag = dagbag.dags["churn_training"]
    chain = [
        "version_data",
        "validate",
        "featurize",
        "open_training",
        "train_candidate",
        "gather",
        "evaluate",
        "register",
        "publish",
        "push_features",
        "notify_serving",
        "report",
    ]
    assert set(dag.task_ids) == {*chain, "restore_on_failure"}
    got = edges(dag)
    for a, b in zip(chain, chain[1:], strict=False):
        assert (a, b) in got, f"{a} -> {b} missing"
    restore = dag.get_task("restore_on_failure")
    assert str(restore.trigger_rule) in ("one_failed", "TriggerRule.ONE_FAILED")
    # restore follows every task before the commit point, and none after it; not the mapped candidates:
    # one failing while another finished is no failure of the run (gather fails when none finished)
    assert restore.upstream_task_ids == {
        "version_data",
        "validate",
        "featurize",
        "open_training",
        "gather",
        "evaluate",
        "register",
    }
    assert dag.schedule is None and dag.max_active_runs == 1


def test_training_dag_maps_one_task_per_candidate_and_gathers_when_at_least_one_finished(dagbag) -> None:
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    dag = dagbag.dags["churn_training"]
    mapped = dag.get_task("train_candidate")
    assert isinstance(mapped, MappedOperator)  # dynamic task mapping: one instance per candidate at run time
    assert mapped.upstream_task_ids == {"version_data", "open_training"}
    assert mapped.retries >= 1  # a failed candidate is retried before the run goes on without it
    gather = dag.get_task("gather")
    assert str(gather.trigger_rule) in ("all_done_min_one_success", "TriggerRule.ALL_DONE_MIN_ONE_SUCCESS")


def test_training_dag_params_are_typed_and_described_for_the_trigger_form(dagbag) -> None:
    dag = dagbag.dags["churn_training"]
    params = dag.params
    for name in ("data_path", "candidates", "search_iterations", "promotion_margin", "reason"):
        param = params.get_param(name)
        assert param.schema.get("type"), f"{name} has no type"
        assert param.description, f"{name} has no description"
    assert params["candidates"] == [] and params["data_path"] is None and params["search_iterations"] is None
    # bad values are refused by the params' JSON schema (as the UI form and the REST API do)
    from airflow.sdk.definitions.param import ParamValidationError

    checked = copy.deepcopy(dag.params)
    for name, value in (
        ("search_iterations", 0),
        ("candidates", ["svm"]),
        ("promotion_margin", -1),
        ("reason", ""),
    ):
        with pytest.raises(ParamValidationError, match=name):
            checked[name] = value
    checked["candidates"] = ["xgboost", "logistic_regression"]  # a good value passes


def test_training_dag_candidates_match_the_settings_model(dagbag) -> None:
    from churnops.settings import Candidate

    spec = dagbag.dags["churn_training"].params.get_param("candidates").schema
    assert spec["items"]["enum"] == list(typing.get_args(Candidate))


def test_drift_monitor_alerts_then_triggers_training_after_the_cooldown_decision(dagbag) -> None:
    dag = dagbag.dags["churn_drift_monitor"]
    assert {
        ("drift_tests", "drift_found"),
        ("drift_found", "alert_on_call"),
        ("alert_on_call", "decide_retraining"),
        ("decide_retraining", "trigger_training"),
    } <= edges(dag)
    trigger = dag.get_task("trigger_training")
    assert trigger.trigger_dag_id == "churn_training"
    assert dag.schedule is not None and dag.catchup is False


def test_batch_scoring_is_scheduled_and_reads_back_its_top_customers(dagbag) -> None:
    dag = dagbag.dags["churn_batch_scoring"]
    assert edges(dag) == {("score_customers", "top_at_risk")}
    assert dag.schedule is not None


def test_every_task_has_retries_and_a_timeout(dagbag) -> None:
    for dag_id in DAG_IDS:
        for t in dagbag.dags[dag_id].tasks:
            if t.task_id in ("drift_found", "decide_retraining"):
                continue  # a decision: retrying it would only repeat the same answer
            assert t.retries >= 1, f"{dag_id}.{t.task_id} has no retries"
            assert t.execution_timeout is not None, f"{dag_id}.{t.task_id} has no execution timeout"


@pytest.mark.parametrize("dag_file", sorted(p.name for p in DAGS.glob("*.py")))
def test_parsing_a_dag_file_imports_no_heavy_library(dag_file: str) -> None:
    code = (
        "import json, runpy, sys\n"
        f"runpy.run_path({str(DAGS / dag_file)!r})\n"
        f"print(json.dumps([m for m in {list(HEAVY)!r} if m in sys.modules]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert loaded == [], f"parsing {dag_file} imports {loaded}"
