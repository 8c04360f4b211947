"""Customer features as of each cut-off, and the churn label, from the clean lines: one SQL text
(``features.sql``) run by DuckDB (embedded, the default) or by PostgreSQL (a URL).

The result has one row per (customer, cut-off) for the customers who bought within
``transactions.population_days`` before the cut-off:

=====================  ================================================================================
customer_id            the customer
cutoff                 the cut-off date (features read the lines before it)
recency_days           days from the last purchase to the cut-off
frequency              purchase invoices
monetary               value bought (quantity x price of the purchase lines)
avg_basket_value       monetary / frequency
avg_items_per_invoice  items bought / frequency
distinct_products      stock codes bought
active_days            days with a purchase
tenure_days            days from the first purchase to the cut-off
recent_invoices        purchase invoices in the last ``trend_days``
invoice_trend          invoices per day in the last ``trend_days`` over invoices per day since the first
                       purchase (1: steady, below 1: slowing down)
spend_trend            the same for the value bought
return_rate            value returned (cancellations) / value bought
churned                1 when the customer bought nothing within ``horizon_days`` from the cut-off
=====================  ================================================================================
"""

from __future__ import annotations

import time
from datetime import timedelta
from importlib import resources
from pathlib import Path

import pandas as pd

from churnops.logs import get_logger
from churnops.settings import TransactionSettings
from churnops.transactions.cutoffs import EPOCH, CutoffPlan, cutoff_frame

log = get_logger(__name__)

FEATURES = ("recency_days", "frequency", "monetary", "avg_basket_value", "avg_items_per_invoice",
            "distinct_products", "active_days", "tenure_days", "recent_invoices", "invoice_trend",
            "spend_trend", "return_rate")
COUNT_FEATURES = ("frequency", "distinct_products", "active_days", "recent_invoices")
LABEL = "churned"
# the clean columns the SQL reads, and their PostgreSQL types
SQL_INPUT = {"customer_id": "TEXT", "invoice": "TEXT", "stock_code": "TEXT", "quantity": "DOUBLE PRECISION",
             "price": "DOUBLE PRECISION", "is_return": "BOOLEAN", "t": "DOUBLE PRECISION",
             "day_number": "INTEGER"}
CUTOFF_INPUT = {"cutoff_t": "DOUBLE PRECISION", "horizon_end_t": "DOUBLE PRECISION",
                "trend_start_t": "DOUBLE PRECISION", "population_start_t": "DOUBLE PRECISION"}


def feature_sql() -> str:
    """The SQL text (the same for every engine)."""
    return resources.files("churnops.transactions").joinpath("features.sql").read_text()


def history_bounds(con) -> tuple[object, object]:
    """(first, last) invoice date-time of the clean table ``tx`` in a DuckDB connection."""
    return con.execute("SELECT min(invoice_date), max(invoice_date) FROM tx").fetchall()[0]


def _finish(frame: pd.DataFrame) -> pd.DataFrame:
    """Typed columns, the cut-off as a date, rows in (cut-off, customer) order whatever the engine's
    collation."""
    frame = frame.copy()
    frame["cutoff"] = [EPOCH + timedelta(days=int(round(t))) for t in frame.pop("cutoff_t")]
    for column in COUNT_FEATURES:
        frame[column] = frame[column].astype("int64")
    for column in FEATURES:
        if column not in COUNT_FEATURES:
            frame[column] = frame[column].astype("float64")
    frame[LABEL] = frame[LABEL].astype("int64")
    frame["customer_id"] = frame["customer_id"].astype(str)
    frame = frame[["customer_id", "cutoff", *FEATURES, LABEL]]
    return frame.sort_values(["cutoff", "customer_id"], kind="stable").reset_index(drop=True)


def features_duckdb(con, plan: CutoffPlan, cfg: TransactionSettings) -> pd.DataFrame:
    """Run the SQL in a DuckDB connection that holds the clean table ``tx``."""
    started = time.perf_counter()
    con.register("cutoffs_frame", cutoff_frame(plan, cfg))
    con.execute("CREATE OR REPLACE TEMP TABLE cutoffs AS SELECT * FROM cutoffs_frame")
    con.unregister("cutoffs_frame")
    frame = con.execute(feature_sql()).df()
    result = _finish(frame)
    log.info("transactions.features", engine="duckdb", rows=len(result), cutoffs=len(plan.all),
             seconds=round(time.perf_counter() - started, 3))
    return result


def features_postgresql(url: str, lines: pd.DataFrame, plan: CutoffPlan,
                        cfg: TransactionSettings) -> pd.DataFrame:
    """Run the SQL on PostgreSQL: the clean `lines` and the cut-offs are copied into temporary tables of
    one transaction (nothing stays in the database), then the same SQL text runs there."""
    from churnops import database

    started = time.perf_counter()
    frame = database.query_over_frames(
        url, {"tx": (lines, SQL_INPUT), "cutoffs": (cutoff_frame(plan, cfg), CUTOFF_INPUT)}, feature_sql(),
        what="computing the transactional features")
    result_frame = _finish(frame)
    log.info("transactions.features", engine="postgresql", rows=len(result_frame), cutoffs=len(plan.all),
             seconds=round(time.perf_counter() - started, 3))
    return result_frame


def build_customer_table(con, cfg: TransactionSettings, *, database_url: str | None = None,
                         today=None) -> tuple[pd.DataFrame, CutoffPlan]:
    """Features and labels at every cut-off of the plan, from the clean table ``tx`` in DuckDB `con`:
    computed there, or on PostgreSQL at `database_url`. Raises CutoffError when the cut-offs do not fit."""
    from churnops.transactions.cutoffs import plan_cutoffs

    first, last = history_bounds(con)
    if first is None:
        raise ValueError("no clean transaction lines: nothing to compute features from")
    plan = plan_cutoffs(cfg, first, last, today=today)
    if database_url:
        lines = con.execute(f"SELECT {', '.join(SQL_INPUT)} FROM tx").df()
        return features_postgresql(database_url, lines, plan, cfg), plan
    return features_duckdb(con, plan, cfg), plan


def read_clean(con, path: Path | str) -> None:
    """Load a clean (silver) Parquet file as the table ``tx`` of DuckDB `con`."""
    quoted = str(path).replace("'", "''")
    con.execute(f"CREATE OR REPLACE TABLE tx AS SELECT * FROM read_parquet('{quoted}')")
