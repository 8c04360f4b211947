"""validate_table: each rule names column, rule, severity, row count and examples (file line, value)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from churnops.data.ingest import read_table
from churnops.data.validate import DataValidationError, ValidationReport, validate_table
from churnops.settings import SchemaSettings, ValidateSettings


def with_policies(schema: SchemaSettings, **policies: dict) -> SchemaSettings:
    """The schema with missing-value policies (params.yaml schema.missing) for some columns."""
    return SchemaSettings.model_validate({**schema.model_dump(), "missing": policies})


@pytest.fixture
def check(schema, rules) -> Callable[..., ValidationReport]:
    """read_table + validate_table on a path, with rule overrides (and optionally another schema)."""

    def _check(path: Path, *, schema: SchemaSettings = schema, **overrides) -> ValidationReport:
        effective = ValidateSettings(**{**rules.model_dump(), **overrides})
        return validate_table(read_table(path, schema), schema, effective, source=str(path))

    return _check


def only(report: ValidationReport, rule: str, column: str | None = None):
    found = report.find(rule, column)
    assert len(found) == 1, report.to_text()
    return found[0]


def examples(issue) -> list[tuple[int, str | None]]:
    return [(e.line, e.value) for e in issue.examples]


# -- good tables ---------------------------------------------------------------------------------------


def test_real_table_passes_and_yields_a_typed_frame_without_leaks(real_data: Path, schema, rules) -> None:
    report = validate_table(read_table(real_data, schema), schema, rules, source=str(real_data))

    assert report.ok, report.to_text()
    assert report.issues == []
    assert report.rows == 10127
    assert report.dropped_columns == schema.drop_columns
    clean = report.clean
    assert list(clean.columns) == schema.required_columns  # the leak columns never reach the features
    assert clean[schema.id_column].map(type).eq(str).all()
    for column, spec in schema.numeric.items():
        assert clean[column].dtype == (np.int64 if spec.integer else np.float64), column
    for column in schema.categorical:
        assert clean[column].map(type).eq(str).all(), column
    assert clean[schema.target.column].value_counts().to_dict() == {
        schema.target.negative: 8500, schema.target.positive: 1627}
    assert clean.loc[0, "Total_Amt_Chng_Q4_Q1"] == pytest.approx(1.335)
    assert report.stats["Customer_Age"]["min"] == 26 and report.stats["Customer_Age"]["max"] == 73


def test_valid_table_passes_with_no_issue(table, check, schema) -> None:
    report = check(table())

    assert report.ok and report.issues == []
    assert len(report.clean) == 300
    assert report.clean.loc[0, schema.id_column] == "700000000"


def test_validation_leaves_the_input_frame_as_it_was(table, schema, rules) -> None:
    frame = read_table(table(), schema)
    before = frame.copy(deep=True)

    report = validate_table(frame, schema, rules)
    report.clean.loc[0, "Customer_Age"] = 99
    report.clean.loc[0, "Gender"] = "changed"

    pd.testing.assert_frame_equal(frame, before)


def test_a_frame_not_made_by_read_table_is_validated_too(table, schema, rules) -> None:
    frame = pd.read_csv(table())  # inferred dtypes: int ids, float and int columns, leak columns kept

    report = validate_table(frame, schema, rules)

    assert report.ok, report.to_text()
    assert report.dropped_columns == schema.drop_columns
    assert report.find("extra_column") == []
    assert list(report.clean.columns) == schema.required_columns
    assert report.clean.loc[0, schema.id_column] == "700000000"
    assert report.clean["Customer_Age"].dtype == np.int64


# -- columns -------------------------------------------------------------------------------------------


def test_missing_column_is_an_error(table, check) -> None:
    def edit(rows, header):
        header.remove("Total_Trans_Ct")

    report = check(table(edit))

    assert not report.ok
    issue = only(report, "missing_column", "Total_Trans_Ct")
    assert issue.severity == "error" and issue.rows == 300
    with pytest.raises(DataValidationError, match="Total_Trans_Ct: missing_column"):
        _ = report.clean


def test_missing_column_suggests_a_near_name(table, check) -> None:
    def edit(rows, header):
        header[header.index("Customer_Age")] = "customer_age"
        for row in rows:
            row["customer_age"] = row.pop("Customer_Age")

    report = check(table(edit))

    assert "found 'customer_age'" in only(report, "missing_column", "Customer_Age").message
    assert only(report, "extra_column", "customer_age").severity == "warning"


def test_extra_column_is_a_warning_and_never_reaches_the_clean_frame(table, check) -> None:
    def edit(rows, header):
        header.append("Branch")
        for row in rows:
            row["Branch"] = "north"

    report = check(table(edit))

    assert report.ok
    issue = only(report, "extra_column", "Branch")
    assert issue.severity == "warning" and issue.rows == 300
    assert "Branch" not in report.clean.columns


# -- numbers -------------------------------------------------------------------------------------------


def test_text_in_a_numeric_column_is_an_error_with_lines_and_values(table, check) -> None:
    def edit(rows, header):
        rows[3]["Credit_Limit"] = "abc"
        rows[10]["Credit_Limit"] = "1,500"

    report = check(table(edit))

    issue = only(report, "not_numeric", "Credit_Limit")
    assert issue.severity == "error" and issue.rows == 2
    assert examples(issue) == [(5, "abc"), (12, "1,500")]
    assert not report.ok


@pytest.mark.parametrize(("value", "numeric"), [
    ("1e3", True), ("+5", True), (".5", True), ("5.", True), ("007", True),
    ("nan", False), ("NaN", False), ("inf", False), ("-Infinity", False), ("1e999", False), (" 12", False),
    ("0x10", False), ("1_000", False), ("12%", False), ("$12", False), ("١٢", False),
])
@pytest.mark.parametrize("alongside_text", [False, True])
def test_a_value_is_judged_the_same_whatever_else_the_column_holds(table, check, value: str, numeric: bool,
                                                                  alongside_text: bool) -> None:
    def edit(rows, header):
        rows[0]["Credit_Limit"] = value
        if alongside_text:
            rows[1]["Credit_Limit"] = "abc"

    report = check(table(edit))

    flagged = {e.line for i in report.find("not_numeric", "Credit_Limit") for e in i.examples}
    assert (2 not in flagged) is numeric, report.to_text()


def test_fraction_in_an_integer_column_is_an_error_but_a_whole_float_is_fine(table, check) -> None:
    def edit(rows, header):
        rows[0]["Customer_Age"] = "45.0"
        rows[6]["Customer_Age"] = "45.5"

    report = check(table(edit))

    issue = only(report, "not_integer", "Customer_Age")
    assert issue.rows == 1 and examples(issue) == [(8, "45.5")]


def test_whole_floats_in_an_integer_column_become_int64(table, check) -> None:
    report = check(table(lambda rows, header: rows[0].update(Customer_Age="45.0")))

    assert report.ok
    assert report.clean["Customer_Age"].dtype == np.int64
    assert report.clean.loc[0, "Customer_Age"] == 45


def test_out_of_range_values_are_errors_with_direction_and_examples(table, check) -> None:
    def edit(rows, header):
        rows[2]["Customer_Age"] = "150"
        rows[4]["Customer_Age"] = "-3"
        rows[5]["Avg_Utilization_Ratio"] = "1.2"

    report = check(table(edit))

    age = only(report, "out_of_range", "Customer_Age")
    assert age.severity == "error" and age.rows == 2
    assert "outside [18, 100]" in age.message and "1 below, 1 above" in age.message
    assert examples(age) == [(4, "150"), (6, "-3")]
    assert examples(only(report, "out_of_range", "Avg_Utilization_Ratio")) == [(7, "1.2")]


def test_examples_are_capped_by_max_examples_but_every_row_is_counted(table, check) -> None:
    def edit(rows, header):
        for row in rows[:20]:
            row["Credit_Limit"] = "n/a"

    issue = only(check(table(edit), max_examples=3), "not_numeric", "Credit_Limit")

    assert issue.rows == 20
    assert examples(issue) == [(2, "n/a"), (3, "n/a"), (4, "n/a")]


# -- categories and labels -----------------------------------------------------------------------------


def test_unknown_category_is_an_error_naming_the_values(table, check) -> None:
    def edit(rows, header):
        rows[0]["Gender"] = "X"
        rows[1]["Gender"] = "male"
        rows[7]["Gender"] = "X"

    report = check(table(edit))

    issue = only(report, "unknown_category", "Gender")
    assert issue.severity == "error" and issue.rows == 3
    assert "'X' (2)" in issue.message and "'male' (1)" in issue.message
    assert examples(issue) == [(2, "X"), (3, "male"), (9, "X")]
    assert not report.ok


def test_unknown_category_is_a_warning_when_the_rules_say_warn(table, check) -> None:
    path = table(lambda rows, header: rows[0].update(Card_Category="Diamond"))
    report = check(path, unknown_category="warn")

    assert only(report, "unknown_category", "Card_Category").severity == "warning"
    assert report.ok
    assert report.clean.loc[0, "Card_Category"] == "Diamond"


def test_unknown_label_is_an_error(table, check, schema) -> None:
    report = check(table(lambda rows, header: rows[12].update({schema.target.column: "Churned"})))

    issue = only(report, "unknown_label", schema.target.column)
    assert issue.rows == 1 and examples(issue) == [(14, "Churned")]


def test_a_single_class_is_an_error(table, check, schema) -> None:
    def edit(rows, header):
        for row in rows:
            row[schema.target.column] = schema.target.negative

    report = check(table(edit))

    issue = only(report, "single_class", schema.target.column)
    assert issue.severity == "error" and issue.rows == 300
    assert schema.target.positive in issue.message
    assert report.find("too_few_class_rows") == []


def test_a_class_below_min_class_count_is_an_error(table, check, schema) -> None:
    def edit(rows, header):
        for i, row in enumerate(rows):
            row[schema.target.column] = schema.target.positive if i < 10 else schema.target.negative

    issue = only(check(table(edit)), "too_few_class_rows", schema.target.column)

    assert issue.rows == 10 and "min_class_count 30" in issue.message


def test_too_few_rows_is_an_error(table, check) -> None:
    issue = only(check(table(n=150)), "too_few_rows")

    assert issue.column is None and issue.rows == 150 and "min_rows 200" in issue.message


# -- missing values and ids ----------------------------------------------------------------------------


def test_missing_values_are_an_error_above_the_allowed_fraction(table, check) -> None:
    def edit(rows, header):
        for i in (3, 30, 33):
            rows[i]["Marital_Status"] = ""

    report = check(table(edit))

    issue = only(report, "missing_values", "Marital_Status")
    assert issue.severity == "error" and issue.rows == 3
    assert examples(issue) == [(5, None), (32, None), (35, None)]
    assert "1.00%" in issue.message


def test_blanks_in_a_column_without_a_policy_are_an_error_that_says_how_to_declare_one(table, check) -> None:
    def edit(rows, header):
        rows[3]["Credit_Limit"] = " "  # a telecom-style blank: one space
        rows[7]["Credit_Limit"] = ""

    report = check(table(edit), max_missing_fraction=0.9)  # the fraction is no licence without a policy

    issue = only(report, "missing_values", "Credit_Limit")
    assert issue.severity == "error" and issue.rows == 2 and not report.find("not_numeric")
    assert "schema.missing" in issue.message and "Credit_Limit: {impute: median}" in issue.message


def test_an_imputed_column_above_the_allowed_fraction_or_entirely_empty_is_an_error(table, check,
                                                                                    schema) -> None:
    def edit(rows, header):
        for i, row in enumerate(rows):
            row["Credit_Limit"] = ""
            if i % 2:
                row["Gender"] = ""

    report = check(table(edit), schema=with_policies(schema, Credit_Limit={"impute": "median"},
                                                     Gender={"impute": "most_frequent"}),
                   max_missing_fraction=0.3)
    assert "every row is empty" in only(report, "missing_values", "Credit_Limit").message
    gender = only(report, "missing_values", "Gender")
    assert gender.severity == "error" and "above max_missing_fraction 0.3" in gender.message


def test_missing_values_of_columns_with_an_imputation_policy_are_a_warning(table, check, schema) -> None:
    def edit(rows, header):
        rows[3]["Marital_Status"] = ""
        rows[4]["Dependent_count"] = "  "  # whitespace only: missing too

    policies = with_policies(schema, Marital_Status={"impute": "most_frequent"},
                             Dependent_count={"impute": "median", "indicator": True})
    report = check(table(edit), schema=policies, max_missing_fraction=0.01)

    assert only(report, "missing_values", "Marital_Status").severity == "warning"
    assert report.ok
    clean = report.clean
    assert pd.isna(clean.loc[3, "Marital_Status"])
    assert clean["Dependent_count"].dtype == np.float64  # an integer column with a gap cannot be int64
    assert np.isnan(clean.loc[4, "Dependent_count"])


def test_missing_id_or_label_is_always_an_error(table, check, schema) -> None:
    def edit(rows, header):
        rows[0][schema.id_column] = ""
        rows[1][schema.target.column] = ""

    report = check(table(edit), max_missing_fraction=0.5)

    assert only(report, "missing_values", schema.id_column).severity == "error"
    assert only(report, "missing_values", schema.target.column).severity == "error"


def test_duplicate_ids_are_an_error_counting_every_row_involved(table, check, schema) -> None:
    def edit(rows, header):
        rows[9][schema.id_column] = rows[5][schema.id_column]
        rows[21][schema.id_column] = rows[20][schema.id_column]
        rows[22][schema.id_column] = rows[20][schema.id_column]

    report = check(table(edit))

    issue = only(report, "duplicate_id", schema.id_column)
    assert issue.severity == "error" and issue.rows == 5
    assert "2 id(s)" in issue.message
    assert [line for line, _ in examples(issue)] == [7, 11, 22, 23, 24]
    assert report.stats[schema.id_column]["distinct"] == 297


# -- unlabelled tables (labelled=False) ------------------------------------------------------------------


def test_an_unlabelled_table_needs_no_target_and_yields_no_target(table, schema, rules) -> None:
    path = table(lambda rows, header: header.remove(schema.target.column))

    report = validate_table(read_table(path, schema), schema, rules, source=str(path), labelled=False)

    assert report.ok and report.issues == [], report.to_text()
    assert report.columns == [schema.id_column, *schema.feature_columns]
    assert list(report.clean.columns) == [schema.id_column, *schema.feature_columns]
    assert report.clean["Customer_Age"].dtype == np.int64
    assert report.to_dict()["labelled"] is False and "unlabelled" in report.to_text()
    # the same table is not valid as a training table
    labelled = validate_table(read_table(path, schema), schema, rules, source=str(path))
    assert not labelled.ok and only(labelled, "missing_column", schema.target.column)
    assert labelled.to_dict()["labelled"] is True


def test_unlabelled_skips_every_label_rule_even_when_a_target_column_is_there(table, schema, rules) -> None:
    def edit(rows, header):
        for row in rows:
            row[schema.target.column] = schema.target.negative  # single_class
        rows[3][schema.target.column] = "Churned"  # unknown_label
        rows[4][schema.target.column] = ""  # a missing label

    path = table(edit)
    labelled = validate_table(read_table(path, schema), schema, rules, source=str(path))
    assert {i.rule for i in labelled.errors} == {"unknown_label", "missing_values", "single_class"}

    report = validate_table(read_table(path, schema), schema, rules, source=str(path), labelled=False)

    assert report.ok and report.issues == [], report.to_text()
    assert schema.target.column not in report.clean.columns
    assert schema.target.column not in report.stats
    assert report.find("extra_column") == []  # a schema column, just not checked


def test_unlabelled_applies_every_other_rule_exactly_as_labelled(table, schema, rules) -> None:
    def edit(rows, header):
        rows[2]["Customer_Age"] = "abc"  # not_numeric
        rows[3]["Credit_Limit"] = "-5"  # out_of_range
        rows[4]["Card_Category"] = "Diamond"  # unknown_category
        rows[5]["Marital_Status"] = ""  # missing_values
        rows[9][schema.id_column] = rows[8][schema.id_column]  # duplicate_id
        header.remove("Total_Trans_Ct")  # missing_column
        header.append("Branch")  # extra_column

    path = table(edit, n=150)  # too_few_rows
    rules = rules.model_copy(update={"rare_class_count": 30})  # 38 positives: not a rare class here
    labelled = validate_table(read_table(path, schema), schema, rules, source=str(path))
    unlabelled = validate_table(read_table(path, schema), schema, rules, source=str(path), labelled=False)

    assert {i.rule for i in labelled.issues} == {
        "not_numeric", "out_of_range", "unknown_category", "missing_values", "duplicate_id", "missing_column",
        "extra_column", "too_few_rows"}
    assert unlabelled.issues == labelled.issues
    assert unlabelled.stats == {
        k: v for k, v in labelled.stats.items() if k != schema.target.column}


def test_unlabelled_still_requires_the_id(table, schema, rules) -> None:
    path = table(lambda rows, header: header.remove(schema.id_column))

    report = validate_table(read_table(path, schema), schema, rules, labelled=False)

    assert only(report, "missing_column", schema.id_column).severity == "error"


# -- warnings never stop -------------------------------------------------------------------------------


def test_warnings_alone_keep_the_table_valid(table, check, schema) -> None:
    def edit(rows, header):
        header.append("Branch")
        rows[0]["Education_Level"] = "Apprenticeship"
        rows[1]["Income_Category"] = ""

    path = table(edit)
    path.write_text(path.read_text() + "\n")  # a blank line at the end

    policies = with_policies(schema, Income_Category={"impute": "constant", "value": "Unknown"})
    report = check(path, schema=policies, unknown_category="warn", max_missing_fraction=0.05)

    rules_seen = {i.rule for i in report.issues}
    assert rules_seen == {"extra_column", "unknown_category", "missing_values", "blank_rows"}
    assert all(i.severity == "warning" for i in report.issues)
    assert report.ok
    assert len(report.clean) == 300
    assert examples(only(report, "blank_rows")) == [(302, None)]


def test_a_header_name_with_a_stray_space_is_visible_in_the_text_report(table, check) -> None:
    def edit(rows, header):
        header[header.index("Gender")] = "Gender "
        for row in rows:
            row["Gender "] = row.pop("Gender")

    report = check(table(edit))

    assert "found 'Gender '" in only(report, "missing_column", "Gender").message
    assert any(line.startswith("warning   'Gender '") for line in report.to_text().splitlines())


# -- data that should be questioned ---------------------------------------------------------------------


def copy_rows_under_new_ids(rows: list[dict[str, str]], schema, share: float) -> list[int]:
    """Overwrite the last `share` of the rows with copies of the first ones (new ids, same features and
    label); return the file lines of the copies."""
    n = int(len(rows) * share)
    start = len(rows) - n
    for k in range(n):
        copy = dict(rows[k])
        copy[schema.id_column] = rows[start + k][schema.id_column]
        rows[start + k] = copy
    return [start + k + 2 for k in range(n)]


def test_copies_of_rows_under_new_ids_above_the_share_are_an_error(table, check, schema) -> None:
    lines: list[int] = []
    path = table(lambda rows, header: lines.extend(copy_rows_under_new_ids(rows, schema, 0.3)))

    report = check(path)

    issue = only(report, "duplicate_rows")
    assert issue.severity == "error" and not report.ok
    assert issue.rows == 90 and "30.00%" in issue.message and "max_duplicate_fraction 0.05" in issue.message
    assert [line for line, _ in examples(issue)] == lines[:5]
    assert report.duplicates == {"rows": 90, "fraction": 0.3, "conflicting_label_rows": 0,
                                 "max_fraction": 0.05}
    assert report.to_dict()["duplicates"]["rows"] == 90


def test_a_few_copies_are_counted_as_a_warning_with_those_that_disagree_on_the_label(
        table, check, schema) -> None:
    def edit(rows, header):
        copy_rows_under_new_ids(rows, schema, 0.03)  # 9 copies of rows 0..8
        rows[-1][schema.target.column] = (schema.target.negative if rows[-1][schema.target.column]
                                          == schema.target.positive else schema.target.positive)

    report = check(table(edit))

    issue = only(report, "duplicate_rows")
    assert issue.severity == "warning" and report.ok
    assert issue.rows == 9 and "2 rows are in groups that disagree on the label" in issue.message
    assert report.duplicates["rows"] == 9 and report.duplicates["conflicting_label_rows"] == 2


def test_a_table_without_copies_reports_zero_duplicates(table, check) -> None:
    report = check(table())
    assert report.duplicates == {"rows": 0, "fraction": 0.0, "conflicting_label_rows": 0,
                                 "max_fraction": 0.05}


def test_a_label_with_few_positives_is_flagged(table, check, schema) -> None:
    def edit(rows, header):  # 31 positives out of 1,600 rows: above min_class_count (30), a 1.9% share
        for i, row in enumerate(rows):
            row[schema.target.column] = schema.target.positive if i < 31 else schema.target.negative

    report = check(table(edit, n=1600))

    issue = only(report, "rare_class", schema.target.column)
    assert issue.severity == "warning" and report.ok
    assert issue.rows == 31 and "only 31 of 1600 rows (1.94%)" in issue.message
    assert "too few to judge" in issue.message
    # by count alone as well
    assert only(check(table(edit, n=1600), rare_class_fraction=0.0), "rare_class").rows == 31
    assert check(table(edit, n=1600), rare_class_fraction=0.0, rare_class_count=31).find("rare_class") == []
