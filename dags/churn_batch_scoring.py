"""### churn_batch_scoring: every customer scored by the champion

Nightly (env `CHURNOPS_SCORING_SCHEDULE`, a cron expression or preset; default `0 2 * * *`):

`score_customers` scores the gold layer (`data/features/customers.parquet`) with the champion: churn
probability, risk level, anomaly flag, risk drivers, recommended action, expected loss. The rows and the
analytics marts (customer dimension, KPI, segment and movement marts; docs/analytics.md) go to
`CHURNOPS_DATABASE_URL` (SQLite by default, PostgreSQL by URL) in one transaction that replaces this run's
rows (a retry never duplicates; a failed refresh leaves the previous run's marts as they were), then to
`data/scores/scores-<run>.parquet` + `latest.parquet` and the BI exports (`data/exports/`, CSV + Parquet).

`top_at_risk` reads the run back from the table and lists the customers most at risk in its log; its
return value (XCom) is what the REST API serves for the run
(`GET /api/v2/dags/churn_batch_scoring/dagRuns/{run}/taskInstances/top_at_risk/xcomEntries/return_value`).
`churnops score` runs the same code by hand.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import Param, dag, get_current_context, task

from churnops.logs import task_default_args

SCHEDULE = os.environ.get("CHURNOPS_SCORING_SCHEDULE", "0 2 * * *")


@dag(
    dag_id="churn_batch_scoring",
    description="Score every customer with the champion; refresh the scores, analytics marts and BI exports",
    doc_md=__doc__,
    schedule=SCHEDULE,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=4),
    tags=["churnops", "scoring"],
    default_args=task_default_args(
        retries=2, retry_delay=timedelta(minutes=2), execution_timeout=timedelta(hours=2)
    ),
    params={
        "top_n": Param(
            None,
            type=["null", "integer"],
            minimum=0,
            maximum=1000,
            title="Top at-risk customers",
            description="How many of the most at-risk customers to list. Empty: batch.top_n of params.yaml.",
        ),
    },
)
def churn_batch_scoring():
    @task
    def score_customers() -> dict:
        """Score the gold layer with the champion; scores and marts (one transaction), then the exports."""
        from airflow.sdk.exceptions import AirflowFailException

        from churnops.settings import load_settings
        from pipeline.batch import BatchError, score_customers

        context = get_current_context()
        try:
            result = score_customers(
                load_settings(), run_id=context["run_id"], top_n=context["params"].get("top_n")
            )
        except BatchError as exc:  # no champion, no gold layer, bad run id: retrying cannot help
            raise AirflowFailException(str(exc)) from exc
        doc = result.to_dict()
        doc.pop("top")  # top_at_risk lists them from the table
        return doc

    @task
    def top_at_risk(scored: dict) -> list[dict]:
        """The customers most at risk in this run, read back from the scores table."""
        from churnops.logs import get_logger
        from churnops.settings import load_settings
        from pipeline.batch import top_at_risk

        settings = load_settings()
        n = get_current_context()["params"].get("top_n")
        rows = top_at_risk(settings, settings.params.batch.top_n if n is None else n, run_id=scored["run_id"])
        log = get_logger("churnops.batch")
        for rank, row in enumerate(rows, 1):
            log.info(
                "top_at_risk",
                rank=rank,
                customer_id=row["customer_id"],
                churn_probability=round(row["churn_probability"], 4),
                risk_level=row["risk_level"],
                anomaly=row["anomaly"],
            )
        return rows

    top_at_risk(score_customers())


churn_batch_scoring()
