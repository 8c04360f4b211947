"""`churnops data validate`: exit 0 and a report on a good table, exit 1 with the reasons on a bad one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

CHURNOPS = Path(sys.executable).parent / "churnops"


def run_validate(settings, path: Path, report_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CHURNOPS), "--home", str(settings.home), "data", "validate", str(path),
         "--report-dir", str(report_dir)],
        capture_output=True, text=True, timeout=120, check=False,
    )


def test_good_table_exits_0_and_writes_the_report(settings, table, tmp_path: Path) -> None:
    result = run_validate(settings, table(), tmp_path / "reports")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "verdict: PASSED" in result.stdout
    doc = json.loads((tmp_path / "reports" / "validation.json").read_text())
    assert doc["ok"] is True and doc["rows"] == 300
    assert (tmp_path / "reports" / "validation.txt").read_text().startswith("data validation: ")


def test_bad_table_exits_1_naming_column_rule_count_and_example(settings, table, tmp_path: Path) -> None:
    def edit(rows, header):
        rows[3]["Customer_Age"] = "forty"
        rows[4]["Customer_Age"] = "fifty"

    result = run_validate(settings, table(edit), tmp_path / "reports")

    assert result.returncode == 1
    line = next(ln for ln in result.stdout.splitlines() if "not_numeric" in ln)
    assert line.split()[:4] == ["error", "Customer_Age", "not_numeric", "2"]
    assert "line 5: 'forty'" in line
    assert json.loads((tmp_path / "reports" / "validation.json").read_text())["ok"] is False


def test_unreadable_file_exits_1_with_the_reason_and_writes_no_report(settings, tmp_path: Path) -> None:
    result = run_validate(settings, tmp_path / "absent.csv", tmp_path / "reports")

    assert result.returncode == 1
    assert "absent.csv: file not found" in result.stderr
    assert not (tmp_path / "reports").exists()
