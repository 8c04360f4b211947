"""Pipeline commands: `churnops train`, `churnops stage <name>` (what dvc.yaml calls), `churnops demo`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from churnops.cli import AppContext, echo_json, pass_app


def _fail(exc: Exception) -> click.ClickException:
    return click.ClickException(str(exc))


@click.command()
@click.option("--data", "data_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A CSV in the configured schema to version and train on (default: the current raw table).")
@click.option("--force", is_flag=True, help="Rerun every stage even if DVC finds nothing changed.")
@click.option("--json", "as_json", is_flag=True, help="Print the run report as JSON.")
@pass_app
def train(app: AppContext, data_path: Path | None, force: bool, as_json: bool) -> None:
    """Version the data with DVC and run the whole pipeline (the stages of dvc.yaml).

    validate -> featurize -> train (tuned candidates in MLflow) -> evaluate -> register (promotion gate).
    Bad input stops the run before anything changes; a failure restores the previous data version.
    """
    from churnops.data.ingest import IngestError
    from pipeline.layers import StageError
    from pipeline.run import PipelineError, run_training

    try:
        report = run_training(app.settings, data_path, force=force)
    except (IngestError, StageError, PipelineError) as exc:
        raise _fail(exc) from exc
    if as_json:
        echo_json(report)
    else:
        click.echo(summarise_report(report))


def summarise_report(report: dict) -> str:
    if not report:
        return "pipeline up to date: nothing changed since the last run (dvc repro skipped every stage)"
    lines = [f"data version {report.get('data_version')}  rows {report.get('rows', {})}"]
    for name, metrics in (report.get("candidates") or {}).items():
        shown = "  ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float))
        lines.append(f"  {name:<20} {shown}")
    decision = report.get("promotion") or {}
    lines.append(f"promotion: {'PROMOTED' if decision.get('promoted') else 'kept current champion'}"
                 f" - {decision.get('reason', '')}")
    return "\n".join(lines)


@click.group()
def stage() -> None:
    """One pipeline stage (dvc.yaml runs these; run them by hand to debug one step)."""


@stage.command("validate")
@pass_app
def stage_validate(app: AppContext) -> None:
    """raw -> validated: check the raw table and write the data-quality report."""
    from churnops.data.ingest import IngestError
    from pipeline.layers import StageError, validate_stage

    try:
        path = validate_stage(app.settings)
    except (IngestError, StageError) as exc:
        raise _fail(exc) from exc
    click.echo(f"validated table: {path}")


@stage.command("featurize")
@pass_app
def stage_featurize(app: AppContext) -> None:
    """validated -> features: the gold layer and the stratified train/test split."""
    from pipeline.layers import featurize_stage

    paths = featurize_stage(app.settings)
    click.echo(f"features: {paths.customers} {paths.train} {paths.test}")


@stage.command("train")
@pass_app
def stage_train(app: AppContext) -> None:
    """Tune and fit every candidate; track them in MLflow."""
    from pipeline.modelling import train_stage

    click.echo(json.dumps(train_stage(app.settings), indent=2, default=str))


@stage.command("evaluate")
@pass_app
def stage_evaluate(app: AppContext) -> None:
    """Score every candidate on the hold-out; write metrics and plots."""
    from pipeline.modelling import evaluate_stage

    click.echo(json.dumps(evaluate_stage(app.settings), indent=2, default=str))


@stage.command("register")
@pass_app
def stage_register(app: AppContext) -> None:
    """Register the best candidate as @challenger; promote it to @champion only if it beats the champion."""
    from pipeline.modelling import register_stage

    report = register_stage(app.settings)
    click.echo(summarise_report(report))
