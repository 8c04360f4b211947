"""The gold analytics layer of a scoring run: score fact, customer dimension, KPI, segment and movement marts.

:func:`build_fact` turns a run's scores into the fact (risk drivers, recommended action, expected loss);
:func:`build_marts` aggregates it; :func:`write_run` writes all of it inside the caller's transaction (the
one that also holds the scores), so a reader sees the whole run or none of it, and a retried run replaces
its own rows instead of adding to them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from churnops import database
from churnops.analytics.actions import recommend
from churnops.analytics.drivers import top_drivers
from churnops.analytics.segments import customer_dimension
from churnops.analytics.tables import Tables, create_views, tables
from churnops.logs import get_logger
from churnops.settings import Settings

if TYPE_CHECKING:
    import sqlalchemy as sa

    from churnops.scoring import Scorer

log = get_logger(__name__)

LEVELS = ("High", "Medium", "Low")
_RANK = {"Low": 0, "Medium": 1, "High": 2}


@dataclass(frozen=True)
class RunMeta:
    run_id: str
    scored_at: datetime
    model_version: str
    data_version: str | None


@dataclass
class RunMarts:
    fact: pd.DataFrame
    dim: pd.DataFrame
    kpi: pd.DataFrame  # one row
    segment: pd.DataFrame
    segment_cell: pd.DataFrame
    movement: pd.DataFrame
    movement_summary: pd.DataFrame
    previous_run_id: str | None = None
    deleted_runs: list[str] = field(default_factory=list)


# -- the fact --------------------------------------------------------------------------------------
def build_fact(
    settings: Settings, meta: RunMeta, features: pd.DataFrame, scores: pd.DataFrame, scorer: Scorer
) -> pd.DataFrame:
    """The score fact of a run: `scores` (customer_id, churn_probability, risk_level, anomaly,
    anomaly_score, out_of_range), in the order of `features` (id + raw feature columns), plus every
    customer's risk drivers, the recommended action and its reason for the customers at
    ``analytics.action_levels``, expected loss (probability x ``analytics.value_column``) and the ranking
    of actions by expected loss."""
    cfg = settings.analytics
    schema = settings.schema
    fact = scores.copy()
    n = len(fact)
    if cfg.value_column is not None:
        fact["expected_loss"] = fact["churn_probability"].to_numpy() * features[cfg.value_column].to_numpy(
            dtype=np.float64)
    else:
        fact["expected_loss"] = np.nan
    for col in ("top_drivers", "driver_effects", "recommended_action", "action_name", "action_reason"):
        fact[col] = pd.Series([None] * n, dtype=object)
    fact["action_rank"] = pd.Series([pd.NA] * n, dtype="Int64")
    names, effects = _drivers(settings, features, scorer)
    fact["top_drivers"] = [", ".join(d for d in row if d is not None) or None for row in names.tolist()]
    fact["driver_effects"] = [
        ", ".join(f"{e:.4f}" for d, e in zip(row, eff, strict=True) if d is not None) or None
        for row, eff in zip(names.tolist(), effects.tolist(), strict=True)]
    act = np.flatnonzero(fact["risk_level"].isin(cfg.action_levels).to_numpy())
    if len(act):
        chosen = features.iloc[act]
        recs = recommend(names[act], chosen, schema, cfg)
        fact.loc[fact.index[act], "recommended_action"] = [r.action for r in recs]
        fact.loc[fact.index[act], "action_name"] = [r.action_name for r in recs]
        fact.loc[fact.index[act], "action_reason"] = [r.reason for r in recs]
        key = "expected_loss" if cfg.value_column is not None else "churn_probability"
        ranked = fact.iloc[act].sort_values([key, "customer_id"], ascending=[False, True], kind="stable")
        fact.loc[ranked.index, "action_rank"] = np.arange(1, len(act) + 1)
    fact["model_version"] = meta.model_version
    fact["data_version"] = meta.data_version
    fact["scored_at"] = pd.Timestamp(meta.scored_at)
    fact.insert(0, "run_id", meta.run_id)
    return fact


def _drivers(settings: Settings, features: pd.DataFrame, scorer: Scorer) -> tuple[np.ndarray, np.ndarray]:
    """Every customer's top drivers (:func:`churnops.analytics.drivers.top_drivers`); a model without
    contributions gives none (logged: its customers get the default action)."""
    cfg = settings.analytics
    try:
        return top_drivers(scorer, settings.schema, features, cfg.top_drivers,
                           approx=cfg.driver_method == "approx")
    except NotImplementedError as exc:
        log.warning("analytics.no_drivers", model=scorer.kind, reason=str(exc))
        return np.full((len(features), 1), None, dtype=object), np.zeros((len(features), 1))


# -- the marts -------------------------------------------------------------------------------------
def _metrics(frame: pd.DataFrame, by: list[str] | None, with_value: bool) -> pd.DataFrame:
    level = frame["risk_level"]
    work = pd.DataFrame({
        "customers": 1,
        "expected_churners": frame["churn_probability"],
        "high": (level == "High").astype(np.int64),
        "medium": (level == "Medium").astype(np.int64),
        "low": (level == "Low").astype(np.int64),
        "anomalies": frame["anomaly"].astype(np.int64),
        "revenue_at_risk": frame["expected_loss"],
    })
    if by:
        for col in by:
            work[col] = frame[col].to_numpy()
        out = work.groupby(by, sort=True, observed=True).sum(min_count=0).reset_index()
    else:
        out = work.sum(min_count=0).to_frame().T.infer_objects()
    if not with_value:
        out["revenue_at_risk"] = np.nan
    for col in ("customers", "high", "medium", "low", "anomalies"):
        out[col] = out[col].astype(np.int64)
    return out


def _with_rate(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame["churn_rate"] = frame["expected_churners"] / frame["customers"]
    return frame


def movement(
    current: pd.DataFrame, previous: pd.DataFrame, previous_run_id: str, run_id: str
) -> pd.DataFrame:
    """Customers scored in both runs whose risk level changed, with the direction (up: riskier)."""
    both = current[["customer_id", "risk_level", "churn_probability"]].merge(
        previous.rename(columns={"risk_level": "previous_level",
                                 "churn_probability": "previous_probability"}),
        on="customer_id", how="inner")
    now = both["risk_level"].map(_RANK).to_numpy()
    before = both["previous_level"].map(_RANK).to_numpy()
    moved = both[now != before].copy()
    moved["direction"] = np.where(now[now != before] > before[now != before], "up", "down")
    moved.insert(0, "run_id", run_id)
    moved["previous_run_id"] = previous_run_id
    return moved[["run_id", "customer_id", "previous_run_id", "previous_level", "risk_level", "direction",
                  "previous_probability", "churn_probability"]].reset_index(drop=True)


def build_marts(
    settings: Settings, tables: Tables, meta: RunMeta, fact: pd.DataFrame, dim: pd.DataFrame,
    previous: pd.DataFrame | None, previous_run_id: str | None, value_total: float | None = None,
) -> RunMarts:
    """KPI, segment, segment-cell and movement marts of a run from its fact and customer dimension."""
    with_value = settings.analytics.value_column is not None
    joined = fact.merge(dim, on="customer_id", how="left", validate="one_to_one")
    moves = (movement(fact, previous, previous_run_id, meta.run_id)
             if previous is not None and previous_run_id is not None
             else pd.DataFrame(columns=[c.name for c in tables.movement.columns]))
    kpi = _with_rate(_metrics(joined, None, with_value))
    kpi.insert(0, "run_id", meta.run_id)
    kpi["scored_at"] = pd.Timestamp(meta.scored_at)
    kpi["model_version"] = meta.model_version
    kpi["data_version"] = meta.data_version
    cfg = settings.analytics
    kpi["value_column"] = cfg.value_column
    kpi["value_total"] = np.nan if value_total is None else float(value_total)
    kpi["actions"] = int(fact["action_rank"].notna().sum())
    kpi["previous_run_id"] = previous_run_id
    kpi["moved_up"] = int((moves["direction"] == "up").sum())
    kpi["moved_down"] = int((moves["direction"] == "down").sum())

    segments = []
    for d in tables.dimensions:
        part = _with_rate(_metrics(joined, [d.name], with_value)).rename(columns={d.name: "segment"})
        order = {label: i for i, label in enumerate(d.labels)}
        part["segment_order"] = part["segment"].map(order).fillna(len(order)).astype(np.int64)
        part.insert(0, "dimension", d.name)
        segments.append(part)
    segment = pd.concat(segments, ignore_index=True)
    segment.insert(0, "run_id", meta.run_id)

    dim_names = [d.name for d in tables.dimensions]
    cells = _metrics(joined, dim_names, with_value)
    cells.insert(0, "cell", np.arange(len(cells), dtype=np.int64))
    cells.insert(0, "run_id", meta.run_id)
    summary = (moves.groupby(["previous_level", "risk_level", "direction"], sort=True).size()
               .rename("customers").reset_index())
    summary.insert(0, "run_id", meta.run_id)
    summary["customers"] = summary["customers"].astype(np.int64)
    return RunMarts(fact=fact, dim=dim, kpi=kpi, segment=segment, segment_cell=cells, movement=moves,
                    movement_summary=summary, previous_run_id=previous_run_id)


# -- writing ---------------------------------------------------------------------------------------
def _previous_run(conn: sa.Connection, tables: Tables, run_id: str) -> str | None:
    import sqlalchemy as sa

    kpi = tables.run_kpi
    row = conn.execute(
        sa.select(kpi.c.run_id).where(kpi.c.run_id != run_id)
        .order_by(sa.desc(kpi.c.scored_at), sa.desc(kpi.c.run_id)).limit(1)
    ).first()
    return None if row is None else str(row.run_id)


def _run_scores(conn: sa.Connection, tables: Tables, run_id: str) -> pd.DataFrame:
    import sqlalchemy as sa

    fact = tables.fact
    result = conn.execute(
        sa.select(fact.c.customer_id, fact.c.risk_level, fact.c.churn_probability)
        .where(fact.c.run_id == run_id))
    return pd.DataFrame(result.fetchall(), columns=["customer_id", "risk_level", "churn_probability"])


def write_run(
    conn: sa.Connection, settings: Settings, tables: Tables, meta: RunMeta, fact: pd.DataFrame,
    features: pd.DataFrame, keep_runs: int, chunk_size: int,
) -> RunMarts:
    """Inside the caller's transaction: replace the run's rows in every table (fact and marts), update the
    customer dimension, and delete the runs beyond `keep_runs` (by scoring time)."""
    import sqlalchemy as sa

    database.create_tables(conn, tables.metadata)
    create_views(conn, tables)
    previous_run_id = _previous_run(conn, tables, meta.run_id)
    previous = _run_scores(conn, tables, previous_run_id) if previous_run_id else None
    dim = customer_dimension(features, settings)
    value = settings.analytics.value_column
    value_total = float(features[value].sum()) if value is not None else None
    marts = build_marts(settings, tables, meta, fact, dim, previous, previous_run_id, value_total)

    for table in tables.run_keyed:
        conn.execute(table.delete().where(table.c.run_id == meta.run_id))
    database.insert_frame(conn, tables.fact, marts.fact, chunk_size)
    database.insert_frame(conn, tables.run_kpi, marts.kpi, chunk_size)
    database.insert_frame(conn, tables.segment, marts.segment, chunk_size)
    database.insert_frame(conn, tables.segment_cell, marts.segment_cell, chunk_size)
    database.insert_frame(conn, tables.movement, marts.movement, chunk_size)
    database.insert_frame(conn, tables.movement_summary, marts.movement_summary, chunk_size)
    # the customer dimension holds each customer as of the latest run that scored them
    in_run = sa.select(tables.fact.c.customer_id).where(tables.fact.c.run_id == meta.run_id)
    conn.execute(tables.dim_customer.delete().where(tables.dim_customer.c.customer_id.in_(in_run)))
    database.insert_frame(conn, tables.dim_customer, dim.assign(run_id=meta.run_id), chunk_size)

    kpi = tables.run_kpi
    runs = [r.run_id for r in conn.execute(
        sa.select(kpi.c.run_id).order_by(sa.desc(kpi.c.scored_at), sa.desc(kpi.c.run_id)))]
    marts.deleted_runs = runs[keep_runs:]
    for table in tables.run_keyed:
        database.delete_where_in(conn, table, "run_id", marts.deleted_runs)
    if marts.deleted_runs:  # customers no remaining run scored
        dim_t = tables.dim_customer
        conn.execute(dim_t.delete().where(dim_t.c.run_id.in_(marts.deleted_runs)))
    return marts


def refresh(
    settings: Settings, meta: RunMeta, features: pd.DataFrame, scores: pd.DataFrame, scorer: Scorer
) -> RunMarts:
    """A scoring run's fact and marts, written in one transaction on ``CHURNOPS_DATABASE_URL``
    (:class:`churnops.database.DatabaseError` when the database refuses: nothing of the run was written)."""
    cfg = settings.params.batch
    for note in settings.analytics.skipped:  # the default playbook names what the schema lacks
        log.warning("analytics.default_skipped", skipped=note,
                    reason="the schema lacks it; set the analytics key in params.yaml to choose another")
    fact = build_fact(settings, meta, features, scores, scorer)
    engine = database.engine_for(settings)
    try:
        what = f"writing run {meta.run_id} to table {cfg.table} and the marts"
        with database.transaction(engine, what=what) as conn:
            return write_run(conn, settings, tables(settings), meta, fact, features, cfg.keep_runs,
                             cfg.chunk_size)
    finally:
        engine.dispose()
