"""Risk analytics for the people who act on churn: marts, KPIs, revenue at risk, retention actions, exports.

Written with every batch-scoring run (``pipeline.batch``) in the scores' transaction; read by
`churnops actions` and the dashboard (``dashboard/``). docs/analytics.md describes the tables.

- :mod:`~churnops.analytics.segments`: the customer dimension (categories, bands of ``analytics.bands``);
- :mod:`~churnops.analytics.drivers`: top risk drivers from the model's own contributions;
- :mod:`~churnops.analytics.actions`: retention-action rules (``analytics.actions``) and reasons in words;
- :mod:`~churnops.analytics.tables`: the table definitions;
- :mod:`~churnops.analytics.marts`: the fact and the marts of a run, written in the caller's transaction;
- :mod:`~churnops.analytics.read`: :class:`~churnops.analytics.read.MartReader`, the queries of the fronts;
- :mod:`~churnops.analytics.exports`: timestamped CSV/Parquet exports for BI tools.
"""
