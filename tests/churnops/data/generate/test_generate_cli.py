"""`churnops data generate` and `churnops data calibrate` end to end through the CLI."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from churnops.cli import main


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_generate_writes_the_requested_table(make_home: Callable[..., Path], tmp_path: Path) -> None:
    home = make_home()
    out = tmp_path / "out" / "customers.csv"
    result = run("--home", str(home), "data", "generate", "--rows", "700", "--seed", "4", "--out", str(out),
                 "--shift", "Total_Trans_Ct=-1", "--mix", "Card_Category=Gold:0.25", "--churn-rate", "0.3")
    assert result.exit_code == 0, result.output
    assert f"wrote 700 rows to {out}" in result.output
    frame = pd.read_csv(out)
    assert len(frame) == 700
    assert frame["CLIENTNUM"].is_unique
    assert 0.2 < (frame["Attrition_Flag"] == "Attrited Customer").mean() < 0.4
    assert 0.18 < (frame["Card_Category"] == "Gold").mean() < 0.32


def test_generate_refuses_a_bad_drift_option_naming_it(make_home: Callable[..., Path],
                                                       tmp_path: Path) -> None:
    out = tmp_path / "customers.csv"
    result = run("--home", str(make_home()), "data", "generate", "--rows", "10", "--out", str(out),
                 "--mix", "Card_Category=Diamond:0.5")
    assert result.exit_code == 1
    assert "unknown category 'Diamond'" in result.output
    assert not out.exists()


@pytest.mark.slow
def test_calibrate_then_generate_with_that_calibration(make_home: Callable[..., Path],
                                                       tmp_path: Path) -> None:
    home = make_home()
    source = tmp_path / "source.csv"
    result = run("--home", str(home), "data", "generate", "--rows", "3000", "--seed", "1",
                 "--churn-rate", "0.3", "--out", str(source))
    assert result.exit_code == 0, result.output
    calibration = tmp_path / "cal" / "calibration.json"
    result = run("--home", str(home), "data", "calibrate", "--source", str(source), "--out", str(calibration))
    assert result.exit_code == 0, result.output
    assert calibration.is_file()
    out = tmp_path / "again.csv"
    result = run("--home", str(home), "data", "generate", "--rows", "4000", "--seed", "2",
                 "--calibration", str(calibration), "--out", str(out))
    assert result.exit_code == 0, result.output
    # the new calibration learned the source's churn rate (0.3), not BankChurners' (0.16)
    assert (pd.read_csv(out)["Attrition_Flag"] == "Attrited Customer").mean() > 0.26


def test_calibrate_reports_a_missing_source(make_home: Callable[..., Path], tmp_path: Path) -> None:
    result = run("--home", str(make_home()), "data", "calibrate", "--source", str(tmp_path / "nope.csv"),
                 "--out", str(tmp_path / "c.json"))
    assert result.exit_code == 1
    assert "calibration source not found" in result.output
