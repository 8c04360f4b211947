"""The synthetic retailer: deterministic, shaped like Online Retail II, with the dirt real exports carry."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from churnops.settings import TransactionColumns
from churnops.transactions.generate import RetailerProfile, TransactionDrift, generate_transactions

CHURNOPS = Path(sys.executable).parent / "churnops"
ONLINE_RETAIL_II = ["Invoice", "StockCode", "Description", "Quantity", "InvoiceDate", "Price", "Customer ID",
                    "Country"]


def test_the_same_seed_writes_the_same_bytes_and_another_seed_other_lines(tmp_path: Path) -> None:
    from churnops.transactions.generate import generate_to_file

    profile = RetailerProfile(customers=300)
    a = generate_to_file(tmp_path / "a.csv", TransactionColumns(), profile=profile, seed=3)
    b = generate_to_file(tmp_path / "b.csv", TransactionColumns(), profile=profile, seed=3)
    c = generate_to_file(tmp_path / "c.csv", TransactionColumns(), profile=profile, seed=4)

    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert (tmp_path / "a.csv").read_bytes() != (tmp_path / "c.csv").read_bytes()
    assert a["rows"] == b["rows"] > 10_000 and c["rows"] > 10_000


def test_lines_look_like_online_retail(raw_frame: pd.DataFrame) -> None:
    frame = raw_frame
    assert list(frame.columns) == ONLINE_RETAIL_II
    quantity = frame["Quantity"].astype(int)
    cancelled = frame["Invoice"].str.startswith("C")
    # cancellations are marked with a C and return goods (negative quantities)
    assert 0.005 < cancelled.mean() < 0.05
    assert (quantity[cancelled] < 0).all()
    # guest purchases carry no customer id
    assert 0.03 < frame["Customer ID"].isna().mean() < 0.3
    # invoice numbers follow time, as a till's do
    sales = frame[~cancelled & frame["Invoice"].str.isdigit()]
    first_seen = sales.groupby("Invoice")["InvoiceDate"].min().sort_index()
    assert first_seen.is_monotonic_increasing
    when = pd.to_datetime(frame["InvoiceDate"])
    assert (when.dt.dayofweek != 5).all()  # no sales on Saturdays
    assert when.dt.hour.between(7, 20).all()
    per_day = when.groupby(when.dt.month).apply(lambda s: s.dt.date.nunique())
    lines_per_day = when.dt.month.value_counts() / per_day
    assert lines_per_day[11] > 1.3 * lines_per_day[2]  # the November peak


def test_customers_differ_and_some_stop_buying(raw_frame: pd.DataFrame) -> None:
    sales = raw_frame[~raw_frame["Invoice"].str.startswith("C") & raw_frame["Customer ID"].notna()]
    invoices = sales.groupby("Customer ID")["Invoice"].nunique()
    basket = sales.groupby("Invoice").size()
    assert invoices.quantile(0.9) >= 4 * invoices.median()  # frequent and rare buyers
    assert basket.quantile(0.9) >= 3 * basket.quantile(0.1)  # big and small baskets
    last = pd.to_datetime(sales.groupby("Customer ID")["InvoiceDate"].max())
    gone = (last < pd.Timestamp("2011-12-09") - pd.Timedelta(days=180)).mean()
    assert 0.1 < gone < 0.6


def test_dirty_rows_are_there_to_be_found(raw_frame: pd.DataFrame) -> None:
    price = raw_frame["Price"].astype(float)
    quantity = raw_frame["Quantity"].astype(int)
    sale = ~raw_frame["Invoice"].str.startswith("C")
    assert (price < 0).sum() >= 1  # "Adjust bad debt"
    assert ((quantity <= 0) & sale).sum() >= 1  # stock adjustments
    assert raw_frame.duplicated().sum() >= 1


def test_drift_moves_what_it_names() -> None:
    base = generate_transactions(RetailerProfile(customers=1500), seed=5)
    slow = generate_transactions(RetailerProfile(customers=1500), seed=5,
                                 drift=TransactionDrift(purchase_rate=0.5))
    dear = generate_transactions(RetailerProfile(customers=1500), seed=5,
                                 drift=TransactionDrift(unit_price=2.0))
    assert slow.rows < 0.7 * base.rows
    sold = base.price > 0
    assert np.median(dear.price[dear.price > 0]) == pytest.approx(2 * np.median(base.price[sold]), rel=0.05)


def test_drift_options_name_what_is_wrong() -> None:
    assert TransactionDrift.parse(["purchase_rate=0.7", "churn_share=0.5"]) == TransactionDrift(
        purchase_rate=0.7, churn_share=0.5)
    with pytest.raises(ValueError, match="NAME one of"):
        TransactionDrift.parse(["speed=2"])
    with pytest.raises(ValueError, match="'fast' is not a number"):
        TransactionDrift.parse(["purchase_rate=fast"])
    with pytest.raises(ValueError, match=r"in \(0, 1\)"):
        TransactionDrift.parse(["churn_share=1.5"])


def test_cli_writes_parquet_in_the_configured_layout(tmp_path: Path) -> None:
    home = Path(__file__).resolve().parents[3]
    out = tmp_path / "lines.parquet"
    done = subprocess.run(
        [str(CHURNOPS), "--home", str(home), "data", "generate", "--kind", "transactions",
         "--customers", "200", "--seed", "1", "--out", str(out), "--drift", "basket_size=2"],
        capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "lines of" in done.stdout
    table = pq.read_table(out)
    assert table.column_names == ONLINE_RETAIL_II
    assert table.num_rows > 5_000
    bad = subprocess.run(
        [str(CHURNOPS), "--home", str(home), "data", "generate", "--kind", "transactions", "--out", str(out),
         "--shift", "Customer_Age=1"], capture_output=True, text=True, timeout=120, check=False)
    assert bad.returncode == 2 and "--drift NAME=VALUE" in bad.stderr
    assert pq.read_table(out).num_rows == table.num_rows  # a refused call leaves the file alone
