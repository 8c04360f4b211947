"""The analytics tables in ``CHURNOPS_DATABASE_URL`` (docs/analytics.md describes every column).

- ``<batch.table>`` (``churn_scores``): the score fact, one row per run and customer;
- ``dim_customer``: one row per customer (id, categories, bands), as of the latest run that scored it;
- ``mart_run_kpi``: one row per run (the figures of the overview);
- ``mart_segment``: one row per run, dimension and value (the bar charts, BI's per-segment view);
- ``mart_segment_cell``: one row per run and combination of dimension values that has customers (the
  segments page filters and sums these, never the fact);
- ``mart_risk_movement``: one row per run and customer whose risk level changed since the previous run.

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
    dimensions: tuple[Dimension, ...]

    @property
    def run_keyed(self) -> list[sa.Table]:
        """Tables whose rows belong to one run (replaced on a retry, deleted when the run is pruned)."""
        return [self.fact, self.run_kpi, self.segment, self.segment_cell, self.movement]


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
    return Tables(md, fact, dim_customer, run_kpi, segment, segment_cell, movement, dims)
