"""The data layers: raw (bronze) -> validated (silver) -> features (gold).

Each stage reads the layer before it and writes its own atomically, so a failed stage leaves the previous
files as they were.

The raw file is the selected source's (params.yaml ``source``): a customer table as received, or
transactions, which :func:`read_raw` turns into the per-customer table of ``transactions.schema`` (features
as of each cut-off, the label, the cut-off date as the schema's ``time_column``). From there on every
stage runs the same code on ``settings.schema``; a schema with a time column holds out its latest date's
rows instead of a random stratified share.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from sklearn.model_selection import train_test_split

from churnops.data.ingest import read_table
from churnops.data.validate import ValidationReport, feature_row_keys, validate_table, write_report
from churnops.io import atomic_path
from churnops.logs import get_logger
from churnops.settings import Settings

log = get_logger(__name__)

LABEL = "churn"  # the gold layer's 0/1 target column


class StageError(RuntimeError):
    """A stage refused its input; the message says why and where the report is."""


def write_parquet_atomic(frame: pd.DataFrame, dest: Path) -> Path:
    with atomic_path(dest) as tmp:
        frame.to_parquet(tmp, index=False)
    return dest


def read_raw(settings: Settings, path: Path, report_dir: Path | None = None) -> pd.DataFrame:
    """The selected source's raw file as a customer table in ``settings.schema``, for validation.

    Transactions are checked (their report goes to `report_dir` when given) and turned into features at
    every cut-off; a file that cannot make the table raises StageError naming what is wrong.
    """
    if settings.source != "transactions":
        return read_table(path, settings.schema)
    from churnops.transactions.build import TransactionBuildError, customer_table_in_schema
    from churnops.transactions.validate import TransactionInputError

    try:
        return customer_table_in_schema(path, settings.params.transactions, settings.schema,
                                        report_dir=report_dir,
                                        database_url=settings.transactions_database_url)
    except (TransactionBuildError, TransactionInputError) as exc:
        raise StageError(f"{exc}\nNothing was changed.") from exc


def check_table(settings: Settings, path: Path, report_dir: Path | None = None) -> ValidationReport:
    """Read (:func:`read_raw`) and validate a raw file against the schema; write the report; raise StageError
    on errors."""
    report_dir = report_dir or settings.reports_dir
    frame = read_raw(settings, path, report_dir)
    report = validate_table(frame, settings.schema, settings.params.validate_, source=str(path))
    json_path, text_path = write_report(report, report_dir)
    if not report.ok:
        raise StageError(f"{path} failed validation; nothing was changed. Report: {text_path}\n"
                         + report.to_text())
    log.info("data.valid", source=str(path), rows=len(report.clean), report=str(json_path))
    return report


def validate_stage(settings: Settings) -> Path:
    """raw -> validated: the typed, validated table (parquet)."""
    report = check_table(settings, settings.raw_path)
    return write_parquet_atomic(report.clean, settings.validated_path)


@dataclass(frozen=True)
class GoldPaths:
    customers: Path
    train: Path
    test: Path

    @classmethod
    def of(cls, settings: Settings) -> GoldPaths:
        d = settings.features_dir
        return cls(d / "customers.parquet", d / "train.parquet", d / "test.parquet")


def to_gold(validated: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    schema = settings.schema
    gold = validated[[*schema.key_columns, *schema.feature_columns]].copy()
    gold[LABEL] = (validated[schema.target.column] == schema.target.positive).astype("int8")
    return gold


def split_gold(gold: pd.DataFrame, settings: Settings) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The stratified train/test split; rows with the same features (copies under other ids) stay on one side.

    Without such copies this is exactly ``train_test_split(gold, stratify=churn)``; with them the distinct
    feature rows are split (stratified by the label of their first row) and every copy follows its first row.
    A schema with a ``time_column`` is split in time instead: the latest date's rows are the hold-out, the
    earlier dates' rows train (transactions: the cut-offs were laid out so that no training label reads past
    the hold-out's cut-off).
    """
    time = settings.schema.time_column
    if time is not None:
        latest = gold[time].max()
        test = (gold[time] == latest).to_numpy()
        if test.all():
            raise StageError(f"every row has the same {time} ({latest}): a time split needs earlier dates to "
                             f"train on")
        log.info("features.time_split", holdout=str(latest), train=int((~test).sum()), test=int(test.sum()))
        return gold.loc[~test], gold.loc[test]
    fs = settings.params.features
    keys = feature_row_keys(gold, settings.schema.feature_columns)
    first = ~keys.duplicated(keep="first")
    if first.all():
        return train_test_split(gold, test_size=fs.test_size, random_state=fs.seed, stratify=gold[LABEL])
    distinct = gold.loc[first.to_numpy()]
    train_first, _ = train_test_split(distinct, test_size=fs.test_size, random_state=fs.seed,
                                      stratify=distinct[LABEL])
    in_train = keys.isin(set(keys.loc[train_first.index])).to_numpy()
    log.info("features.duplicates_kept_together", copies=int((~first).sum()),
             train=int(in_train.sum()), test=int((~in_train).sum()))
    return gold.loc[in_train], gold.loc[~in_train]


def featurize_stage(settings: Settings) -> GoldPaths:
    """validated -> gold: every customer's features plus a stratified train/test split (copies together)."""
    validated = pd.read_parquet(settings.validated_path)
    gold = to_gold(validated, settings)
    train, test = split_gold(gold, settings)
    paths = GoldPaths.of(settings)
    write_parquet_atomic(gold, paths.customers)
    write_parquet_atomic(train.reset_index(drop=True), paths.train)
    write_parquet_atomic(test.reset_index(drop=True), paths.test)
    log.info("features.written", customers=len(gold), train=len(train), test=len(test),
             churn_rate=round(float(gold[LABEL].mean()), 4))
    return paths
