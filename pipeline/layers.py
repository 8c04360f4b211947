"""The data layers: raw (bronze) -> validated (silver) -> features (gold).

Each stage reads the layer before it and writes its own atomically, so a failed stage leaves the previous
files as they were.
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


def check_table(settings: Settings, path: Path, report_dir: Path | None = None) -> ValidationReport:
    """Read and validate a CSV against the schema; write the report; raise StageError on errors."""
    frame = read_table(path, settings.schema)
    report = validate_table(frame, settings.schema, settings.params.validate_, source=str(path))
    json_path, text_path = write_report(report, report_dir or settings.reports_dir)
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
    gold = validated[[schema.id_column, *schema.feature_columns]].copy()
    gold[LABEL] = (validated[schema.target.column] == schema.target.positive).astype("int8")
    return gold


def split_gold(gold: pd.DataFrame, settings: Settings) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The stratified train/test split; rows with the same features (copies under other ids) stay on one side.

    Without such copies this is exactly ``train_test_split(gold, stratify=churn)``; with them the distinct
    feature rows are split (stratified by the label of their first row) and every copy follows its first row.
    """
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
