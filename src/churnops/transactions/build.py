"""Raw transactions -> validated lines -> the labelled customer table, in one call.

:func:`build_customer_table_from_raw` checks the raw file, writes the report, writes the clean (silver) file
and the customer table (features at every cut-off, the label, the cut-off date) only when everything
passed: bad input (the wrong columns, dates in the future, a horizon longer than the history) raises
:class:`TransactionBuildError` naming what is wrong, and the previous files stay as they were.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from churnops.io import atomic_path
from churnops.logs import get_logger
from churnops.settings import SchemaSettings, Settings, TransactionSettings
from churnops.transactions.cutoffs import CutoffError, CutoffPlan
from churnops.transactions.features import (
    FEATURES,
    LABEL,
    SQL_INPUT,
    build_customer_table,
    features_duckdb,
    features_postgresql,
    history_bounds,
)
from churnops.transactions.validate import (
    REPORT_TEXT,
    TransactionReport,
    check_transactions,
    connect,
    write_clean,
    write_report,
)

log = get_logger(__name__)


class TransactionBuildError(ValueError):
    """The raw transactions cannot make a customer table; the message says why (and where the report is)."""


@dataclass(frozen=True)
class BuildResult:
    table: pd.DataFrame
    plan: CutoffPlan
    report: TransactionReport
    seconds: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        rates = self.table.groupby("cutoff")["churned"].agg(["size", "mean"])
        return {
            "rows": len(self.table), "cutoffs": self.plan.to_dict(),
            "per_cutoff": {str(k): {"customers": int(v["size"]), "churn_rate": round(float(v["mean"]), 4)}
                           for k, v in rates.iterrows()},
            "lines": self.report.rows, "clean_lines": self.report.kept, "seconds": self.seconds,
        }


def build_customer_table_from_raw(raw: Path | str, cfg: TransactionSettings, *,
                                  report_dir: Path | str | None,
                                  clean_out: Path | str | None = None, out: Path | str | None = None,
                                  database_url: str | None = None, now: datetime | None = None,
                                  threads: int | None = None) -> BuildResult:
    """Validate `raw`, then compute the customer table (DuckDB, or PostgreSQL at `database_url`).

    Files are written only when both steps succeed: `clean_out` (silver Parquet) and `out` (the table as
    Parquet), each atomically.
    `report_dir` None: the validation report is not written (its summary is in the error).
    """
    started = time.perf_counter()
    con = connect(threads)
    report = check_transactions(con, raw, cfg, now=now)
    if report_dir is not None:
        write_report(report, report_dir)
    checked = time.perf_counter()
    if not report.ok:
        where = f"; see {Path(report_dir) / REPORT_TEXT}" if report_dir is not None else ""
        raise TransactionBuildError(f"{raw}: the transactions failed validation ({report.summary()}){where}")
    today: date | None = now.date() if now else None
    try:
        table, plan = build_customer_table(con, cfg, database_url=database_url, today=today)
    except CutoffError as exc:
        raise TransactionBuildError(f"{raw}: {exc}") from exc
    built = time.perf_counter()
    if clean_out is not None:
        write_clean(con, clean_out)
    if out is not None:
        with atomic_path(out) as tmp:
            table.to_parquet(tmp, index=False)
    seconds = {"validate": round(checked - started, 3), "features": round(built - checked, 3),
               "total": round(time.perf_counter() - started, 3)}
    log.info("transactions.build", raw=str(raw), rows=len(table), holdout=str(plan.holdout), **seconds)
    return BuildResult(table, plan, report, seconds)


def in_schema(table: pd.DataFrame, schema: SchemaSettings, *, labelled: bool = True) -> pd.DataFrame:
    """The customer table in `schema`'s columns, as a customer table arrives: the id, the cut-off date
    (``time_column``, YYYY-MM-DD), the schema's feature columns (named as features.sql's) and the label as
    the schema's text (positive: churned)."""
    unknown = [c for c in schema.feature_columns if c not in FEATURES]
    if unknown:
        raise TransactionBuildError(
            f"transactions.schema names feature columns the feature SQL does not compute: {unknown} "
            f"(it computes {list(FEATURES)})")
    out = pd.DataFrame({schema.id_column: table["customer_id"].astype(str)})
    if schema.time_column:
        out[schema.time_column] = [d.isoformat() for d in table["cutoff"]]
    for column in schema.feature_columns:
        out[column] = table[column].to_numpy()
    if labelled:
        target = schema.target
        out[target.column] = [target.positive if v else target.negative for v in table[LABEL].to_numpy()]
    return out


def customer_table_in_schema(raw: Path | str, cfg: TransactionSettings, schema: SchemaSettings, *,
                             report_dir: Path | str | None, database_url: str | None = None,
                             now: datetime | None = None) -> pd.DataFrame:
    """Raw transactions -> the per-customer table in `schema` (see :func:`in_schema`), ready for the
    customer table's validation (attrs ``source``: the raw file). Raises TransactionBuildError or
    TransactionInputError naming what is wrong."""
    result = build_customer_table_from_raw(raw, cfg, report_dir=report_dir, database_url=database_url,
                                           now=now)
    frame = in_schema(result.table, schema)
    frame.attrs["source"] = str(raw)
    return frame


def current_customer_table(raw: Path | str, cfg: TransactionSettings, schema: SchemaSettings, *,
                           database_url: str | None = None, now: datetime | None = None) -> pd.DataFrame:
    """Every customer's features as of the day after the history's last line, in `schema`'s columns without
    the label (what comes next is not known yet): what the feature store and batch scoring read.

    The population and the features are those of a cut-off on that day (``population_days``).
    """
    con = connect()
    report = check_transactions(con, raw, cfg, now=now)
    if not report.ok:
        raise TransactionBuildError(f"{raw}: the transactions failed validation ({report.summary()})")
    first, last = history_bounds(con)
    as_of = last.date() + timedelta(days=1)
    plan = CutoffPlan((), as_of, first.date(), last.date())
    if database_url:
        lines = con.execute(f"SELECT {', '.join(SQL_INPUT)} FROM tx").df()
        table = features_postgresql(database_url, lines, plan, cfg)
    else:
        table = features_duckdb(con, plan, cfg)
    frame = in_schema(table, schema, labelled=False)
    frame.attrs["source"] = f"{raw} (features as of {as_of})"
    log.info("transactions.current", raw=str(raw), customers=len(frame), as_of=str(as_of))
    return frame


def current_features(settings: Settings) -> pd.DataFrame:
    """:func:`current_customer_table` of the selected source's raw file (``source: transactions``)."""
    return current_customer_table(settings.raw_path, settings.params.transactions, settings.schema,
                                  database_url=settings.transactions_database_url)
