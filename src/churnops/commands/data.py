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
@click.option("--kind", type=click.Choice(["customers", "transactions"]), default="customers",
              show_default=True,
              help="customers: one row per customer in the schema; transactions: invoice lines in the "
                   "Online Retail II layout (transactions.columns), CSV or Parquet by --out's extension.")
@click.option("--rows", "--customers", "rows", type=click.IntRange(min=1), default=None,
              help="Number of customers [default: 10000; transactions: transactions.generate.customers].")
@click.option("--seed", type=int, default=None,
              help="Same seed, same table [default: 42; transactions: transactions.generate.seed].")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="File to write (written atomically).")
@click.option("--drift", "drifts", multiple=True, metavar="NAME=VALUE",
              help="Transactions: drift, repeatable: purchase_rate, basket_size, quantity, unit_price, "
                   "returns (factors) or churn_share (the share of customers who stop buying).")
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
def data_generate(app: AppContext, kind: str, rows: int | None, seed: int | None, out: Path,
                  drifts: tuple[str, ...], shifts: tuple[str, ...], scales: tuple[str, ...],
                  mixes: tuple[str, ...], churn_rate: float | None, calibration: Path | None) -> None:
    """Write a synthetic customer table in the configured schema, calibrated on the real one, or
    (--kind transactions) a retailer's invoice lines.

    Drift for monitoring work, e.g. `--shift Total_Trans_Ct=-1 --scale Credit_Limit=1.5
    --mix Card_Category=Blue:0.5,Silver:0.3 --churn-rate 0.3`; for transactions
    `--drift purchase_rate=0.7 --drift churn_share=0.5`.
    """
    if kind == "transactions":
        if shifts or scales or mixes or churn_rate is not None or calibration is not None:
            raise click.UsageError("--shift/--scale/--mix/--churn-rate/--calibration are for --kind "
                                   "customers; "
                                   "transactions drift with --drift NAME=VALUE")
        _generate_transactions(app, rows, seed, out, drifts)
        return
    if drifts:
        raise click.UsageError("--drift is for --kind transactions; customer tables drift with "
                               "--shift/--scale/--mix/--churn-rate")
    from churnops.data.generate import DriftSpec, generate_to_csv

    rows = 10_000 if rows is None else rows
    seed = 42 if seed is None else seed
    schema = app.settings.schema
    try:
        drift = DriftSpec.parse(shifts=shifts, scales=scales, mixes=mixes, schema=schema)
        path = generate_to_csv(schema, rows=rows, seed=seed, out=out, drift=drift,
                               churn_rate=churn_rate, calibration=calibration)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"wrote {rows} rows to {path}")


def _generate_transactions(app: AppContext, customers: int | None, seed: int | None, out: Path,
                           drifts: tuple[str, ...]) -> None:
    from churnops.transactions.generate import RetailerProfile, TransactionDrift, generate_to_file

    cfg = app.settings.params.transactions
    try:
        drift = TransactionDrift.parse(drifts) if drifts else None
        profile = RetailerProfile(customers=customers or cfg.generate.customers, start=cfg.generate.start,
                                  end=cfg.generate.end)
        summary = generate_to_file(out, cfg.columns, profile=profile,
                                   seed=cfg.generate.seed if seed is None else seed, drift=drift)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"wrote {summary['rows']} lines of {summary['customers']} customers ({summary['first']} to "
               f"{summary['last']}) to {summary['path']} in {summary['seconds']:.1f} s")


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
@click.option("--kind", type=click.Choice(["customers", "transactions"]), default="customers",
              show_default=True, help="A customer table (the schema) or transactions (transactions.rules).")
@click.option("--report-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to write the report (validation.json/.txt, transactions: "
                   "transactions_validation.json/.txt; default: reports/).")
@click.option("--clean-out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Transactions: also write the clean lines (Parquet) when the check passes.")
@pass_app
def data_validate(app: AppContext, path: Path, kind: str, report_dir: Path | None,
                  clean_out: Path | None) -> None:
    """Check a CSV against the schema (or transactions against their rules) and write a data-quality
    report. Exit 1 on errors.

    A file that cannot be read as a table (missing, empty, binary, wrong delimiter, ragged rows) exits 1
    with the reason and writes no report.
    """
    if kind == "transactions":
        _validate_transactions(app, path, report_dir, clean_out)
        return
    if clean_out is not None:
        raise click.UsageError("--clean-out is for --kind transactions")
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


def _validate_transactions(app: AppContext, path: Path, report_dir: Path | None,
                           clean_out: Path | None) -> None:
    from churnops.transactions.validate import TransactionInputError, validate_transactions

    settings = app.settings
    try:
        report = validate_transactions(path, settings.params.transactions,
                                       report_dir=report_dir or settings.reports_dir, clean_out=clean_out)
    except TransactionInputError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(report.to_text(), nl=False)
    if clean_out is not None and report.ok:
        click.echo(f"clean lines: {clean_out}")
    if not report.ok:
        sys.exit(1)


@data.command("build-customers")
@click.option("--raw", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Raw transactions, CSV or Parquet (default: transactions.raw).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The customer table to write (Parquet): features at every cut-off, the label, the "
                   "cut-off.")
@click.option("--clean-out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The clean lines (Parquet; default: transactions.validated).")
@click.option("--database-url", default=None, metavar="URL",
              help="Compute the features on this PostgreSQL database (env "
                   "CHURNOPS_TRANSACTIONS_DATABASE_URL; "
                   "default: the embedded DuckDB).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_app
def data_build_customers(app: AppContext, raw: Path | None, out: Path, clean_out: Path | None,
                         database_url: str | None, as_json: bool) -> None:
    """Validate raw transactions and build the labelled customer table as of each cut-off.

    Bad input (wrong columns, dates in the future, a horizon longer than the history) exits 1 naming what
    is wrong; nothing is written then but the validation report.
    """
    from churnops.cli import echo_json
    from churnops.redaction import redact_text
    from churnops.transactions.build import TransactionBuildError, build_customer_table_from_raw
    from churnops.transactions.validate import TransactionInputError

    settings = app.settings
    cfg = settings.params.transactions
    try:
        result = build_customer_table_from_raw(
            raw or settings.path(cfg.raw), cfg, report_dir=settings.reports_dir,
            clean_out=clean_out or settings.path(cfg.validated), out=out,
            database_url=database_url or settings.transactions_database_url)
    except (TransactionInputError, TransactionBuildError) as exc:
        raise click.ClickException(str(exc)) from exc
    except RuntimeError as exc:  # the database: its URL may carry a password
        raise click.ClickException(redact_text(str(exc))) from exc
    if as_json:
        echo_json(result.to_dict())
        return
    plan = result.plan
    click.echo(f"wrote {len(result.table)} customer rows to {out}: training cut-offs "
               f"{', '.join(str(d) for d in plan.train)}, hold-out {plan.holdout} "
               f"({result.seconds['total']:.1f} s)")
