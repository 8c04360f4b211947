"""Customer features as of a cut-off, in SQL: right by their definitions, the same on DuckDB and PostgreSQL,
blind to everything on or after the cut-off, and never fed by the label."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import pandas as pd
import pytest

from churnops.settings import TransactionSettings
from churnops.transactions.cutoffs import CutoffPlan, day_number
from churnops.transactions.features import (
    FEATURES,
    SQL_INPUT,
    build_customer_table,
    features_duckdb,
    features_postgresql,
    read_clean,
)
from churnops.transactions.validate import check_transactions, connect, write_clean
from tests.churnops.transactions.conftest import NOW
from tests.churnops.transactions.pandas_reference import pandas_features


@pytest.fixture(scope="module")
def clean_path(raw_csv: Path, cfg: TransactionSettings, tmp_path_factory: pytest.TempPathFactory) -> Path:
    con = connect()
    assert check_transactions(con, raw_csv, cfg, now=NOW).ok
    return write_clean(con, tmp_path_factory.mktemp("clean") / "clean.parquet")


@pytest.fixture(scope="module")
def lines(clean_path: Path) -> pd.DataFrame:
    return pd.read_parquet(clean_path)


def duckdb_with(lines: pd.DataFrame):
    con = connect()
    con.register("lines_frame", lines)
    con.execute("CREATE TABLE tx AS SELECT * FROM lines_frame")
    con.unregister("lines_frame")
    return con


def plan_of(*cutoffs: date) -> CutoffPlan:
    return CutoffPlan(tuple(cutoffs[:-1]), cutoffs[-1], date(2009, 12, 1), date(2011, 12, 9))


def assert_same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True), check_exact=False,
                                  rtol=1e-9, atol=1e-9, check_dtype=False)


def test_sql_features_equal_their_pandas_definitions(clean_path: Path, lines: pd.DataFrame,
                                                     cfg: TransactionSettings) -> None:
    con = connect()
    read_clean(con, clean_path)
    table, plan = build_customer_table(con, cfg)

    expected = pandas_features(lines, plan.all, cfg)
    assert len(table) > 1000 and set(table["cutoff"]) == set(plan.all)
    assert_same(table, expected)
    assert 0.15 < table["churned"].mean() < 0.7


def test_duckdb_and_postgresql_compute_the_same_table_from_the_same_sql(
        clean_path: Path, lines: pd.DataFrame, cfg: TransactionSettings, postgres_url: str) -> None:
    con = connect()
    read_clean(con, clean_path)
    on_duckdb, plan = build_customer_table(con, cfg)
    on_postgresql = features_postgresql(postgres_url, lines[list(SQL_INPUT)], plan, cfg)

    assert len(on_postgresql) == len(on_duckdb) > 1000
    assert_same(on_duckdb, on_postgresql)
    # the temporary tables went with the transaction
    from churnops import database

    assert not database.has_table(database.create_engine(postgres_url), "tx")


def test_no_feature_reads_a_line_on_or_after_its_cutoff(lines: pd.DataFrame,
                                                        cfg: TransactionSettings) -> None:
    """Features from the whole history equal features from the history cut at the cut-off, line by line;
    then a flood of purchases and returns after the cut-off changes labels only."""
    cutoff = date(2011, 3, 1)
    at = day_number(cutoff)
    plan = plan_of(cutoff)
    full = features_duckdb(duckdb_with(lines), plan, cfg)
    cut = features_duckdb(duckdb_with(lines[lines["t"] < at]), plan, cfg)

    assert len(full) > 300
    assert_same(full[["customer_id", *FEATURES]], cut[["customer_id", *FEATURES]])

    later = lines[lines["t"] >= at].copy()
    flood = lines.drop_duplicates("customer_id").copy()
    flood["t"], flood["day_number"] = at + 0.0, at  # midnight of the cut-off day: the future already
    flood["quantity"], flood["price"] = 1_000.0, 99.0
    flood["invoice"] = "F" + flood["customer_id"]
    returns = flood.assign(invoice="CF" + flood["customer_id"], quantity=-500.0, is_return=True, t=at + 1.5,
                           day_number=at + 1)
    flooded = features_duckdb(duckdb_with(pd.concat([lines, flood, returns, later])), plan, cfg)
    assert_same(full[["customer_id", *FEATURES]], flooded[["customer_id", *FEATURES]])
    assert full["churned"].sum() > 0 and flooded["churned"].sum() == 0  # every customer bought on the day


def test_the_label_never_leaks_into_the_features(lines: pd.DataFrame, cfg: TransactionSettings) -> None:
    """Customers' labels flipped (a purchase added inside the horizon of each churned one, every purchase
    inside it removed for the others): every feature stays, every label turns."""
    cutoff = date(2011, 6, 1)
    at = day_number(cutoff)
    plan = plan_of(cutoff)
    before = features_duckdb(duckdb_with(lines), plan, cfg)
    churned = set(before.loc[before["churned"] == 1, "customer_id"])
    inside = (lines["t"] >= at) & (lines["t"] < at + cfg.horizon_days) & ~lines["is_return"]
    kept = lines[~(inside & ~lines["customer_id"].isin(churned))]
    buy = lines[lines["customer_id"].isin(churned)].drop_duplicates("customer_id").copy()
    buy["t"], buy["day_number"], buy["invoice"] = at + 30.25, at + 30, "L" + buy["customer_id"]
    after = features_duckdb(duckdb_with(pd.concat([kept, buy])), plan, cfg)

    assert_same(before[["customer_id", *FEATURES]], after[["customer_id", *FEATURES]])
    assert len(churned) > 20
    assert (before["churned"] + after["churned"] == 1).all()


def _line(customer: str, invoice: str, when: str, quantity: float, price: float, stock: str = "A") -> dict:
    moment = datetime.fromisoformat(when)
    t = (moment - datetime(1970, 1, 1)).total_seconds() / 86_400
    return {"invoice": invoice, "stock_code": stock, "description": "x", "quantity": quantity, "price": price,
            "invoice_date": moment, "customer_id": customer, "country": "United Kingdom",
            "is_return": invoice.startswith("C"), "t": t, "day_number": int(t // 1)}


def test_a_small_history_gives_the_features_and_labels_worked_out_by_hand(cfg: TransactionSettings) -> None:
    lines = pd.DataFrame([
        # a: two invoices before the cut-off (one recent), a partial return, a purchase inside the horizon
        _line("a", "1", "2011-01-10 10:00", 2, 5.0, "A"), _line("a", "1", "2011-01-10 10:00", 1, 10.0, "B"),
        _line("a", "2", "2011-05-20 12:00", 4, 5.0, "A"),
        _line("a", "C3", "2011-05-25 09:00", -1, 5.0, "A"),
        _line("a", "4", "2011-07-01 09:00", 1, 1.0, "A"),
        # b: bought once, then only on the cut-off day itself: that is the future (label 0, features blind)
        _line("b", "5", "2011-02-01 10:00", 10, 1.0, "C"), _line("b", "6", "2011-06-01 00:00", 1, 1.0, "C"),
        # c: bought before the cut-off but not within the horizon: churned
        _line("c", "7", "2011-05-31 23:59", 1, 3.0, "D"), _line("c", "8", "2011-09-15 10:00", 1, 3.0, "D"),
        # d: last bought more than population_days before the cut-off: not in the table
        _line("d", "9", "2010-01-04 10:00", 1, 3.0, "D"),
    ])
    table = features_duckdb(duckdb_with(lines), plan_of(date(2011, 6, 1)), cfg).set_index("customer_id")

    assert list(table.index) == ["a", "b", "c"]
    a, b, c = table.loc["a"], table.loc["b"], table.loc["c"]
    assert (a["frequency"], a["monetary"], a["distinct_products"], a["active_days"]) == (2, 40.0, 2, 2)
    assert a["avg_basket_value"] == 20.0 and a["avg_items_per_invoice"] == 3.5
    assert a["recency_days"] == pytest.approx(11.5) and a["tenure_days"] == pytest.approx(141 + 14 / 24)
    assert a["recent_invoices"] == 1 and a["return_rate"] == pytest.approx(5.0 / 40.0)
    # one of two invoices in the last 90 days of a 141.6-day history: rate 1/90 over 2/141.58
    assert a["invoice_trend"] == pytest.approx((1 / 90) / (2 / (141 + 14 / 24)))
    assert a["spend_trend"] == pytest.approx((20 / 90) / (40 / (141 + 14 / 24)))
    assert (a["churned"], b["churned"], c["churned"]) == (0, 0, 1)
    assert b["frequency"] == 1 and b["monetary"] == 10.0 and b["recent_invoices"] == 0
    assert b["invoice_trend"] == 0.0
    assert c["recency_days"] == pytest.approx(1 / 1440) and c["tenure_days"] == pytest.approx(1 / 1440)
    # a history shorter than the trend window: the rate is taken over the window, not the short history
    assert c["invoice_trend"] == pytest.approx(1.0)
