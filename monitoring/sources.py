"""Where the two samples of a drift check come from.

Reference: the training features saved with the current champion (artifact ``reference/reference.parquet``
of its run, via :func:`churnops.registry.load_reference`), so the reference always matches what is serving;
or a file given on the command line.

Current: a window of the prediction log (the last N rows, or the rows since a time), or a CSV given on the
command line, read and validated like any other customer table (so a bad file fails with the validator's
line-level message, not a stack trace).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from churnops.logs import get_logger
from churnops.redaction import redact_text
from churnops.settings import Settings

log = get_logger(__name__)


class SourceError(RuntimeError):
    """A sample could not be loaded; the message says which one, from where, and what to do."""


@dataclass
class Sample:
    frame: pd.DataFrame
    description: dict[str, Any] = field(default_factory=dict)
    version: str | None = None


# -- reference -----------------------------------------------------------------------------------

def champion_reference(settings: Settings, version: str | None = None) -> Sample:
    from churnops import registry

    try:
        version = version or registry.champion_version(settings)
    except Exception as exc:
        raise SourceError(redact_text(
            f"cannot read the model registry at {settings.mlflow_tracking_uri}: {exc}")) from exc
    if version is None:
        raise SourceError("no model holds the @champion alias yet: train and promote one first "
                          "(churnops train), or pass --reference PATH")
    try:
        frame = registry.load_reference(settings, str(version))
    except registry.RegistryError as exc:
        raise SourceError(str(exc)) from exc
    return Sample(frame, {"kind": "champion", "version": str(version)}, str(version))


def file_reference(settings: Settings, path: Path) -> Sample:
    if path.suffix.lower() in (".parquet", ".pq"):
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:
            raise SourceError(f"cannot read the reference {path}: {exc}") from exc
    else:
        frame = read_features_csv(settings, path)
    return Sample(frame, {"kind": "file", "path": str(path)}, None)


# -- current -------------------------------------------------------------------------------------

def read_features_csv(settings: Settings, path: Path) -> pd.DataFrame:
    """Read and validate a customer CSV whose rows may be unlabelled (production batches have no target).

    Validated as an unlabelled table (``labelled=False``: no target column needed, no label rule; a target
    column that is there is not returned). Batches often carry no customer id either: an absent id column
    gets row numbers for the validation and is dropped after. The table-level size rule is left to the
    drift check's own minimum window.
    """
    from churnops.data.ingest import IngestError, read_table
    from churnops.data.validate import validate_table

    schema = settings.schema
    try:
        frame = read_table(path, schema)
    except IngestError as exc:
        raise SourceError(str(exc)) from exc
    no_id = schema.id_column not in frame.columns
    if no_id:
        frame[schema.id_column] = [f"row-{i}" for i in range(len(frame))]
    rules = settings.params.validate_.model_copy(update={"min_rows": 1})
    report = validate_table(frame, schema, rules, source=str(path), labelled=False)
    if not report.ok:
        raise SourceError(f"{path} does not match the schema, so its drift cannot be measured:\n"
                          + report.to_text())
    return report.clean.drop(columns=[schema.id_column]) if no_id else report.clean


def file_current(settings: Settings, path: Path) -> Sample:
    """A CSV (read and validated against the schema) or a Parquet file (already typed) of customers; with
    ``source: transactions``, raw transaction lines (CSV or Parquet): every customer's features as of the
    day after their last line."""
    if settings.source == "transactions":
        from churnops.transactions.build import current_customer_table

        try:
            frame = current_customer_table(path, settings.params.transactions, settings.schema)
        except ValueError as exc:  # unreadable or refused lines: the reason names the file
            raise SourceError(f"cannot compute the current features of {path}: {exc}") from exc
        as_of = frame[settings.schema.time_column].iloc[0] if len(frame) else None
        return Sample(frame[settings.schema.feature_columns],
                      {"kind": "transactions", "path": str(path), "as_of": as_of})
    if path.suffix.lower() in (".parquet", ".pq"):
        try:
            return Sample(pd.read_parquet(path), {"kind": "parquet", "path": str(path)})
        except Exception as exc:
            raise SourceError(f"cannot read the current window {path}: {exc}") from exc
    return Sample(read_features_csv(settings, path), {"kind": "csv", "path": str(path)})


def prediction_log_current(settings: Settings, last_n: int | None = None,
                           since_ts: float | None = None) -> Sample:
    """The last ``last_n`` rows of the prediction log (default ``monitoring.window_last_n``), or every row
    since ``since_ts`` (unix seconds; with ``last_n`` too, at most the last ``last_n`` of those)."""
    from churnops.prediction_log import META_COLUMNS, PredictionLogError, read_window, stream_key

    if last_n is None and since_ts is None:
        last_n = settings.params.monitoring.window_last_n
    key = stream_key(settings.params.feature_store.namespace)
    try:
        window = read_window(settings, last_n=last_n, since_ts=since_ts)
    except PredictionLogError as exc:
        raise SourceError(str(exc)) from exc
    except Exception as exc:  # redis errors: name the store, keep the cause
        raise SourceError(redact_text(
            f"cannot read the prediction log {key} at {settings.redis_url}: {exc}")) from exc
    desc: dict[str, Any] = {"kind": "prediction_log", "stream": key, "last_n": last_n,
                            "since": _iso(since_ts)}
    if len(window):
        desc.update(first=_iso(float(window["ts"].min())), last=_iso(float(window["ts"].max())),
                    model_versions=sorted(set(window["model_version"]) - {""}))
    frame = window.drop(columns=[c for c in META_COLUMNS if c in window.columns])
    return Sample(frame, desc)


def _iso(ts: float | None) -> str | None:
    return None if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def parse_since(text: str, now: float | None = None) -> float:
    """``90m``, ``24h``, ``7d`` (ago) or an ISO timestamp (UTC when no zone) -> unix seconds."""
    now = time.time() if now is None else now
    t = text.strip()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if t and t[-1] in units and t[:-1].replace(".", "", 1).isdigit():
        return now - float(t[:-1]) * units[t[-1]]
    try:
        ts = pd.Timestamp(t)
    except ValueError as exc:
        raise ValueError(f"--since {text!r}: use a duration like 90m, 24h, 7d or an ISO time like "
                         "2025-01-31T08:00") from exc
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    return ts.timestamp()
