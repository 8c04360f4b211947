"""Batch scoring: every customer of the gold layer scored by the champion, into a SQL table and Parquet.

`churnops score` and the ``churn_batch_scoring`` DAG call :func:`score_customers`:

1. load the champion once (``@champion`` resolved to a version) and its outlier detector, their files
   checked against the SHA-256 recorded at registration (a mismatch refuses the run, writes nothing and
   raises a critical alert: :mod:`monitoring.integrity`);
2. read ``<features_dir>/customers.parquet`` (id + feature columns; the label is never read; with
   ``source: transactions`` every customer's features as of the day after the raw lines' last) and score it
   in chunks: churn probability, risk level (``serving.risk_levels``), anomaly flag and score;
3. add the analytics of the run (:mod:`churnops.analytics`): risk drivers, recommended action and expected
   loss per customer, and the KPI, segment and movement marts;
4. write the run's rows to the scores table (``batch.table`` in ``CHURNOPS_DATABASE_URL``: SQLite by
   default, PostgreSQL by URL) and the marts in **one transaction** (:mod:`churnops.database`) that first
   deletes any rows of the same run id, so a retried run replaces its own rows and readers see all of a
   run or none of it; runs beyond ``batch.keep_runs`` are deleted in the same transaction;
5. export the run as ``<export_dir>/scores-<run>.parquet`` and ``latest.parquet``, and the marts as BI
   exports (``analytics.export_dir``; atomic writes);
6. log the ``batch.top_n`` customers most at risk.

Readers take the latest run with :func:`latest_run_id` and the highest risks with :func:`top_at_risk`.

Anomaly flags come from the champion's Isolation Forest (:mod:`churnops.outliers`): the one logged with its
run (``outliers/isolation_forest.npz``), or, for models logged without it, one fitted on the run's training
reference (``reference/reference.parquet``) with the training seed: the same detector for the same champion
on every run.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from churnops import database
from churnops.analytics.exports import export_marts
from churnops.analytics.marts import RunMeta, refresh
from churnops.integrity import IntegrityError
from churnops.io import atomic_path
from churnops.logs import get_logger, progress
from churnops.redaction import redact_url
from churnops.settings import Settings

log = get_logger(__name__)

RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:+-]{0,127}$")


class BatchError(RuntimeError):
    """Batch scoring could not run; the message names what is missing and what to do."""


@dataclass
class BatchResult:
    run_id: str
    model_version: str
    rows: int
    scored_at: str  # ISO 8601, UTC
    table: str
    database: str  # URL without password
    parquet: str
    latest_parquet: str
    risk_counts: dict[str, int]
    anomalies: int
    kpi: dict[str, Any] = field(default_factory=dict)  # the run's row of mart_run_kpi
    exports: str = ""  # folder of the run's BI exports
    top: list[dict[str, Any]] = field(default_factory=list)
    deleted_runs: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- scoring -------------------------------------------------------------------------------------
def _new_run_id() -> str:
    return f"cli__{datetime.now(UTC):%Y%m%dT%H%M%S}__{uuid.uuid4().hex[:6]}"




def _outlier_detector(settings: Settings, champion: Any):  # -> churnops.outliers.OutlierDetector
    """The champion's Isolation Forest: the one logged with its run, else fitted on its training reference."""
    from churnops import registry
    from churnops.outliers import fit_from_settings

    if champion.outliers is not None:  # logged with the run, checked with the model when it was loaded
        return champion.outliers
    log.info(
        "batch.outliers_fitted",
        model_version=champion.version,
        reason=f"run {champion.run_id} has no logged outlier detector: fitted on its training reference",
    )
    try:
        reference = registry.load_reference(settings, champion.version)
    except registry.RegistryError as exc:
        raise BatchError(
            f"cannot build the anomaly detector of model version {champion.version}: {exc}"
        ) from exc
    return fit_from_settings(reference, settings)


