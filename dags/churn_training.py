"""### churn_training: version the data, train, gate, publish

Triggered from the UI (**Trigger** opens a form with the parameters below), by `churn_drift_monitor` when
drift is found, or over the REST API. No schedule.

`version_data` (run workspace + run parameters, check the incoming table, `dvc add` + `push`)
→ `validate` → `featurize` → `open_training` (the MLflow parent run) → `train_candidate` (**one mapped task
per candidate**: parallel slots of the LocalExecutor, or Celery workers) → `gather` (the best of the
candidates that finished; a candidate that failed after its retry is named in the run report, and the run goes
on when at least one finished) → `evaluate` → `register` (@challenger, promotion gate: the **commit point**) →
`publish` (the run's reports, and its layers when promoted, become the project's) → `push_features` (Redis,
atomic switch, when the layers were published) →
`notify_serving` → `report`. Models and results move through the MLflow store, XCom carries only ids.

A failure up to the gate (a failed or killed task, `register` included) runs `restore_on_failure`: the raw
table and its `.dvc` file go back to the previous data version, and the registry's aliases (`@champion`,
`@challenger`, `@previous`) to where they were before `register`; the project's layers and the feature store
were never touched (the stages of a run write into `data/runs/<run id>/`). After the gate the data follows
the champion: a run that is not promoted publishes its reports only, keeps the project's layers and feature
store, and puts the raw table back to the champion's data version (the run report's `next_training_data`).
Every task calls the same functions as `churnops train` and `dvc repro` (`pipeline/`); docs/airflow.md
explains the parameters.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, TriggerRule, dag, get_current_context, task

from churnops.logs import task_default_args

# The candidates of churnops.settings.Candidate (tests/dags checks they agree).
CANDIDATES = ["logistic_regression", "random_forest", "xgboost"]


def _no_retry(exc: Exception) -> Exception:
    """Bad input or configuration: fail the task at once, retrying cannot help."""
    from airflow.sdk.exceptions import AirflowFailException

    return AirflowFailException(f"{type(exc).__name__}: {exc}")


@dag(
    dag_id="churn_training",
    description="Version the data with DVC, train and compare the candidates, promote behind the gate",
    doc_md=__doc__,
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    max_active_runs=1,  # runs share the raw table and the registry's aliases
    dagrun_timeout=timedelta(hours=12),
    tags=["churnops", "training"],
    default_args=task_default_args(
        retries=1, retry_delay=timedelta(seconds=30), execution_timeout=timedelta(hours=2)
    ),
    params={
        "data_path": Param(
            None,
            type=["null", "string"],
            title="Data file",
            description="CSV in the schema of params.yaml to version with DVC and train on: an absolute "
            "path on the Airflow worker, or relative to CHURNOPS_HOME. Empty: retrain on the current raw "
            "table (data/raw/customers.csv).",
            section="Data",
        ),
        "candidates": Param(
            [],
            type="array",
            items={"type": "string", "enum": CANDIDATES},
            uniqueItems=True,
            examples=CANDIDATES,
            title="Candidates",
            description="Models to tune and compare. Empty: train.candidates of params.yaml.",
            section="Training",
        ),
        "search_iterations": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            maximum=500,
            title="Search budget",
            description="Hyper-parameter settings sampled per candidate (each scored by stratified CV). "
            "Empty: train.search_iterations of params.yaml.",
            section="Training",
        ),
        "promotion_margin": Param(
            None,
            type=["null", "number"],
            minimum=0,
            maximum=1,
            title="Promotion margin",
            description="The challenger becomes @champion only if it beats the champion's hold-out "
            "register.metric by at least this much. Empty: register.promotion_margin of params.yaml.",
            section="Promotion",
        ),
        "reason": Param(
            "manual run from the Airflow UI",
            type="string",
            minLength=1,
            maxLength=1000,
            title="Reason",
            description="Why this run: recorded in the run report and the logs.",
            section="Why",
        ),
        "drift": Param(
            None,
            type=["null", "object"],
            title="Drift report",
            description="Set by churn_drift_monitor: the drift summary that triggered this run.",
            section="Why",
        ),
    },
)
def churn_training():
    @task
    def version_data() -> dict:
        """Create the run's workspace data/runs/<run id>/ with its params file (params.yaml + the conf), check
        the incoming table, snapshot the current raw table, `dvc add` + `dvc push` the new one."""
        from churnops.data.ingest import IngestError
        from pipeline.layers import StageError
        from pipeline.training_run import TrainingRunError, prepare_training_run, version_data

        context = get_current_context()
        conf = {**dict(context["dag_run"].conf or {}), **dict(context["params"])}
        try:
            ctx = prepare_training_run(context["run_id"], conf)
            return {**ctx, "data": version_data(ctx)}
        except (IngestError, StageError, TrainingRunError) as exc:
            raise _no_retry(exc) from exc

    @task
    def validate(ctx: dict) -> str:
        """raw -> validated (the run's copy), with the data-quality report."""
        from churnops.data.ingest import IngestError
        from pipeline.layers import StageError, validate_stage
        from pipeline.training_run import run_settings

        try:
            return str(validate_stage(run_settings(ctx)))
        except (IngestError, StageError) as exc:
            raise _no_retry(exc) from exc

    @task
    def featurize(ctx: dict, validated: str) -> dict:
        """validated -> gold: every customer's features and the stratified train/test split."""
        from pipeline.layers import featurize_stage
        from pipeline.training_run import run_settings

        paths = featurize_stage(run_settings(ctx))
        return {"customers": str(paths.customers), "train": str(paths.train), "test": str(paths.test)}

    @task
    def open_training(ctx: dict, gold: dict) -> list[dict]:
        """Open the train stage's MLflow parent run; one small job per candidate to fan out."""
        from pipeline.modelling import open_training_stage
        from pipeline.training_run import run_settings

        opened = open_training_stage(run_settings(ctx))
        names = opened["candidates"]
        return [{"candidate": name, "position": f"{i}/{len(names)}", "parent_run_id": opened["parent_run_id"]}
                for i, name in enumerate(names, start=1)]

    @task(execution_timeout=timedelta(hours=6), map_index_template="{{ candidate_name }}")
    def train_candidate(ctx: dict, job: dict) -> dict:
        """Tune, refit, evaluate and log one candidate as a child run; only its run id goes to XCom."""
        from pipeline.modelling import train_candidate_stage
        from pipeline.training_run import run_settings

        get_current_context()["candidate_name"] = job["candidate"]  # the mapped instance's name in the UI
        return train_candidate_stage(run_settings(ctx), job["candidate"], job["parent_run_id"],
                                     position=job["position"])

    @task(trigger_rule=TriggerRule.ALL_DONE_MIN_ONE_SUCCESS)
    def gather(ctx: dict, jobs: list[dict]) -> dict:
        """The candidates that finished (read from MLflow), the best of them, the parent run closed."""
        from churnops.models.training import NoCandidateFinishedError
        from pipeline.modelling import gather_training_stage
        from pipeline.training_run import run_settings

        names = [job["candidate"] for job in jobs]
        try:
            return gather_training_stage(run_settings(ctx), jobs[0]["parent_run_id"], names)
        except NoCandidateFinishedError as exc:  # every candidate failed after its retries
            raise _no_retry(exc) from exc

    @task
    def evaluate(ctx: dict, trained: dict) -> dict:
        """Reload every logged model, check it reproduces its hold-out scores, write metrics and plots."""
        from pipeline.modelling import evaluate_stage
        from pipeline.training_run import run_settings

        metrics = evaluate_stage(run_settings(ctx))
        return {"best_candidate": metrics["best_candidate"], "best": metrics["best"]}

    @task
    def register(ctx: dict, evaluated: dict) -> dict:
        """Register the best candidate as @challenger; the promotion gate decides about @champion. The
        registry's aliases are kept first, for restore_on_failure (and a retry starts from them)."""
        from pipeline.training_run import register

        report = register(ctx)
        return {
            "registered_version": report["registered_version"],
            "champion": report["champion"],
            "promotion": report["promotion"],
            "data_version": report["data_version"],
        }

    @task
    def publish(ctx: dict, registered: dict) -> dict:
        """Copy the run's reports into the project, and its validated and gold layers when its table is the
        one retraining uses next; a run that was not promoted puts the raw table back to the champion's."""
        from pipeline.training_run import publish

        return publish(ctx)

    @task(retries=3)
    def push_features(ctx: dict, published: dict) -> dict:
        """Push every customer's features to the Redis feature store (readers switch atomically), when the
        run's layers were published; otherwise the store stays on the champion's data."""
        from pipeline.training_run import push_features

        return push_features(ctx, published)

    @task
    def notify_serving(ctx: dict, registered: dict, pushed: dict) -> dict:
        """Confirm serving took the champion (GET /model of CHURNOPS_SERVING_URL); a timeout only warns."""
        from pipeline.training_run import notify_serving, run_settings

        return notify_serving(run_settings(ctx), registered["champion"])

    @task
    def report(
        ctx: dict, trained: dict, registered: dict, published: dict, pushed: dict, served: dict
    ) -> dict:
        """The run report (data/runs/<run id>/run_report.json); the staged layer copies are removed."""
        from pipeline.training_run import clean_staged_layers, finish_run

        doc = finish_run(
            ctx,
            {
                "data": ctx["data"],
                "training": trained,
                "registry": registered,
                "published": published,
                "features": pushed,
                "serving": served,
            },
        )
        clean_staged_layers(ctx)
        return {k: doc.get(k) for k in ("run_id", "reason", "training", "registry", "published", "features",
                                         "serving", "next_training_data")}

    @task(trigger_rule=TriggerRule.ONE_FAILED, retries=3)
    def restore_on_failure() -> dict:
        """Runs only when a task up to the gate failed (or was killed): the previous raw table and data
        version come back, and so do the registry's aliases if register had moved them."""
        from pipeline.training_run import restore_data

        return restore_data(get_current_context()["run_id"])

    ctx = version_data()
    validated = validate(ctx)
    gold = featurize(ctx, validated)
    opened = open_training(ctx, gold)
    fanned = train_candidate.partial(ctx=ctx).expand(job=opened)
    trained = gather(ctx, opened)
    fanned >> trained
    evaluated = evaluate(ctx, trained)
    registered = register(ctx, evaluated)
    published = publish(ctx, registered)
    pushed = push_features(ctx, published)
    served = notify_serving(ctx, registered, pushed)
    report(ctx, trained, registered, published, pushed, served)
    # not the mapped candidates: one of them failing is no failure of the run while another finished (gather
    # fails when none did)
    restore_on_failure().set_upstream([ctx, validated, gold, opened, trained, evaluated, registered])


churn_training()
