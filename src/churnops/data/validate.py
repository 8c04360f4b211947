"""Check a string table against the schema (params.yaml `schema`) and the rules (params.yaml `validate`).

    frame = read_table(path, settings.schema)
    report = validate_table(frame, settings.schema, settings.params.validate_, source=str(path))
    write_report(report, settings.reports_dir)      # validation.json (machines), validation.txt (people)
    if report.ok:
        silver = report.clean                        # typed frame: id, features, target

Every check is vectorised over whole columns (≈ 4 s for 1,000,000 rows here; benchmarks/RESULTS.md).

Rules (the `rule` of each :class:`Issue`; severity in brackets):

===================  =========================================================================================
missing_column       a schema column is not in the table [error]
extra_column         the table has a column the schema does not know; it is ignored [warning]
blank_rows           rows with every field empty were skipped [warning]
not_numeric          a numeric column holds text: anything but a plain decimal number, `nan`/`inf` too [error]
not_integer          an integer column holds a fraction (``45.0`` is fine) [error]
out_of_range         a number outside the column's [min, max] [error]
unknown_category     a category outside the schema's list [error, or warning with unknown_category: warn]
missing_values       empty (or whitespace-only) fields. A feature column with a missing-value policy
                     (schema.missing: impute median / most_frequent / constant) has them filled by the
                     model's encoder: warning, error only above max_missing_fraction or when every row is
                     empty. Any other column refuses them: error (always for id and target) [error|warning]
duplicate_id         an id on more than one row (count = rows involved); with a ``time_column``, an id on more
                     than one row of the same date [error]
not_a_date           a ``time_column`` value that is not a date (YYYY-MM-DD) [error]
unknown_label        a target value that is neither the positive nor the negative label [error]
too_few_rows         fewer rows than min_rows [error]
single_class         every labelled row has the same label [error]
too_few_class_rows   a class with fewer rows than min_class_count [error]
rare_class           a class with fewer rows than rare_class_count or a smaller share than
                     rare_class_fraction: a hold-out holds too few of it to judge a model on [warning]
duplicate_rows       rows repeating the features of an earlier row under another id (and how many copies
                     disagree on the label): error above max_duplicate_fraction of the rows [error|warning]
===================  =========================================================================================

Examples name the row by its line in the file, counting the header as line 1.

Unlabelled tables (production batches, a drift window: the outcome is not known yet) are validated with
``validate_table(..., labelled=False)``: the target column is not required, the label rules
(``unknown_label``, ``single_class``, ``too_few_class_rows``, ``rare_class``, missing labels) and
``duplicate_rows`` (look-alike customers in a batch are no leak) are skipped, and a target
column that is present anyway is left out of the checks and of ``clean``; every other rule is the same.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from churnops.data.ingest import line_numbers
from churnops.io import write_json_atomic, write_text_atomic
from churnops.logs import get_logger
from churnops.settings import SchemaSettings, ValidateSettings

log = get_logger(__name__)

Severity = Literal["error", "warning"]
REPORT_JSON = "validation.json"
REPORT_TEXT = "validation.txt"
# A plain decimal number: what the numeric columns must hold (RE2 syntax, ASCII digits only).
NUMBER_PATTERN = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
_TOP_CATEGORIES = 20


class DataValidationError(ValueError):
    """The table failed validation; the message lists the errors."""


@dataclass(frozen=True)
class Example:
    line: int  # line in the file, header = line 1
    value: str | None  # None: the field is empty

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.line, "value": self.value}

    def __str__(self) -> str:
        return f"line {self.line}: {'(empty)' if self.value is None else repr(self.value)}"


@dataclass(frozen=True)
class Issue:
    column: str | None  # None: about the whole table
    rule: str
    severity: Severity
    rows: int  # offending rows
    message: str
    examples: tuple[Example, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "rule": self.rule,
            "severity": self.severity,
            "rows": self.rows,
            "message": self.message,
            "examples": [e.to_dict() for e in self.examples],
        }

    @property
    def detail(self) -> str:
        if not self.examples:
            return self.message
        return f"{self.message}; e.g. " + ", ".join(str(e) for e in self.examples)


class Verdict:
    """What a report with ``issues`` concludes: ok when no issue is an error."""

    issues: list[Issue]

    @property
    def ok(self) -> bool:
        return not any(i.severity == "error" for i in self.issues)

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "warning"]


@dataclass
class ValidationReport(Verdict):
    source: str
    rows: int
    columns: list[str]  # schema columns found
    issues: list[Issue]
    stats: dict[str, dict[str, Any]]
    rules: ValidateSettings
    dropped_columns: list[str] = field(default_factory=list)
    extra_columns: list[str] = field(default_factory=list)
    seconds: float = 0.0
    labelled: bool = True  # False: validated without the target (label rules skipped)
    duplicates: dict[str, Any] = field(default_factory=dict)  # duplicate feature rows (labelled tables)
    _clean: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def clean(self) -> pd.DataFrame:
        """The typed table (id: str, numeric: int64/float64, categories and target: str), when `ok`.

        Integer columns are int64, or float64 when missing values were tolerated (max_missing_fraction).
        """
        if self._clean is None:
            first = "; ".join(f"{i.column or '(table)'}: {i.rule}" for i in self.errors[:5])
            raise DataValidationError(f"{self.source}: no clean table: validation found {len(self.errors)} "
                                      f"error(s) ({first}); see the validation report")
        return self._clean

    def find(self, rule: str, column: str | None = None) -> list[Issue]:
        """Issues of one rule (and column)."""
        return [i for i in self.issues if i.rule == rule and (column is None or i.column == column)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "ok": self.ok,
            "labelled": self.labelled,
            "rows": self.rows,
            "columns": list(self.columns),
            "dropped_columns": list(self.dropped_columns),
            "extra_columns": list(self.extra_columns),
            "counts": {"error": len(self.errors), "warning": len(self.warnings)},
            "rules": self.rules.model_dump(),
            "seconds": round(self.seconds, 3),
            "duplicates": self.duplicates,
            "issues": [i.to_dict() for i in self.issues],
            "stats": self.stats,
        }

    def to_text(self) -> str:
        verdict = "PASSED" if self.ok else "FAILED"
        unlabelled = "" if self.labelled else "   (unlabelled: no target, label rules skipped)"
        head = [
            f"data validation: {self.source}{unlabelled}",
            f"rows: {self.rows}   schema columns found: {len(self.columns)}   dropped (label leaks): "
            f"{len(self.dropped_columns)}   extra (ignored): {len(self.extra_columns)}",
            f"verdict: {verdict} ({_plural(len(self.errors), 'error')}, "
            f"{_plural(len(self.warnings), 'warning')})",
        ]
        if not self.issues:
            return "\n".join(head) + "\n"
        return "\n".join([*head, "", *issue_lines(self.issues)]) + "\n"


def issue_lines(issues: Sequence[Issue]) -> list[str]:
    """The issues as an aligned table for people: severity, column, rule, rows, detail (with examples)."""
    table = [("severity", "column", "rule", "rows", "detail")]
    table += [(i.severity, _column_label(i.column), i.rule, str(i.rows), i.detail) for i in issues]
    widths = [max(len(r[k]) for r in table) for k in range(4)]
    return [f"{sev:<{widths[0]}}  {col:<{widths[1]}}  {rule:<{widths[2]}}  {rows:>{widths[3]}}  {detail}"
            for sev, col, rule, rows, detail in table]


def write_report(report: ValidationReport, directory: Path | str) -> tuple[Path, Path]:
    """Write validation.json and validation.txt into `directory`, each atomically; return their paths."""
    directory = Path(directory)
    doc, text = report.to_dict(), report.to_text()  # render both before replacing either
    json_path = write_json_atomic(directory / REPORT_JSON, doc)
    text_path = write_text_atomic(directory / REPORT_TEXT, text)
    return json_path, text_path


# -- validation ----------------------------------------------------------------------------------------


def validate_table(frame: pd.DataFrame, schema: SchemaSettings, rules: ValidateSettings,
                   source: str | None = None, *, labelled: bool = True) -> ValidationReport:
    """Check `frame` (string columns, as :func:`churnops.data.ingest.read_table` returns it).

    ``labelled=False``: a table without outcomes; no target column required, no label rule (module doc).
    """
    started = time.perf_counter()
    check = _Checker(frame, schema, rules, labelled)
    check.columns()
    typed = check.values()
    check.table(typed)
    clean = None
    if not any(i.severity == "error" for i in check.issues):
        clean = _assemble(frame, {c: typed[c] for c in check.converted}, check.required)
    report = ValidationReport(
        source=source or str(frame.attrs.get("source", "(frame)")),
        rows=len(frame),
        columns=[c for c in check.required if c in frame.columns],
        issues=check.issues,
        stats=check.stats,
        rules=rules,
        dropped_columns=check.dropped,
        extra_columns=check.extra,
        seconds=time.perf_counter() - started,
        labelled=labelled,
        duplicates=check.duplicates,
        _clean=clean,
    )
    log.info("validate.done", source=report.source, rows=report.rows, ok=report.ok, labelled=labelled,
             errors=len(report.errors), warnings=len(report.warnings), seconds=round(report.seconds, 3))
    return report


def _assemble(frame: pd.DataFrame, converted: dict[str, pd.Series], columns: list[str]) -> pd.DataFrame:
    """The clean frame: converted columns, the others as they are; a copy that shares nothing with `frame`.

    Column by column: pd.DataFrame(dict) or concat would also consolidate a million-row object block
    (seconds); each assignment copies the column once.
    """
    clean = pd.DataFrame(index=frame.index)
    for column in columns:
        clean[column] = converted[column] if column in converted else frame[column]
    return clean


class _Checker:
    def __init__(self, frame: pd.DataFrame, schema: SchemaSettings, rules: ValidateSettings,
                 labelled: bool = True) -> None:
        self.frame, self.schema, self.rules = frame, schema, rules
        self.labelled = labelled
        # the columns checked and kept: all the schema's, or all but the target for an unlabelled table
        self.required = [c for c in schema.required_columns if labelled or c != schema.target.column]
        self.n = len(frame)
        self.issues: list[Issue] = []
        self.stats: dict[str, dict[str, Any]] = {}
        self.duplicates: dict[str, Any] = {}
        self.converted: set[str] = set()  # columns whose typed values differ from the frame's strings
        required, dropped = set(schema.required_columns), set(schema.drop_columns)
        self.dropped = [c for c in schema.drop_columns
                        if c in frame.attrs.get("dropped_columns", []) or c in frame.columns]
        extra = list(frame.attrs.get("extra_columns", []))
        extra += [c for c in frame.columns if c not in required and c not in dropped and c not in extra]
        self.extra = [str(c) for c in extra]

    # -- helpers -------------------------------------------------------------------------------------
    def add(self, column: str | None, rule: str, severity: Severity, mask: np.ndarray | None, message: str,
            values: pd.Series | None = None, rows: int | None = None) -> None:
        examples: tuple[Example, ...] = ()
        if mask is not None:
            positions = np.flatnonzero(mask)
            rows = int(positions.size) if rows is None else rows
            shown = positions[: self.rules.max_examples]
            lines = line_numbers(self.frame, shown)
            raw = values if values is not None else (self.frame[column] if column in self.frame else None)
            picked = raw.iloc[shown].tolist() if raw is not None else [None] * len(shown)
            examples = tuple(Example(int(ln), None if _missing(v) else str(v))
                             for ln, v in zip(lines, picked, strict=True))
        self.issues.append(Issue(column, rule, severity, int(rows or 0), message, examples))

    # -- columns -------------------------------------------------------------------------------------
    def columns(self) -> None:
        present = set(self.frame.columns)
        for column in self.required:
            if column not in present:
                hint = _near(column, [*self.extra, *present])
                self.add(column, "missing_column", "error", None,
                         f"required column is missing{hint}", rows=self.n)
        for column in self.extra:
            self.add(column, "extra_column", "warning", None,
                     "column is not in the schema: ignored (add it to params.yaml schema to use it)",
                     rows=self.n)
        blank = self.frame.attrs.get("blank_lines") or []
        if blank:
            shown = tuple(Example(int(ln), None) for ln in blank[: self.rules.max_examples])
            self.issues.append(Issue(None, "blank_rows", "warning", len(blank),
                                     "rows with every field empty were skipped", shown))

    # -- values --------------------------------------------------------------------------------------
    def values(self) -> dict[str, pd.Series]:
        typed: dict[str, pd.Series] = {}
        for column in self.required:
            if column not in self.frame.columns:
                continue
            series = self.frame[column]
            if column in self.schema.numeric:
                typed[column], missing = self._numeric(column, series)
            else:
                missing = series.isna().to_numpy()
                typed[column] = self._text(column, series, missing)
            if typed[column] is not series:
                self.converted.add(column)
            self._missing(column, missing)
        return typed

    def _numeric(self, column: str, series: pd.Series) -> tuple[pd.Series, np.ndarray]:
        spec = self.schema.numeric[column]
        values, missing, invalid = _parse_numbers(series)
        if invalid.any():
            self.add(column, "not_numeric", "error", invalid, "text in a numeric column (expected a plain "
                     "decimal number)", values=series)
        valid = ~missing & ~invalid
        fractional = valid & (np.mod(values, 1.0) != 0) if spec.integer else np.zeros(self.n, dtype=bool)
        if fractional.any():
            self.add(column, "not_integer", "error", fractional, "fraction in an integer column",
                     values=series)
        low = valid & (values < spec.min) if spec.min is not None else np.zeros(self.n, dtype=bool)
        high = valid & (values > spec.max) if spec.max is not None else np.zeros(self.n, dtype=bool)
        out = low | high
        if out.any():
            seen = values[out]
            self.add(column, "out_of_range", "error", out,
                     f"values outside [{_num(spec.min)}, {_num(spec.max)}] ({int(low.sum())} below, "
                     f"{int(high.sum())} above; seen {_num(seen.min())} to {_num(seen.max())})",
                     values=series)
        ok = values[valid]
        self.stats[column] = {
            "kind": "numeric", "missing": int(missing.sum()), "invalid": int(invalid.sum()),
            "min": _num(ok.min()) if ok.size else None,
            "max": _num(ok.max()) if ok.size else None,
            "mean": _num(ok.mean()) if ok.size else None,
            "std": _num(ok.std(ddof=1)) if ok.size > 1 else None,
        }
        typed = pd.Series(values, index=series.index, name=column)
        if spec.integer and not (missing.any() or invalid.any() or fractional.any()):
            typed = typed.astype(np.int64)
        return typed, missing

    def _text(self, column: str, series: pd.Series, missing: np.ndarray) -> pd.Series:
        schema = self.schema
        if series.dtype != object:
            series = series.astype(object).where(~missing, None)
            series = series.map(lambda v: v if v is None else str(v))
        if column == schema.id_column:
            return self._id(column, series, missing)
        if column == schema.time_column:
            return self._time(column, series, missing)
        counts = series.value_counts(dropna=True)
        if column in schema.categorical:
            allowed = schema.categorical[column]
            unknown = ~missing & ~series.isin(allowed).to_numpy()
            if unknown.any():
                severity: Severity = "error" if self.rules.unknown_category == "error" else "warning"
                seen = counts[~counts.index.isin(allowed)]
                self.add(column, "unknown_category", severity, unknown,
                         f"categories outside {allowed}: {_top(seen)}")
            self.stats[column] = {"kind": "categorical", "missing": int(missing.sum()),
                                  "distinct": len(counts), "counts": _counts(counts)}
        elif column == schema.target.column:
            labels = [schema.target.positive, schema.target.negative]
            unknown = ~missing & ~series.isin(labels).to_numpy()
            if unknown.any():
                seen = counts[~counts.index.isin(labels)]
                self.add(column, "unknown_label", "error", unknown,
                         f"labels other than {labels}: {_top(seen)}")
            positive = int(counts.get(schema.target.positive, 0))
            negative = int(counts.get(schema.target.negative, 0))
            self.stats[column] = {
                "kind": "target", "missing": int(missing.sum()), "counts": _counts(counts),
                "positive_rate": round(positive / (positive + negative), 6) if positive + negative else None,
            }
        return series

    def _id(self, column: str, series: pd.Series, missing: np.ndarray) -> pd.Series:
        time = self.schema.time_column
        keyed = pd.DataFrame({"id": series, "time": self.frame[time]}) if time in self.frame else series
        repeated = keyed.duplicated(keep="first").to_numpy() & ~missing
        if repeated.any():
            involved = keyed.duplicated(keep=False).to_numpy() & ~missing
            ids = int(series[involved].nunique())
            where = f" with the same {time}" if time in self.frame else ""
            self.add(column, "duplicate_id", "error", involved,
                     f"{ids} id(s) appear on more than one row{where} ({int(involved.sum())} rows involved)")
        distinct = int((~missing).sum() - repeated.sum())
        self.stats[column] = {"kind": "id", "missing": int(missing.sum()), "distinct": distinct}
        return series

    def _time(self, column: str, series: pd.Series, missing: np.ndarray) -> pd.Series:
        """A date per row (YYYY-MM-DD): kept as that text, checked here."""
        dates = pd.to_datetime(series, format="%Y-%m-%d", errors="coerce")
        invalid = ~missing & dates.isna().to_numpy()
        if invalid.any():
            self.add(column, "not_a_date", "error", invalid, "values that are not dates (YYYY-MM-DD)")
        ok = dates[~dates.isna()]
        self.stats[column] = {"kind": "time", "missing": int(missing.sum()), "distinct": int(ok.nunique()),
                              "min": None if ok.empty else ok.min().date().isoformat(),
                              "max": None if ok.empty else ok.max().date().isoformat()}
        return series

    def _missing(self, column: str, missing: np.ndarray) -> None:
        count = int(missing.sum())
        if not count:
            return
        fraction = count / self.n if self.n else 0.0
        limit = self.rules.max_missing_fraction
        policy = self.schema.missing.get(column)
        if policy is None:
            keyed = column in (*self.schema.key_columns, self.schema.target.column)
            impute = "median" if column in self.schema.numeric else "most_frequent"
            why = ("id, time and label are never optional" if keyed and self.schema.time_column else
                   "id and label are never optional" if keyed else
                   f"the column has no missing-value policy: declare one under schema.missing in params.yaml "
                   f"(e.g. {column}: {{impute: {impute}}}) or fill the blanks")
            self.add(column, "missing_values", "error", missing,
                     f"{fraction:.2%} of the rows are empty ({why})")
            return
        how = f"imputed by {policy.impute}" + (f" {policy.value!r}" if policy.value is not None else "") + (
            " with a missing-indicator feature" if policy.indicator else "")
        if count == self.n:
            self.add(column, "missing_values", "error", missing,
                     f"every row is empty: nothing to learn or impute ({how}) from")
        elif fraction > limit:
            self.add(column, "missing_values", "error", missing,
                     f"{fraction:.2%} of the rows are empty, above max_missing_fraction {limit} ({how})")
        else:
            self.add(column, "missing_values", "warning", missing,
                     f"{fraction:.2%} of the rows are empty: {how} (schema.missing)")

    # -- the table as a whole ------------------------------------------------------------------------
    def table(self, typed: dict[str, pd.Series]) -> None:
        rules, target = self.rules, self.schema.target
        if self.n < rules.min_rows:
            self.add(None, "too_few_rows", "error", None,
                     f"{self.n} rows, fewer than min_rows {rules.min_rows}", rows=self.n)
        labels = typed.get(target.column) if self.labelled else None
        if labels is None:
            return
        self._duplicates(typed, labels)
        counts = {label: int((labels == label).sum()) for label in (target.positive, target.negative)}
        present = [label for label, n in counts.items() if n]
        if len(present) == 1:
            only = present[0]
            other = target.negative if only == target.positive else target.positive
            self.add(target.column, "single_class", "error", None,
                     f"every labelled row is {only!r}: no {other!r} rows, so no model can tell them apart",
                     rows=counts[only])
            return
        labelled_rows = sum(counts.values())
        for label, n in counts.items():
            if n and n < rules.min_class_count:
                self.add(target.column, "too_few_class_rows", "error", None,
                         f"{n} rows labelled {label!r}, fewer than min_class_count {rules.min_class_count}",
                         rows=n)
            elif n and (n < rules.rare_class_count or n / labelled_rows < rules.rare_class_fraction):
                self.add(target.column, "rare_class", "warning", None,
                         f"only {n} of {labelled_rows} rows ({n / labelled_rows:.2%}) are labelled {label!r} "
                         f"(rare_class_count {rules.rare_class_count}, rare_class_fraction "
                         f"{rules.rare_class_fraction}): a hold-out gets a handful of them, too few to judge "
                         f"or compare models on", rows=n)

    def _duplicates(self, typed: dict[str, pd.Series], labels: pd.Series) -> None:
        columns = self.schema.feature_columns
        if self.n == 0 or any(c not in typed for c in columns):
            return
        keys = feature_row_keys(pd.DataFrame({c: typed[c] for c in columns}, copy=False), columns)
        copies = keys.duplicated(keep="first").to_numpy()
        n = int(copies.sum())
        grouped = pd.DataFrame({"key": keys.to_numpy(), "label": labels.to_numpy()}).groupby("key")["label"]
        conflicting = int(grouped.transform("nunique").gt(1).sum()) if n else 0
        fraction = n / self.n
        self.duplicates = {"rows": n, "fraction": round(fraction, 6), "conflicting_label_rows": conflicting,
                           "max_fraction": self.rules.max_duplicate_fraction}
        if not n:
            return
        too_many = fraction > self.rules.max_duplicate_fraction
        self.add(None, "duplicate_rows", "error" if too_many else "warning", copies,
                 f"{n} rows ({fraction:.2%}) repeat the features of an earlier row under another id "
                 f"({conflicting} rows are in groups that disagree on the label); "
                 + (f"more than max_duplicate_fraction {self.rules.max_duplicate_fraction}"
                    if too_many else "the featurize split keeps every copy on one side")
                 + f"; examples show the copies' {self.schema.id_column}",
                 values=self.frame[self.schema.id_column] if self.schema.id_column in self.frame else None)


def feature_row_keys(frame: pd.DataFrame, columns: list[str]) -> pd.Series:
    """One 64-bit key per row from the values of `columns`: equal feature rows get equal keys."""
    return pd.util.hash_pandas_object(frame[columns], index=False)


def _parse_numbers(series: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(float64 values, NaN where empty or invalid; mask of empty values; mask of non-numbers)."""
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
        missing = series.isna().to_numpy()
        return values, missing, ~missing & ~np.isfinite(values)
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        strings = pa.array(series, type=pa.string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed objects (a frame not made by read_table)
        strings = pa.array([None if _missing(v) else str(v) for v in series], type=pa.string())
    missing = strings.is_null().to_numpy(zero_copy_only=False)
    try:  # fast path: every value parses; non-finite ones (nan, inf) are caught below
        numbers = pc.cast(strings, pa.float64())
    except pa.ArrowInvalid:  # some text: keep exactly the plain decimal numbers, the rest become NaN
        is_number = pc.match_substring_regex(strings, NUMBER_PATTERN)
        numbers = pc.cast(pc.if_else(is_number, strings, pa.scalar(None, pa.string())), pa.float64())
    values = numbers.to_numpy(zero_copy_only=False).copy()  # arrow buffers are read-only
    # NaN where the text is not a number; 1e999 matches the pattern but parses to inf: not usable either
    invalid = ~missing & ~np.isfinite(values)
    values[invalid] = np.nan
    return values, missing, invalid


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _num(value: Any) -> float | int | None:
    if value is None:
        return None
    value = float(value)
    if not np.isfinite(value):
        return None
    return int(value) if value.is_integer() and abs(value) < 2**53 else round(value, 6)


def _counts(counts: pd.Series) -> dict[str, int]:
    return {str(k): int(v) for k, v in counts.head(_TOP_CATEGORIES).items()}


def _top(counts: pd.Series, k: int = 5) -> str:
    shown = ", ".join(f"{str(v)!r} ({int(n)})" for v, n in counts.head(k).items())
    return shown + (f" and {len(counts) - k} more" if len(counts) > k else "")


def _near(column: str, candidates: Sequence[object]) -> str:
    import difflib

    names = [str(c) for c in candidates]
    folded = {n.strip().lower(): n for n in names}
    if column.lower() in folded:
        return f" (found {folded[column.lower()]!r}: names are case- and space-sensitive)"
    close = difflib.get_close_matches(column, names, n=1, cutoff=0.85)
    return f" (found {close[0]!r}: a typo?)" if close else ""


def _column_label(column: str | None) -> str:
    if column is None:
        return "(table)"
    return column if column and column == column.strip() and " " not in column else repr(column)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"