def score_frame(
    settings: Settings, champion: Any, detector: Any, frame: pd.DataFrame, chunk_size: int
) -> pd.DataFrame:
    """customer_id, churn_probability, risk_level, anomaly, anomaly_score for every row of `frame`."""
    schema = settings.schema
    levels = settings.params.serving.risk_levels
    n = len(frame)
    proba = np.empty(n, dtype=np.float64)
    anomaly_score = np.empty(n, dtype=np.float64)
    anomaly = np.empty(n, dtype=bool)
    out_of_range = np.full(n, None, dtype=object)
    starts = range(0, n, chunk_size)
    for start in progress(starts, task="batch.score", total=len(starts)):
        part = frame.iloc[start : start + chunk_size]
        proba[start : start + len(part)] = champion.scorer.predict_proba_frame(part[schema.feature_columns])
        s, flag = detector.score_frame(part[schema.feature_columns])
        anomaly_score[start : start + len(part)] = s
        anomaly[start : start + len(part)] = flag
        flagged = np.flatnonzero(flag)
        if len(flagged):
            flagged_rows = part.iloc[flagged][schema.feature_columns]
            out_of_range[start + flagged] = _out_of_range(detector, flagged_rows)
    risk = np.where(proba > levels.high, "High", np.where(proba > levels.medium, "Medium", "Low"))
    return pd.DataFrame(
        {
            "customer_id": frame[schema.id_column].astype(str).to_numpy(),
            "churn_probability": proba,
            "risk_level": risk,
            "anomaly": anomaly,
            "anomaly_score": anomaly_score,
            "out_of_range": out_of_range,
        }
    )


def _out_of_range(detector: Any, rows: pd.DataFrame) -> list[str | None]:
    """For each row: "column=value (expected low..high)" for its numeric values outside the reference
    range the detector widened (None when the row was flagged for its combination of values only)."""
    outside = detector.outside_range(detector.encoder.transform(rows))
    columns = detector.range_columns
    out: list[str | None] = []
    for i, row in enumerate(outside):
        parts = [f"{columns[j]}={rows.iloc[i][columns[j]]:g} (expected {detector.range_low[j]:g}.."
                 f"{detector.range_high[j]:g})" for j in np.flatnonzero(row)]
        out.append("; ".join(parts) or None)
    return out


def _export(
    settings: Settings,
    scores: pd.DataFrame,
    run_id: str,
    model_version: str,
    scored_at: datetime,
    deleted: list[str],
) -> tuple[Path, Path]:
    export_dir = settings.path(settings.params.batch.export_dir)
    frame = scores.assign(model_version=model_version, scored_at=pd.Timestamp(scored_at), run_id=run_id)
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", run_id)
    run_path = export_dir / f"scores-{safe}.parquet"
    latest = export_dir / "latest.parquet"
    with atomic_path(run_path) as tmp:
        frame.to_parquet(tmp, index=False)
    with atomic_path(latest) as tmp:
        frame.to_parquet(tmp, index=False)
    for old in deleted:
        (export_dir / f"scores-{re.sub(r'[^A-Za-z0-9_.-]', '_', old)}.parquet").unlink(missing_ok=True)
    return run_path, latest


def _current_features(settings: Settings) -> pd.DataFrame:
    from churnops.transactions.build import current_features

    frame = current_features(settings)
    return frame[[settings.schema.id_column, *settings.schema.feature_columns]]


