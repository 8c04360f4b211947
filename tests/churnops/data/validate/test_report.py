"""The validation report: JSON for machines, aligned text for people, both written atomically."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from churnops.data.ingest import read_table
from churnops.data.validate import REPORT_JSON, REPORT_TEXT, ValidationReport, validate_table, write_report


def spoil(rows, header) -> None:
    header.append("Branch")
    rows[3]["Customer_Age"] = "forty"
    rows[5]["Gender"] = "X"
    rows[7]["Credit_Limit"] = "-1"


@pytest.fixture
def bad_report(table, schema, rules) -> ValidationReport:
    path = table(spoil)
    return validate_table(read_table(path, schema), schema, rules, source=str(path))


@pytest.fixture
def good_report(table, schema, rules) -> ValidationReport:
    path = table(name="good.csv")
    return validate_table(read_table(path, schema), schema, rules, source=str(path))


def test_json_report_carries_source_counts_issues_and_stats(bad_report: ValidationReport, schema) -> None:
    doc = json.loads(json.dumps(bad_report.to_dict()))  # plain JSON, no numpy types

    assert doc["source"].endswith("customers.csv")
    assert doc["ok"] is False
    assert doc["rows"] == 300
    assert doc["columns"] == schema.required_columns
    assert doc["extra_columns"] == ["Branch"]
    assert doc["dropped_columns"] == schema.drop_columns
    assert doc["counts"] == {"error": 3, "warning": 1}
    assert doc["rules"]["max_examples"] == 5
    by_rule = {i["rule"]: i for i in doc["issues"]}
    assert by_rule["not_numeric"] == {
        "column": "Customer_Age", "rule": "not_numeric", "severity": "error", "rows": 1,
        "message": by_rule["not_numeric"]["message"], "examples": [{"line": 5, "value": "forty"}]}
    assert by_rule["out_of_range"]["examples"] == [{"line": 9, "value": "-1"}]
    assert set(doc["stats"]) == set(schema.required_columns)
    assert doc["stats"]["Customer_Age"]["invalid"] == 1
    assert doc["stats"]["Gender"]["counts"] == {"F": 150, "M": 149, "X": 1}
    assert doc["stats"][schema.target.column]["positive_rate"] == 0.25


def test_text_report_has_a_header_and_one_aligned_line_per_issue(bad_report: ValidationReport) -> None:
    lines = bad_report.to_text().splitlines()

    assert lines[0].startswith("data validation: ") and lines[0].endswith("customers.csv")
    assert "rows: 300" in lines[1]
    assert lines[2] == "verdict: FAILED (3 errors, 1 warning)"
    table = lines[4:]
    assert table[0].split() == ["severity", "column", "rule", "rows", "detail"]
    assert len(table) == 1 + len(bad_report.issues)
    rule_at = table[0].index("rule")
    for line, issue in zip(table[1:], bad_report.issues, strict=True):
        assert line[rule_at:].startswith(issue.rule)
    assert any("line 5: 'forty'" in line for line in table)


def test_text_report_of_a_good_table_says_passed(good_report: ValidationReport) -> None:
    text = good_report.to_text()
    assert "verdict: PASSED (0 errors, 0 warnings)" in text
    assert "severity" not in text


def test_write_report_writes_both_files(bad_report: ValidationReport, tmp_path: Path) -> None:
    json_path, text_path = write_report(bad_report, tmp_path / "reports")

    assert json_path == tmp_path / "reports" / REPORT_JSON
    assert text_path == tmp_path / "reports" / REPORT_TEXT
    assert json.loads(json_path.read_text()) == json.loads(json.dumps(bad_report.to_dict()))
    assert text_path.read_text() == bad_report.to_text()
    assert sorted(p.name for p in json_path.parent.iterdir()) == [REPORT_JSON, REPORT_TEXT]  # no temp files


def test_a_failed_write_leaves_the_previous_report_untouched(good_report: ValidationReport,
                                                             bad_report: ValidationReport,
                                                             tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    json_path, text_path = write_report(good_report, tmp_path / "reports")
    before = json_path.read_bytes(), text_path.read_bytes()

    def broken(self: ValidationReport) -> str:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(ValidationReport, "to_text", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_report(bad_report, tmp_path / "reports")

    assert (json_path.read_bytes(), text_path.read_bytes()) == before
    assert sorted(p.name for p in json_path.parent.iterdir()) == [REPORT_JSON, REPORT_TEXT]

