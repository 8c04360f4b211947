"""The analytics tables in ``CHURNOPS_DATABASE_URL`` (docs/analytics.md describes every column).

- ``<batch.table>`` (``churn_scores``): the score fact, one row per run and customer;
- ``dim_customer``: one row per customer (id, categories, bands), as of the latest run that scored it;
- ``mart_run_kpi``: one row per run (the figures of the overview);
- ``mart_segment``: one row per run, dimension and value (the bar charts, BI's per-segment view);
- ``mart_segment_cell``: one row per run and combination of dimension values that has customers (the
  segments page filters and sums these, never the fact);
- ``mart_risk_movement``: one row per run and customer whose risk level changed since the previous run;
- ``mart_movement_summary``: one row per run and (previous level, level) pair that has movers (the
  overview's movement table, pre-aggregated so it never groups a run's movers).

Views for BI tools (:func:`create_views`, made with the tables in the refresh's transaction):
``v_latest_kpi``, ``v_latest_scores`` (the latest run's fact with each customer's segments),
``v_latest_segments``, ``v_latest_movement`` (the summary) and ``v_retention_actions`` (the latest run's
actions, by rank). "Latest" is the run of ``mart_run_kpi`` scored last (ties: the greater run id), as
:meth:`churnops.analytics.read.MartReader.latest_run_id` says.

Every run-keyed table is indexed on ``run_id``; the fact also on ``customer_id`` (a customer's history),
``(run_id, action_rank)`` (the action list) and ``(run_id, anomaly, anomaly_score)`` (the anomalies page).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from churnops.analytics.segments import Dimension, dimensions
from churnops.settings import Settings

if TYPE_CHECKING:
    import sqlalchemy as sa

DIM_CUSTOMER = "dim_customer"
RUN_KPI = "mart_run_kpi"
SEGMENT = "mart_segment"
SEGMENT_CELL = "mart_segment_cell"
MOVEMENT = "mart_risk_movement"
MOVEMENT_SUMMARY = "mart_movement_summary"
VIEWS = ("v_latest_kpi", "v_latest_scores", "v_latest_segments", "v_latest_movement", "v_retention_actions")

METRICS = ("customers", "expected_churners", "high", "medium", "low", "anomalies", "revenue_at_risk")


@dataclass(frozen=True)
class Tables:
    metadata: sa.MetaData
    fact: sa.Table
    dim_customer: sa.Table
    run_kpi: sa.Table
    segment: sa.Table
    segment_cell: sa.Table
    movement: sa.Table
    movement_summary: sa.Table
    dimensions: tuple[Dimension, ...]

    @property
    def run_keyed(self) -> list[sa.Table]:
        """Tables whose rows belong to one run (replaced on a retry, deleted when the run is pruned)."""
        return [self.fact, self.run_kpi, self.segment, self.segment_cell, self.movement,
                self.movement_summary]

    def latest_run(self) -> sa.ScalarSelect:
        """The run id scored last (ties: the greater id), as a scalar subquery."""
        import sqlalchemy as sa

        kpi = self.run_kpi
        return (sa.select(kpi.c.run_id).order_by(sa.desc(kpi.c.scored_at), sa.desc(kpi.c.run_id)).limit(1)
                .scalar_subquery())

    def views(self) -> dict[str, sa.Select]:
        """The BI views: name -> the query it stands for (docs/analytics.md, "Views")."""
        import sqlalchemy as sa

        fact, dim = self.fact, self.dim_customer
        latest = self.latest_run()
        dims = [dim.c[d.name] for d in self.dimensions]
        with_segments = fact.outerjoin(dim, dim.c.customer_id == fact.c.customer_id)
        summary = self.movement_summary
        return {
            "v_latest_kpi": sa.select(self.run_kpi).where(self.run_kpi.c.run_id == latest),
            "v_latest_scores": (sa.select(fact, *dims).select_from(with_segments)
                                .where(fact.c.run_id == latest)),
            "v_latest_segments": sa.select(self.segment).where(self.segment.c.run_id == latest),
            "v_latest_movement": sa.select(summary).where(summary.c.run_id == latest),
            "v_retention_actions": (
                sa.select(fact.c.run_id, fact.c.action_rank, fact.c.customer_id, fact.c.churn_probability,
                          fact.c.risk_level, fact.c.expected_loss, fact.c.recommended_action,
                          fact.c.action_name, fact.c.action_reason, fact.c.top_drivers, fact.c.anomaly, *dims)
                .select_from(with_segments)
                .where(fact.c.run_id == latest, fact.c.action_rank.is_not(None))
                .order_by(fact.c.action_rank)),
        }


def create_views(conn: sa.Connection, tables: Tables) -> None:
    """Create (or bring up to date) the BI views in the caller's transaction. PostgreSQL: ``CREATE OR
    REPLACE VIEW``, which keeps views a BI tool built on them; SQLite: dropped and created again."""
    postgresql = conn.dialect.name == "postgresql"
    for name, query in tables.views().items():
        body = query.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
        quoted = conn.dialect.identifier_preparer.quote(name)
        if postgresql:
            conn.exec_driver_sql(f"CREATE OR REPLACE VIEW {quoted} AS {body}")
        else:
            conn.exec_driver_sql(f"DROP VIEW IF EXISTS {quoted}")
            conn.exec_driver_sql(f"CREATE VIEW {quoted} AS {body}")


def _metric_columns() -> list[sa.Column]:
    import sqlalchemy as sa

    return [
        sa.Column("customers", sa.Integer, nullable=False),
        sa.Column("expected_churners", sa.Float, nullable=False),  # sum of churn probabilities
        sa.Column("churn_rate", sa.Float, nullable=False),  # expected churners / customers
        sa.Column("high", sa.Integer, nullable=False),
        sa.Column("medium", sa.Integer, nullable=False),
        sa.Column("low", sa.Integer, nullable=False),
        sa.Column("anomalies", sa.Integer, nullable=False),
        sa.Column("revenue_at_risk", sa.Float, nullable=True),  # NULL without analytics.value_column
    ]


def tables(settings: Settings) -> Tables:
    """The table definitions for these settings (the dimension columns follow the schema and the bands)."""
    import sqlalchemy as sa

    md = sa.MetaData()
    name = settings.params.batch.table
    dims = tuple(dimensions(settings))
    fact = sa.Table(
        name, md,
        sa.Column("run_id", sa.String(128), primary_key=True),
        sa.Column("customer_id", sa.String(64), primary_key=True),
        sa.Column("churn_probability", sa.Float, nullable=False),
        sa.Column("risk_level", sa.String(16), nullable=False),
        sa.Column("anomaly", sa.Boolean, nullable=False),
        sa.Column("anomaly_score", sa.Float, nullable=False),
        sa.Column("out_of_range", sa.Text, nullable=True),  # numeric columns outside the reference range
        sa.Column("top_drivers", sa.Text, nullable=True),  # "driver, driver, driver", strongest first
        sa.Column("driver_effects", sa.Text, nullable=True),  # their log-odds contributions, same order
        sa.Column("recommended_action", sa.String(200), nullable=True),
        sa.Column("action_name", sa.String(64), nullable=True),
        sa.Column("action_reason", sa.Text, nullable=True),
        sa.Column("action_rank", sa.Integer, nullable=True),  # 1 = highest expected loss of the run
        sa.Column("expected_loss", sa.Float, nullable=True),  # probability x value column
        sa.Column("model_version", sa.String(32), nullable=False),
        sa.Column("data_version", sa.String(64), nullable=True),
        sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False),
        sa.Index(f"ix_{name}_scored_at", "scored_at"),
        sa.Index(f"ix_{name}_run_risk", "run_id", "churn_probability"),
        sa.Index(f"ix_{name}_customer", "customer_id", "scored_at"),
        sa.Index(f"ix_{name}_run_action", "run_id", "action_rank"),
        sa.Index(f"ix_{name}_run_anomaly", "run_id", "anomaly", "anomaly_score"),
    )
    dim_customer = sa.Table(
        DIM_CUSTOMER, md,
        sa.Column("customer_id", sa.String(64), primary_key=True),
        *[sa.Column(d.name, sa.String(64), nullable=False) for d in dims],
        sa.Column("run_id", sa.String(128), nullable=False),  # the run that last wrote the row
    )
    run_kpi = sa.Table(
        RUN_KPI, md,
        sa.Column("run_id", sa.String(128), primary_key=True),
        sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_version", sa.String(32), nullable=False),
        sa.Column("data_version", sa.String(64), nullable=True),
        *_metric_columns(),
        sa.Column("value_column", sa.String(128), nullable=True),
        sa.Column("value_total", sa.Float, nullable=True),
        sa.Column("actions", sa.Integer, nullable=False),
        sa.Column("previous_run_id", sa.String(128), nullable=True),
        sa.Column("moved_up", sa.Integer, nullable=False),
        sa.Column("moved_down", sa.Integer, nullable=False),
        sa.Index(f"ix_{RUN_KPI}_scored_at", "scored_at"),
    )
    segment = sa.Table(
        SEGMENT, md,
        sa.Column("run_id", sa.String(128), primary_key=True),
        sa.Column("dimension", sa.String(64), primary_key=True),
        sa.Column("segment", sa.String(64), primary_key=True),
        sa.Column("segment_order", sa.Integer, nullable=False),
        *_metric_columns(),
    )
    segment_cell = sa.Table(
        SEGMENT_CELL, md,
        sa.Column("run_id", sa.String(128), primary_key=True),
        sa.Column("cell", sa.Integer, primary_key=True, autoincrement=False),
        *[sa.Column(d.name, sa.String(64), nullable=False) for d in dims],
        *[c for c in _metric_columns() if c.name != "churn_rate"],
    )
    movement = sa.Table(
        MOVEMENT, md,
        sa.Column("run_id", sa.String(128), primary_key=True),
        sa.Column("customer_id", sa.String(64), primary_key=True),
        sa.Column("previous_run_id", sa.String(128), nullable=False),
        sa.Column("previous_level", sa.String(16), nullable=False),
        sa.Column("risk_level", sa.String(16), nullable=False),
        sa.Column("direction", sa.String(8), nullable=False),  # up (riskier) | down
        sa.Column("previous_probability", sa.Float, nullable=False),
        sa.Column("churn_probability", sa.Float, nullable=False),
        sa.Index(f"ix_{MOVEMENT}_run_direction", "run_id", "direction"),
    )
    movement_summary = sa.Table(
        MOVEMENT_SUMMARY, md,
        sa.Column("run_id", sa.String(128), primary_key=True),
        sa.Column("previous_level", sa.String(16), primary_key=True),
        sa.Column("risk_level", sa.String(16), primary_key=True),
        sa.Column("direction", sa.String(8), nullable=False),
        sa.Column("customers", sa.Integer, nullable=False),
    )
    return Tables(md, fact, dim_customer, run_kpi, segment, segment_cell, movement, movement_summary, dims)