def score_customers(
    settings: Settings, run_id: str | None = None, customers: Path | None = None, top_n: int | None = None
) -> BatchResult:
    """Score every customer of the gold layer with the champion; see the module docstring."""
    from churnops import registry

    cfg = settings.params.batch
    run_id = run_id or _new_run_id()
    if not RUN_ID_PATTERN.match(run_id):
        raise BatchError(f"run id {run_id!r} must be 1-128 characters of letters, digits and _.:+-")
    top_n = cfg.top_n if top_n is None else top_n
    current = customers is None and settings.source == "transactions"  # features as of today, from the lines
    path = Path(customers) if customers is not None else (
        settings.raw_path if current else settings.features_dir / "customers.parquet")
    if not path.is_file():
        what = "raw transactions" if current else "gold layer"
        raise BatchError(f"no {what} at {path}: run the pipeline first (`churnops train`)")
    seconds: dict[str, float] = {}

    t = time.perf_counter()
    try:
        champion = registry.load_champion(settings)
    except registry.NoChampionError as exc:
        raise BatchError(str(exc)) from exc
    except IntegrityError as exc:  # recorded on the version by the registry; on-call hears of it now
        from monitoring.integrity import raise_integrity_alerts

        alerts = raise_integrity_alerts(settings)
        raise BatchError(f"refused to score: {exc} (alerts: {alerts or 'none queued'}); nothing was "
                         f"written") from exc
    detector = _outlier_detector(settings, champion)
    seconds["load_model"] = round(time.perf_counter() - t, 3)

    t = time.perf_counter()
    schema = settings.schema
    try:
        frame = (_current_features(settings) if current
                 else pd.read_parquet(path, columns=[schema.id_column, *schema.feature_columns]))
    except Exception as exc:
        raise BatchError(
            f"cannot read the columns of the schema from {path}: {exc} "
            f"(rebuild the gold layer: `churnops stage featurize`)"
        ) from exc
    if frame.empty:
        raise BatchError(f"{path} holds no customers")
    ids = frame[schema.id_column].astype(str)
    twice = ids[ids.duplicated()].unique()
    if len(twice):
        raise BatchError(
            f"{path} holds {len(twice)} customer id(s) more than once (e.g. {', '.join(twice[:5])}) in "
            f"{schema.id_column}: nothing was scored; the scores table and the marts were left as they were"
        )
    scored_at = datetime.now(UTC)
    log.info(
        "batch.start", run_id=run_id, customers=len(frame), model_version=champion.version, source=str(path)
    )
    scores = score_frame(settings, champion, detector, frame, cfg.chunk_size)
    seconds["score"] = round(time.perf_counter() - t, 3)

    t = time.perf_counter()
    meta = RunMeta(run_id, scored_at, champion.version, _data_version(settings))
    try:
        marts = refresh(settings, meta, frame, scores, champion.scorer)
    except database.DatabaseError as exc:
        raise BatchError(str(exc)) from exc
    deleted = marts.deleted_runs
    seconds["write_table"] = round(time.perf_counter() - t, 3)

    t = time.perf_counter()
    run_path, latest = _export(settings, scores, run_id, champion.version, scored_at, deleted)
    exports = export_marts(settings, meta, marts)
    seconds["export"] = round(time.perf_counter() - t, 3)

    top = scores.nlargest(top_n, "churn_probability") if top_n else scores.iloc[:0]
    top_list = [
        {
            "rank": i + 1,
            "customer_id": r.customer_id,
            "churn_probability": round(float(r.churn_probability), 4),
            "risk_level": r.risk_level,
            "anomaly": bool(r.anomaly),
        }
        for i, r in enumerate(top.itertuples(index=False))
    ]
    for row in top_list:
        log.info("batch.top_at_risk", **row)
    counts = scores["risk_level"].value_counts()
    result = BatchResult(
        run_id=run_id,
        model_version=champion.version,
        rows=len(scores),
        scored_at=scored_at.isoformat(timespec="seconds"),
        table=cfg.table,
        database=redact_url(settings.database_url),
        parquet=str(run_path),
        latest_parquet=str(latest),
        risk_counts={lvl: int(counts.get(lvl, 0)) for lvl in ("High", "Medium", "Low")},
        anomalies=int(scores["anomaly"].sum()),
        kpi=_plain(marts.kpi.iloc[0].to_dict()),
        exports=exports.folder,
        top=top_list,
        deleted_runs=deleted,
        seconds=seconds,
    )
    log.info(
        "batch.done",
        run_id=run_id,
        rows=result.rows,
        model_version=result.model_version,
        anomalies=result.anomalies,
        **{f"risk_{k.lower()}": v for k, v in result.risk_counts.items()},
        **{f"{k}_s": v for k, v in seconds.items()},
    )
    return result


# -- reading -------------------------------------------------------------------------------------
def latest_run_id(settings: Settings) -> str | None:
    """The run id of the most recent scoring run in the table, or None."""
    from churnops.analytics.read import MartReader

    with MartReader.open(settings) as marts:
        return marts.latest_run_id()


def top_at_risk(settings: Settings, n: int = 20, run_id: str | None = None) -> list[dict[str, Any]]:
    """The `n` customers with the highest churn probability in a scoring run (default: the latest)."""
    from churnops.analytics.read import MartReader

    with MartReader.open(settings) as marts:
        run_id = run_id or marts.latest_run_id()
        if run_id is None:
            return []
        rows = marts.top_at_risk(run_id, n)
    return [{**r, "scored_at": r["scored_at"].isoformat() if r["scored_at"] else None}
            for r in rows.to_dict("records")]


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """A mart row as JSON-friendly values (numpy scalars as Python numbers, NaN as None, times as text)."""
    out: dict[str, Any] = {}
    for k, v in row.items():
        if isinstance(v, pd.Timestamp | datetime):
            out[k] = v.isoformat()
        elif v is None or (isinstance(v, float | np.floating) and np.isnan(v)):
            out[k] = None
        else:
            out[k] = v.item() if isinstance(v, np.generic) else v
    return out


def _data_version(settings: Settings) -> str | None:
    """The DVC data version of the raw table the gold layer was built from (None when not versioned)."""
    from pipeline.versioning import data_version, dvc_file_for

    return data_version(dvc_file_for(settings.raw_path))
