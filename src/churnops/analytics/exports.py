"""BI exports of a scoring run: every mart as CSV and Parquet, timestamped, with a ``latest`` copy.

``<analytics.export_dir>/<scored at, UTC>__<run id>/<mart>.{csv,parquet}`` and
``<analytics.export_dir>/latest/<mart>.{csv,parquet}``; every file is written atomically
(:func:`churnops.io.atomic_path`), ``latest/manifest.json`` last (it names the run the copies belong to).
Export folders of runs the database no longer keeps (``batch.keep_runs``) are removed.

The marts: ``kpi`` (every kept run: the trend), ``segments``, ``segment_cells``, ``movement``,
``movement_summary``, ``actions`` (customers with a recommended action, by rank) and ``customers`` (the
run's score fact with each customer's segments). docs/analytics.md describes the columns.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pandas as pd

from churnops.analytics.marts import RunMarts, RunMeta
from churnops.io import atomic_path, write_csv, write_json_atomic
from churnops.logs import get_logger
from churnops.settings import Settings

log = get_logger(__name__)

LATEST = "latest"


@dataclass
class ExportResult:
    folder: str
    latest: str
    files: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def folder_name(run_id: str, scored_at: datetime) -> str:
    return f"{scored_at:%Y%m%dT%H%M%SZ}__{re.sub(r'[^A-Za-z0-9_.-]', '_', run_id)}"


def _write(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        if path.suffix == ".csv":
            write_csv(frame, tmp)
        else:
            frame.to_parquet(tmp, index=False)


def export_run(
    settings: Settings, run_id: str, scored_at: datetime, marts: dict[str, pd.DataFrame], kept_runs: list[str]
) -> ExportResult:
    """Write `marts` (name -> frame) for the run and refresh ``latest``; remove folders of runs not kept."""
    cfg = settings.analytics
    root = settings.path(cfg.export_dir)
    folder = root / folder_name(run_id, scored_at)
    latest = root / LATEST
    result = ExportResult(folder=str(folder), latest=str(latest))
    for name, frame in marts.items():
        for fmt in cfg.export_formats:
            path = folder / f"{name}.{fmt}"
            _write(frame, path)
            _write(frame, latest / path.name)
            result.files.append(str(path))
    write_json_atomic(latest / "manifest.json", {
        "run_id": run_id, "scored_at": scored_at.isoformat(), "folder": folder.name,
        "files": sorted(f"{n}.{fmt}" for n in marts for fmt in cfg.export_formats)})
    keep = {folder_name(r, scored_at).split("__", 1)[1] for r in kept_runs}
    for old in root.iterdir():
        if not old.is_dir() or old.name in (LATEST, folder.name) or "__" not in old.name:
            continue
        run_part = old.name.split("__", 1)[1]
        if run_part not in keep or run_part == folder.name.split("__", 1)[1]:  # gone, or a retried run's
            shutil.rmtree(old, ignore_errors=True)
            result.removed.append(old.name)
    log.info("analytics.exported", run_id=run_id, folder=str(folder), files=len(result.files),
             removed=len(result.removed))
    return result


def export_marts(settings: Settings, meta: RunMeta, marts: RunMarts) -> ExportResult:
    """The marts of a run just written (and the KPI history of every kept run) as BI exports."""
    from churnops.analytics.read import MartReader

    with MartReader.open(settings) as reader:
        kpi = reader.runs()
    customers = marts.fact.merge(marts.dim, on="customer_id", how="left")
    actions = customers[customers["action_rank"].notna()].sort_values("action_rank")
    frames = {"kpi": kpi, "segments": marts.segment, "segment_cells": marts.segment_cell,
              "movement": marts.movement, "movement_summary": marts.movement_summary, "actions": actions,
              "customers": customers}
    return export_run(settings, meta.run_id, meta.scored_at, frames, list(kpi["run_id"]))
