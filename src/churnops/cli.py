"""The `churnops` command.

The core owns the command group and the commands that need only the core (`data`, `models`). The outer
layers (pipeline, serving, monitoring, orchestration) add their own commands through the entry-point group
`churnops.commands` declared in pyproject.toml, so the core never imports them.
Command modules keep heavy imports inside the command functions: `churnops --help` stays fast.
"""

from __future__ import annotations

import json
import sys
from importlib.metadata import entry_points
from pathlib import Path

import click

from churnops.logs import configure_logging
from churnops.settings import Settings, SettingsError, load_settings

ENTRY_POINT_GROUP = "churnops.commands"


class AppContext:
    """What every command gets: the settings, loaded once and only when a command needs them."""

    def __init__(self, home: Path | None, params: Path | None) -> None:
        self._home, self._params = home, params
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            try:
                self._settings = load_settings(home=self._home, params_path=self._params)
            except SettingsError as exc:
                raise click.ClickException(str(exc)) from exc
        return self._settings


pass_app = click.make_pass_decorator(AppContext)


def echo_json(doc: object) -> None:
    click.echo(json.dumps(doc, indent=2, default=str))


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--home", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Project root holding data/, reports/ and mlflow/ (env CHURNOPS_HOME; default: cwd).")
@click.option("--params", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Settings file (env CHURNOPS_PARAMS; default: HOME/params.yaml).")
@click.option("--log-format", type=click.Choice(["text", "json"]), default=None,
              help="Log lines for people (text) or machines (json); env CHURNOPS_LOG_FORMAT.")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.pass_context
def main(ctx: click.Context, home: Path | None, params: Path | None, log_format: str | None,
         verbose: bool) -> None:
    """churnops: predict customer churn and keep the prediction honest in production.

    The loop: generate or ingest data -> validate -> features -> train and register (MLflow)
    -> push features (Redis) -> serve /predict -> monitor drift -> retrain (Airflow).
    """
    configure_logging("DEBUG" if verbose else None, log_format)
    ctx.obj = AppContext(home, params)


@main.group()
def data() -> None:
    """Generate, validate and inspect customer tables."""


@data.command("generate")
@click.option("--rows", type=click.IntRange(min=1), default=10_000, show_default=True,
              help="Number of customers.")
@click.option("--seed", type=int, default=42, show_default=True, help="Same seed, same table.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="CSV file to write (written atomically).")
@click.option("--shift", "shifts", multiple=True, metavar="COLUMN=SIGMAS",
              help="Drift: move a numeric column's mean by this many standard deviations (repeatable).")
@click.option("--scale", "scales", multiple=True, metavar="COLUMN=FACTOR",
              help="Drift: multiply a numeric column's spread around its mean (repeatable).")
@click.option("--mix", "mixes", multiple=True, metavar="COLUMN=CATEGORY:WEIGHT[,CATEGORY:WEIGHT]",
              help="Drift: change a categorical column's category probabilities (repeatable).")
@click.option("--churn-rate", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
              help="Override the calibrated churn rate.")
@pass_app
def data_generate(app: AppContext, rows: int, seed: int, out: Path, shifts: tuple[str, ...],
                  scales: tuple[str, ...], mixes: tuple[str, ...], churn_rate: float | None) -> None:
    """Write a synthetic customer table in the configured schema, calibrated on the real one."""
    from churnops.data.generate import DriftSpec, generate_to_csv

    try:
        drift = DriftSpec.parse(shifts=shifts, scales=scales, mixes=mixes)
        path = generate_to_csv(app.settings.schema, rows=rows, seed=seed, out=out, drift=drift,
                               churn_rate=churn_rate)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"wrote {rows} rows to {path}")


@data.command("validate")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--report-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to write validation.json and validation.txt (default: reports/).")
@pass_app
def data_validate(app: AppContext, path: Path, report_dir: Path | None) -> None:
    """Check a CSV against the schema and write a data-quality report. Exit 1 on errors."""
    from churnops.data.ingest import IngestError, read_table
    from churnops.data.validate import validate_table, write_report

    settings = app.settings
    try:
        frame = read_table(path, settings.schema)
    except IngestError as exc:
        raise click.ClickException(str(exc)) from exc
    report = validate_table(frame, settings.schema, settings.params.validate_, source=str(path))
    json_path, text_path = write_report(report, report_dir or settings.reports_dir)
    click.echo(report.to_text())
    click.echo(f"report: {json_path} {text_path}")
    if not report.ok:
        sys.exit(1)


def _load_plugins(group: click.Group) -> None:
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            command = ep.load()
        except Exception as exc:  # a broken layer must not take the whole CLI down; say which one
            click.echo(f"warning: command {ep.name!r} from {ep.value} failed to load: {exc}", err=True)
            continue
        group.add_command(command, ep.name)


# `models` lives in the core (the registry is core), registered here like any other command.
from churnops.registry_cli import models  # noqa: E402

main.add_command(models)
_load_plugins(main)
