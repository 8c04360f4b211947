"""Pipeline commands: `churnops train`, `churnops stage <name>` (what dvc.yaml calls), `churnops demo`."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import click

from churnops.cli import AppContext, echo_json, friendly_errors, pass_app


@click.command()
@click.option("--data", "data_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The raw file of the selected source (params.yaml `source`: a customer table CSV in the "
                   "schema, or transactions as CSV or Parquet) to version and train on (default: the current "
                   "raw file).")
@click.option("--force", is_flag=True, help="Rerun every stage even if DVC finds nothing changed.")
@click.option("--json", "as_json", is_flag=True, help="Print the run report as JSON.")
@pass_app
@friendly_errors
def train(app: AppContext, data_path: Path | None, force: bool, as_json: bool) -> None:
    """Version the data with DVC and run the whole pipeline (the stages of dvc.yaml).

    validate -> featurize -> train (tuned candidates in MLflow) -> evaluate -> register (promotion gate).
    Bad input stops the run before anything changes; a failure restores the previous data version.
    """
    from pipeline.run import RunInterrupted, run_training, summarise_report

    try:
        report = run_training(app.settings, data_path, force=force)
    except RunInterrupted as exc:
        click.echo(f"churnops train: {exc}", err=True)
        sys.exit(exc.exit_code)
    if as_json:
        echo_json(report)
    else:
        click.echo(summarise_report(report))


@click.command()
@click.option("--rows", type=click.IntRange(min=500), default=None,
              help="Demo customers to generate (default: data.demo.rows in params.yaml).")
@click.option("--seed", type=int, default=None, help="Generator seed (default: data.demo.seed).")
@click.option("--no-drift", is_flag=True, help="Skip the drifted batch, the drift check and the retraining.")
@click.option("--no-airflow", is_flag=True,
              help="Start no Airflow: the drift check shows the alert but triggers no retraining.")
@click.option("--retrain-timeout", "retrain_timeout_s", type=click.FloatRange(min=10), default=900,
              show_default=True, help="Seconds to follow the retraining run the drift check triggers.")
@click.option("--keep-airflow", is_flag=True,
              help="Leave the demo's Airflow running at the end (stop it with `churnops airflow down`).")
@click.option("--dashboard", "start_dashboard", is_flag=True,
              help="At the end, start the analytics dashboard on the demo's marts (Ctrl-C stops it).")
@click.option("--source", type=click.Choice(["customer_table", "transactions"]), default=None,
              help="Run the loop on this source: sets `source:` in params.yaml (default: as it is there; "
                   "transactions: --rows customers' invoice lines).")
@pass_app
@friendly_errors
def demo(app: AppContext, rows: int | None, seed: int | None, no_drift: bool, no_airflow: bool,
         retrain_timeout_s: float, keep_airflow: bool, start_dashboard: bool, source: str | None) -> None:
    """The whole loop on demo data: generate -> DVC -> train -> Redis -> /predict -> drift -> retraining.

    The retraining runs in a local Airflow (`airflow standalone`, as `churnops airflow up`) started for the
    demo and stopped at the end; the drift check triggers it over the REST API as in production. If Airflow
    cannot start, the demo says why and goes on without retraining. Exit 1 when the retraining run fails or
    does not finish within --retrain-timeout.
    """
    from pipeline.demo import dashboard_command, run_demo, switch_source

    settings = switch_source(app.settings, source) if source else app.settings
    results = run_demo(settings, rows=rows, seed=seed, drift=not no_drift, airflow=not no_airflow,
                       keep_airflow=keep_airflow, retrain_timeout_s=retrain_timeout_s)
    click.echo("\ndemo finished: `churnops models champion`, `churnops drift triggers`, `churnops serve`, "
               "`mlflow ui --backend-store-uri sqlite:///mlflow/mlflow.db` to look further;\n"
               f"the analytics dashboard: `{dashboard_command(settings)}` "
               "(or `scripts/demo --dashboard`)")
    retraining = results.get("retraining") or {}
    if start_dashboard:
        import shlex
        import subprocess

        click.echo("starting the analytics dashboard (Ctrl-C stops it)")
        subprocess.call(shlex.split(dashboard_command(settings)))
    if retraining.get("status") == "triggered" and retraining.get("state") != "success":
        raise click.ClickException(
            f"the retraining run {retraining.get('dag_run_id')} ended {retraining.get('state')}"
            f"{': ' + retraining['error'] if retraining.get('error') else ''}; see {retraining.get('url')}")


@click.group()
def stage() -> None:
    """One pipeline stage (dvc.yaml runs these; run them by hand to debug one step)."""
    # A stopped run (`churnops train` ends dvc repro's process group with SIGTERM) unwinds the stage like
    # an error: MLflow runs it opened end FAILED instead of staying RUNNING forever.
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))


@stage.command("validate")
@pass_app
@friendly_errors
def stage_validate(app: AppContext) -> None:
    """raw -> validated: check the raw table and write the data-quality report."""
    from pipeline.layers import validate_stage

    path = validate_stage(app.settings)
    click.echo(f"validated table: {path}")


@stage.command("featurize")
@pass_app
@friendly_errors
def stage_featurize(app: AppContext) -> None:
    """validated -> features: the gold layer and the stratified train/test split."""
    from pipeline.layers import featurize_stage

    paths = featurize_stage(app.settings)
    click.echo(f"features: {paths.customers} {paths.train} {paths.test}")


@stage.command("train")
@pass_app
@friendly_errors
def stage_train(app: AppContext) -> None:
    """Tune and fit every candidate; track them in MLflow."""
    from pipeline.modelling import train_stage

    out = train_stage(app.settings)
    click.echo(f"trained: best candidate {out['best_candidate']}, MLflow parent run {out['parent_run_id']}")


@stage.command("evaluate")
@pass_app
@friendly_errors
def stage_evaluate(app: AppContext) -> None:
    """Score every candidate on the hold-out; write metrics and plots."""
    from pipeline.modelling import evaluate_stage

    metrics = evaluate_stage(app.settings)
    shown = "  ".join(f"{k}={v:.4f}" for k, v in metrics["best"].items())
    click.echo(f"hold-out ({metrics['holdout_rows']} rows), best {metrics['best_candidate']}: {shown}")


@stage.command("register")
@pass_app
@friendly_errors
def stage_register(app: AppContext) -> None:
    """Register the best candidate as @challenger; promote it to @champion only if it beats the champion."""
    from pipeline.modelling import register_stage

    report = register_stage(app.settings)
    decision = report["promotion"]
    outcome = "promoted to @champion" if decision.get("promoted") else f"@champion stays {report['champion']}"
    click.echo(f"registered version {report['registered_version']} as @challenger: {outcome}")


@click.command()
@click.option("--run-id", default=None,
              help="Id of this scoring run (a rerun with the same id replaces its rows; default: generated).")
@click.option("--customers", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="Gold-layer Parquet file to score (default: <features_dir>/customers.parquet; with "
                   "source: transactions every customer's features as of the day after the last line).")
@click.option("--top", "top_n", type=click.IntRange(min=0), default=None,
              help="How many of the most at-risk customers to list (default: batch.top_n).")
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON.")
@pass_app
def score(app: AppContext, run_id: str | None, customers: Path | None, top_n: int | None,
          as_json: bool) -> None:
    """Score every customer with the champion into the scores table (CHURNOPS_DATABASE_URL) and Parquet.

    Each run's rows are written in one transaction (a rerun with the same --run-id replaces them);
    the most at-risk customers are listed at the end.
    """
    from pipeline.batch import BatchError, score_customers

    try:
        result = score_customers(app.settings, run_id=run_id, customers=customers, top_n=top_n)
    except BatchError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        echo_json(result.to_dict())
        return
    counts = "  ".join(f"{k} {v}" for k, v in result.risk_counts.items())
    kpi = result.kpi
    revenue = "-" if kpi.get("revenue_at_risk") is None else f"{kpi['revenue_at_risk']:,.0f}"
    click.echo(f"scored {result.rows} customers with model version {result.model_version} "
               f"(run {result.run_id})\n  risk: {counts}  anomalies: {result.anomalies}\n"
               f"  expected churners {kpi.get('expected_churners', 0):,.0f} (churn rate "
               f"{kpi.get('churn_rate', 0):.1%}), revenue at risk {revenue}, "
               f"{kpi.get('actions', 0)} recommended actions (`churnops actions --top 50`)\n"
               f"  table {result.table} and the marts in {result.database}\n  parquet {result.parquet}\n"
               f"  BI exports {result.exports}\n  dashboard: `churnops dashboard`")
    if result.top:
        click.echo("most at risk:")
        for row in result.top:
            flag = "  anomaly" if row["anomaly"] else ""
            click.echo(f"  {row['rank']:>3}. {row['customer_id']:<14} {row['churn_probability']:.3f} "
                       f"{row['risk_level']}{flag}")
