"""Validation of raw transactions: every rule counted with examples, handled as configured."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from churnops.settings import TransactionSettings
from churnops.transactions.validate import (
    REPORT_JSON,
    TransactionInputError,
    check_transactions,
    connect,
    validate_transactions,
)
from tests.churnops.transactions.conftest import NOW

CHURNOPS = Path(sys.executable).parent / "churnops"


def _with(cfg: TransactionSettings, **rules: object) -> TransactionSettings:
    return cfg.model_copy(update={"rules": cfg.rules.model_copy(update=rules)})


def test_generated_lines_pass_and_each_rule_counts_what_pandas_counts(
        raw_csv: Path, raw_frame: pd.DataFrame, cfg: TransactionSettings) -> None:
    con = connect()
    report = check_transactions(con, raw_csv, cfg, now=NOW)

    assert report.ok, report.to_text()
    frame = raw_frame
    cancelled = frame["Invoice"].str.startswith("C")
    quantity, price = frame["Quantity"].astype(int), frame["Price"].astype(float)
    expected = {
        "cancellation": int(cancelled.sum()),
        "missing_customer_id": int(frame["Customer ID"].isna().sum()),
        "duplicate_line": int(frame.duplicated().sum()),
        "negative_price": int((price < 0).sum()),
        "quantity_sign": int(((quantity <= 0) & ~cancelled).sum() + ((quantity > 0) & cancelled).sum()),
    }
    found = {rule: report.find(rule)[0].rows for rule in expected}
    assert found == expected
    assert {i.severity for i in report.issues} == {"warning"}
    # kept: every line but the dropped ones; cancellations stay as returns
    dropped = (frame["Customer ID"].isna() | frame.duplicated() | (price < 0)
               | ((quantity <= 0) & ~cancelled))
    assert report.kept == int((~dropped).sum())
    clean = con.execute("SELECT count(*), count(*) FILTER (WHERE is_return), "
                        "count(*) FILTER (WHERE customer_id IS NULL) FROM tx").fetchall()[0]
    assert clean[0] == report.kept and clean[1] > 0 and clean[2] == 0


def test_csv_and_parquet_give_the_same_clean_lines(write_raw, cfg: TransactionSettings,
                                                   tmp_path: Path) -> None:
    csv, parquet = write_raw(name="lines.csv"), write_raw(name="lines.parquet")
    a = validate_transactions(csv, cfg, report_dir=tmp_path / "a", clean_out=tmp_path / "a.parquet",
                              now=NOW)
    b = validate_transactions(parquet, cfg, report_dir=tmp_path / "b", clean_out=tmp_path / "b.parquet",
                              now=NOW)
    assert a.ok and b.ok
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "a.parquet"),
                                  pd.read_parquet(tmp_path / "b.parquet"))
    # examples name CSV lines (header = line 1) and Parquet rows
    assert "line " in a.find("cancellation")[0].detail and "row " in b.find("cancellation")[0].detail


def test_wrong_columns_fail_naming_the_role_and_what_the_file_has(write_raw,
                                                                  cfg: TransactionSettings) -> None:
    path = write_raw(lambda f: f.rename(columns={"Customer ID": "customer id", "Price": "UnitPrice"}))
    report = check_transactions(connect(), path, cfg, now=NOW)

    assert not report.ok
    missing = {i.column: i.message for i in report.find("missing_column")}
    assert set(missing) == {"Customer ID", "Price"}
    assert "found 'customer id'" in missing["Customer ID"]
    assert "UnitPrice" in missing["Price"] and "transactions.columns" in missing["Price"]


def test_unparseable_dates_stop_the_run_or_are_dropped_as_configured(
        write_raw, cfg: TransactionSettings) -> None:
    def spoil(frame: pd.DataFrame) -> pd.DataFrame:
        frame.loc[3, "InvoiceDate"] = "31/02/2011 25:00"
        frame.loc[10, "InvoiceDate"] = None
        return frame

    path = write_raw(spoil)
    refused = check_transactions(connect(), path, cfg, now=NOW)
    issue = refused.find("unparseable_date")[0]
    assert not refused.ok and issue.severity == "error" and issue.rows == 2
    assert "line 5: '31/02/2011 25:00'" in issue.detail and "line 12: (empty)" in issue.detail

    dropped = check_transactions(connect(), path, _with(cfg, unparseable_date="drop"), now=NOW)
    assert dropped.ok and dropped.find("unparseable_date")[0].severity == "warning"


def test_dates_in_the_future_always_stop_the_run(write_raw, cfg: TransactionSettings) -> None:
    def future(frame: pd.DataFrame) -> pd.DataFrame:
        frame.loc[7, "InvoiceDate"] = "2030-05-01 10:00:00"
        return frame

    report = check_transactions(connect(), write_raw(future), _with(cfg, unparseable_date="drop"), now=NOW)
    issue = report.find("future_date")[0]
    assert not report.ok and issue.severity == "error" and issue.rows == 1
    assert "line 9: '2030-05-01 10:00:00'" in issue.detail


def test_negative_prices_and_missing_ids_can_stop_the_run(raw_csv: Path, cfg: TransactionSettings) -> None:
    strict = _with(cfg, negative_price="error", missing_customer_id="error")
    report = check_transactions(connect(), raw_csv, strict, now=NOW)
    assert not report.ok
    assert {i.rule for i in report.errors} == {"negative_price", "missing_customer_id"}
    assert "transactions.rules.negative_price" in report.find("negative_price")[0].message


def test_cancellations_can_be_dropped_and_then_no_line_is_a_return(raw_csv: Path,
                                                                   cfg: TransactionSettings) -> None:
    con = connect()
    report = check_transactions(con, raw_csv, _with(cfg, cancellation="drop"), now=NOW)
    assert report.ok
    assert con.execute("SELECT count(*) FROM tx WHERE is_return").fetchall()[0][0] == 0


def test_too_many_dropped_lines_are_an_error(write_raw, cfg: TransactionSettings) -> None:
    def guests(frame: pd.DataFrame) -> pd.DataFrame:
        frame.loc[: len(frame) * 0.6, "Customer ID"] = None
        return frame

    report = check_transactions(connect(), write_raw(guests), cfg, now=NOW)
    assert not report.ok and report.find("dropped_rows")[0].severity == "error"


def test_a_date_format_reads_other_exports(write_raw, cfg: TransactionSettings) -> None:
    def us_dates(frame: pd.DataFrame) -> pd.DataFrame:
        frame["InvoiceDate"] = pd.to_datetime(frame["InvoiceDate"]).dt.strftime("%m/%d/%Y %H:%M")
        return frame

    path = write_raw(us_dates)
    assert not check_transactions(connect(), path, cfg, now=NOW).ok
    report = check_transactions(connect(), path, cfg.model_copy(update={"date_format": "%m/%d/%Y %H:%M"}),
                                now=NOW)
    assert report.ok, report.to_text()


def test_a_ragged_file_cannot_be_read(tmp_path: Path, cfg: TransactionSettings) -> None:
    path = tmp_path / "ragged.csv"
    path.write_text("Invoice,StockCode,Description,Quantity,InvoiceDate,Price,Customer ID,Country\n"
                    "489434,85048,LIGHT,12,2009-12-01 07:45:00,6.95,13085,United Kingdom\n"
                    "489434,79323P,PINK,12,2009-12-01 07:45:00\n")
    with pytest.raises(TransactionInputError, match="ragged.csv: cannot be read"):
        check_transactions(connect(), path, cfg, now=NOW)
    with pytest.raises(TransactionInputError, match="file not found"):
        check_transactions(connect(), tmp_path / "absent.csv", cfg, now=NOW)


def test_cli_reports_and_exits_1_on_errors(write_raw, tmp_path: Path) -> None:
    home = Path(__file__).resolve().parents[3]

    def run(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(CHURNOPS), "--home", str(home), "data", "validate", "--kind", "transactions", str(path),
             "--report-dir", str(tmp_path / "reports"), "--clean-out", str(tmp_path / "clean.parquet")],
            capture_output=True, text=True, timeout=120, check=False)

    good = run(write_raw())
    assert good.returncode == 0, good.stdout + good.stderr
    assert "verdict: PASSED" in good.stdout and (tmp_path / "clean.parquet").is_file()
    before = (tmp_path / "clean.parquet").read_bytes()

    bad = run(write_raw(lambda f: f.drop(columns=["Quantity"]), name="bad.csv"))
    assert bad.returncode == 1
    line = next(ln for ln in bad.stdout.splitlines() if "missing_column" in ln)
    assert line.split()[:3] == ["error", "Quantity", "missing_column"]
    assert json.loads((tmp_path / "reports" / REPORT_JSON).read_text())["ok"] is False
    assert (tmp_path / "clean.parquet").read_bytes() == before  # the previous clean lines stay


def test_customer_ids_exported_as_numbers_read_as_the_same_text(write_raw, cfg: TransactionSettings) -> None:
    """Online Retail's export writes ids as 12346.0 (a float column with blanks): as text, or as Parquet
    doubles, they read as '12346', as the CSV's own ids do."""
    as_text = write_raw(lambda f: f.assign(**{"Customer ID": f["Customer ID"] + ".0"}), name="text.csv")
    as_float = write_raw(lambda f: f.assign(**{"Customer ID": f["Customer ID"].astype(float)}),
                         name="float.parquet")
    plain = write_raw(name="plain.csv")
    ids = []
    for path in (plain, as_text, as_float):
        con = connect()
        assert check_transactions(con, path, cfg, now=NOW).ok
        ids.append(sorted(r[0] for r in con.execute("SELECT DISTINCT customer_id FROM tx").fetchall()))
    assert ids[0] == ids[1] == ids[2] and ids[0][0].isdigit()
