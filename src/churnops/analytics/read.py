"""Reading the marts: the queries behind `churnops actions`, the dashboard and `top_at_risk`.

Every query reads a pre-aggregated mart (one row per run, per segment, per combination of segments) or an
indexed lookup of the fact (one customer's history, a run's top actions or anomalies), never a scan of a
run's customers, so pages stay fast on million-customer runs (benchmarks/bench_analytics.py). A database
that is down or refuses a query raises :class:`churnops.database.DatabaseError`; no run yet gives empty
frames and ``latest_run_id() is None``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from churnops import database
from churnops.analytics.segments import Dimension
from churnops.analytics.tables import Tables, tables
from churnops.settings import Settings

if TYPE_CHECKING:
    import sqlalchemy as sa

SUMMED = ("customers", "expected_churners", "high", "medium", "low", "anomalies", "revenue_at_risk")


@dataclass
class MartReader:
    engine: sa.Engine
    tables: Tables

    @classmethod
    @contextmanager
    def open(cls, settings: Settings) -> Iterator[MartReader]:
        engine = database.engine_for(settings)
        try:
            yield cls(engine, tables(settings))
        finally:
            engine.dispose()

    @property
    def dimensions(self) -> tuple[Dimension, ...]:
        return self.tables.dimensions

    @property
    def database(self) -> str:
        return database.describe(self.engine)

    def _ready(self) -> bool:
        return database.has_table(self.engine, self.tables.run_kpi.name)

    def _frame(self, query: Any) -> pd.DataFrame:
        return database.read_frame(self.engine, query)

    # -- runs ----------------------------------------------------------------------------------
    def runs(self) -> pd.DataFrame:
        """One row per run (the KPI mart), oldest first."""
        import sqlalchemy as sa

        if not self._ready():
            return pd.DataFrame(columns=[c.name for c in self.tables.run_kpi.columns])
        kpi = self.tables.run_kpi
        return self._frame(sa.select(kpi).order_by(kpi.c.scored_at, kpi.c.run_id))

    def latest_run_id(self) -> str | None:
        import sqlalchemy as sa

        if not self._ready():
            return None
        kpi = self.tables.run_kpi
        frame = self._frame(sa.select(kpi.c.run_id).order_by(sa.desc(kpi.c.scored_at),
                                                              sa.desc(kpi.c.run_id)).limit(1))
        return None if frame.empty else str(frame.run_id.iloc[0])

    # -- segments ------------------------------------------------------------------------------
    def segment(self, run_id: str, dimension: str) -> pd.DataFrame:
        """The per-segment mart of one dimension in a run, in the dimension's order."""
        import sqlalchemy as sa

        seg = self.tables.segment
        return self._frame(sa.select(seg).where(seg.c.run_id == run_id, seg.c.dimension == dimension)
                           .order_by(seg.c.segment_order, seg.c.segment))

    def breakdown(
        self, run_id: str, by: str, filters: Mapping[str, Sequence[str]] | None = None
    ) -> pd.DataFrame:
        """Figures per value of dimension `by` among the customers matching `filters` (dimension -> allowed
        values; an empty or missing list: no filter), summed from the segment-cell mart."""
        import sqlalchemy as sa

        cell = self.tables.segment_cell
        self._dimension(by)
        where = [cell.c.run_id == run_id]
        for name, values in (filters or {}).items():
            self._dimension(name)
            if values:
                where.append(cell.c[name].in_(list(values)))
        query = (sa.select(cell.c[by].label("segment"), *[sa.func.sum(cell.c[m]).label(m) for m in SUMMED])
                 .where(*where).group_by(cell.c[by]))
        frame = self._frame(query)
        for m in SUMMED:
            frame[m] = pd.to_numeric(frame[m])
        frame["churn_rate"] = frame["expected_churners"] / frame["customers"]
        order = {label: i for i, label in enumerate(self._dimension(by).labels)}
        frame["segment_order"] = frame["segment"].map(order).fillna(len(order))
        return frame.sort_values(["segment_order", "segment"]).reset_index(drop=True)

    def totals(self, run_id: str, filters: Mapping[str, Sequence[str]] | None = None) -> dict[str, float]:
        """The figures of the customers matching `filters` (all of the run without)."""
        first = self.tables.dimensions[0].name
        frame = self.breakdown(run_id, first, filters)
        out = {m: float(frame[m].sum()) if not frame.empty else 0.0 for m in SUMMED}
        if frame.empty or frame["revenue_at_risk"].isna().all():
            out["revenue_at_risk"] = float("nan")
        out["churn_rate"] = out["expected_churners"] / out["customers"] if out["customers"] else float("nan")
        return out

    def _dimension(self, name: str) -> Dimension:
        for d in self.tables.dimensions:
            if d.name == name:
                return d
        raise ValueError(f"unknown dimension {name!r}; known: {[d.name for d in self.tables.dimensions]}")

    # -- customers -----------------------------------------------------------------------------
    def customer(self, customer_id: str) -> dict[str, Any] | None:
        """The customer's dimension row (None when no kept run scored them)."""
        import sqlalchemy as sa

        dim = self.tables.dim_customer
        frame = self._frame(sa.select(dim).where(dim.c.customer_id == str(customer_id)))
        return None if frame.empty else frame.iloc[0].to_dict()

    def history(self, customer_id: str) -> pd.DataFrame:
        """Every kept score of the customer, oldest first (the fact's customer index)."""
        import sqlalchemy as sa

        fact = self.tables.fact
        return self._frame(sa.select(fact).where(fact.c.customer_id == str(customer_id))
                           .order_by(fact.c.scored_at, fact.c.run_id))

    def top_at_risk(self, run_id: str, n: int) -> pd.DataFrame:
        import sqlalchemy as sa

        fact = self.tables.fact
        return self._frame(sa.select(fact).where(fact.c.run_id == run_id)
                           .order_by(sa.desc(fact.c.churn_probability), fact.c.customer_id).limit(n))

    def actions(self, run_id: str, top: int) -> pd.DataFrame:
        """The run's recommended actions, highest expected loss first, with the customer's segments."""
        import sqlalchemy as sa

        fact, dim = self.tables.fact, self.tables.dim_customer
        dims = [dim.c[d.name] for d in self.tables.dimensions]
        query = (sa.select(fact.c.action_rank, fact.c.customer_id, fact.c.churn_probability,
                           fact.c.risk_level, fact.c.expected_loss, fact.c.recommended_action,
                           fact.c.action_reason,
                           fact.c.top_drivers, fact.c.anomaly, *dims)
                 .select_from(fact.outerjoin(dim, dim.c.customer_id == fact.c.customer_id))
                 .where(fact.c.run_id == run_id, fact.c.action_rank.is_not(None))
                 .order_by(fact.c.action_rank).limit(top))
        return self._frame(query)

    def anomalies(self, run_id: str, limit: int) -> pd.DataFrame:
        """The run's flagged customers, most anomalous first, with the values outside the reference range."""
        import sqlalchemy as sa

        fact = self.tables.fact
        query = (sa.select(fact.c.customer_id, fact.c.anomaly_score, fact.c.out_of_range,
                           fact.c.churn_probability, fact.c.risk_level, fact.c.recommended_action)
                 .where(fact.c.run_id == run_id, fact.c.anomaly == sa.true())
                 .order_by(sa.desc(fact.c.anomaly_score), fact.c.customer_id).limit(limit))
        return self._frame(query)

    def movement_summary(self, run_id: str) -> pd.DataFrame:
        """previous_level -> risk_level: customers, for the customers whose level changed in the run (the
        pre-aggregated ``mart_movement_summary``)."""
        import sqlalchemy as sa

        summary = self.tables.movement_summary
        return self._frame(sa.select(summary.c.previous_level, summary.c.risk_level, summary.c.direction,
                                     summary.c.customers)
                           .where(summary.c.run_id == run_id)
                           .order_by(summary.c.previous_level, summary.c.risk_level))

    def movers(self, run_id: str, direction: str, limit: int) -> pd.DataFrame:
        import sqlalchemy as sa

        mv = self.tables.movement
        change = mv.c.churn_probability - mv.c.previous_probability
        order = sa.desc(change) if direction == "up" else change
        return self._frame(sa.select(mv).where(mv.c.run_id == run_id, mv.c.direction == direction)
                           .order_by(order, mv.c.customer_id).limit(limit))
