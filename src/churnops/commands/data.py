"""`churnops data ...`: generate, validate and inspect customer tables."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from churnops.cli import AppContext, pass_app


@click.group()
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
@click.option("--calibration", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Calibration file from `churnops data calibrate` (default: the packaged one, "
                   "calibrated on BankChurners).")
@pass_app
def data_generate(app: AppContext, rows: int, seed: int, out: Path, shifts: tuple[str, ...],
                  scales: tuple[str, ...], mixes: tuple[str, ...], churn_rate: float | None,
                  calibration: Path | None) -> None:
    """Write a synthetic customer table in the configured schema, calibrated on the real one.

    Drift for monitoring work, e.g. `--shift Total_Trans_Ct=-1 --scale Credit_Limit=1.5
    --mix Card_Category=Blue:0.5,Silver:0.3 --churn-rate 0.3`.
    """
    from churnops.data.generate import DriftSpec, generate_to_csv

    schema = app.settings.schema
    try:
        drift = DriftSpec.parse(shifts=shifts, scales=scales, mixes=mixes, schema=schema)
        path = generate_to_csv(schema, rows=rows, seed=seed, out=out, drift=drift,
                               churn_rate=churn_rate, calibration=calibration)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"wrote {rows} rows to {path}")


@data.command("calibrate")
@click.option("--source", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="A real table (CSV) in the configured schema.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Calibration file to write (atomically; default: the packaged calibration.json).")
@pass_app
def data_calibrate(app: AppContext, source: Path, out: Path | None) -> None:
    """Fit the synthetic-data model (marginals, correlations, churn relationships) on a real table.

    Writes summary statistics only (quantiles, frequencies, correlation matrices), never rows.
    """
    from churnops.data.calibrate import CalibrationError, calibrate

    try:
        path = calibrate(source, app.settings.schema, out=out)
    except CalibrationError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"wrote calibration of {source} to {path}")


@data.command("validate")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--report-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to write validation.json and validation.txt (default: reports/).")
@pass_app
def data_validate(app: AppContext, path: Path, report_dir: Path | None) -> None:
    """Check a CSV against the schema and write a data-quality report. Exit 1 on errors.

    A file that cannot be read as a table (missing, empty, binary, wrong delimiter, ragged rows) exits 1
    with the reason and writes no report.
    """
    from churnops.data.ingest import IngestError, read_table
    from churnops.data.validate import validate_table, write_report

    settings = app.settings
    try:
        frame = read_table(path, settings.schema)
    except IngestError as exc:
        raise click.ClickException(str(exc)) from exc
    report = validate_table(frame, settings.schema, settings.params.validate_, source=str(path))
    json_path, text_path = write_report(report, report_dir or settings.reports_dir)
    click.echo(report.to_text(), nl=False)  # the text ends with a newline
    click.echo(f"report: {json_path} {text_path}")
    if not report.ok:
        sys.exit(1)
