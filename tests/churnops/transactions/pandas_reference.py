"""The customer features of features.sql written with pandas, line by line from their definitions.

The tests hold the SQL to it (tests/churnops/transactions/test_features.py) and the benchmark runs it as the
pandas side of the comparison (benchmarks/bench_transactions.py).
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd

from churnops.settings import TransactionSettings
from churnops.transactions.cutoffs import day_number


def pandas_features(lines: pd.DataFrame, cutoffs: list[date] | tuple[date, ...],
                    cfg: TransactionSettings) -> pd.DataFrame:
    """`lines`: the clean table (customer_id, invoice, stock_code, quantity, price, is_return, t,
    day_number)."""
    sales = lines[~lines["is_return"]].assign(amount=lines["quantity"] * lines["price"])
    invoices = sales.groupby(["customer_id", "invoice"], sort=False).agg(
        t=("t", "min"), items=("quantity", "sum"), amount=("amount", "sum")).reset_index()
    first_buys = sales.groupby(["customer_id", "stock_code"], sort=False)["t"].min().reset_index()
    days = sales[["customer_id", "day_number"]].drop_duplicates()
    back = lines[lines["is_return"]]
    returns = back.assign(amount=-back["quantity"] * back["price"]).groupby(
        ["customer_id", "invoice"], sort=False).agg(t=("t", "min"), amount=("amount", "sum")).reset_index()
    parts = []
    for cutoff in cutoffs:
        at = float(day_number(cutoff))
        before = invoices[invoices["t"] < at]
        recent = before[before["t"] >= at - cfg.trend_days]
        h = before.groupby("customer_id").agg(
            frequency=("invoice", "size"), monetary=("amount", "sum"), items=("items", "sum"),
            first_t=("t", "min"), last_t=("t", "max"))
        h["recent_invoices"] = recent.groupby("customer_id").size().reindex(h.index, fill_value=0)
        h["recent_amount"] = recent.groupby("customer_id")["amount"].sum().reindex(h.index, fill_value=0.0)
        h["active_days"] = days[days["day_number"] < at].groupby("customer_id").size().reindex(h.index)
        bought = first_buys[first_buys["t"] < at]
        h["distinct_products"] = bought.groupby("customer_id").size().reindex(h.index)
        returned = returns[returns["t"] < at].groupby("customer_id")["amount"].sum()
        h["returned"] = returned.reindex(h.index, fill_value=0.0)
        ahead = invoices[(invoices["t"] >= at) & (invoices["t"] < at + cfg.horizon_days)]
        buyers = set(ahead["customer_id"])
        if cfg.population_days:
            h = h[h["last_t"] >= at - cfg.population_days]
        window = float(cfg.trend_days)
        span = np.maximum(at - h["first_t"], window)
        out = pd.DataFrame({
            "customer_id": h.index.astype(str), "cutoff": cutoff,
            "recency_days": at - h["last_t"], "frequency": h["frequency"], "monetary": h["monetary"],
            "avg_basket_value": h["monetary"] / h["frequency"],
            "avg_items_per_invoice": h["items"] / h["frequency"],
            "distinct_products": h["distinct_products"], "active_days": h["active_days"],
            "tenure_days": at - h["first_t"], "recent_invoices": h["recent_invoices"],
            "invoice_trend": (h["recent_invoices"] / window) / (h["frequency"] / span),
            "spend_trend": np.where(h["monetary"] > 0,
                                    (h["recent_amount"] / window) / (h["monetary"] / span), 0.0),
            "return_rate": np.where(h["monetary"] > 0, h["returned"] / h["monetary"], 0.0),
            "churned": [0 if c in buyers else 1 for c in h.index],
        })
        parts.append(out)
    frame = pd.concat(parts, ignore_index=True)
    return frame.sort_values(["cutoff", "customer_id"], kind="stable").reset_index(drop=True)
