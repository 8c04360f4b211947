"""Transactions as a data source: purchase histories in the Online Retail II layout (docs/transactions.md).

- :mod:`.generate`: a deterministic synthetic retailer (purchase rates, baskets, seasonality, cancellations,
  guest rows, customers who stop buying; drift options), CSV or Parquet.
- :mod:`.validate`: the raw file read by DuckDB, checked by rules with the customer table's report layout,
  cleaned into the silver Parquet the feature SQL reads.
- :mod:`.cutoffs`: the cut-off schedule (train on earlier cut-offs, hold out the latest) and its checks
  against the history.
- :mod:`.features`: customer features as of each cut-off and the churn label, one SQL text (features.sql)
  run on DuckDB or PostgreSQL.
"""
