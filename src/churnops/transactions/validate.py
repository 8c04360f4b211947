"""Read raw transactions (CSV or Parquet) with DuckDB, check them, and clean them into the silver table.

    con = connect()
    report = check_transactions(con, path, settings.params.transactions)   # table `tx` in con when ok
    write_report(report, settings.reports_dir)    # transactions_validation.json / .txt
    if report.ok:
        write_clean(con, settings.path(settings.params.transactions.validated))

:func:`validate_transactions` does all three, writing the clean file only when the report passes (a failed
check leaves the previous silver file as it was).

Rules (the ``rule`` of each :class:`~churnops.data.validate.Issue`); what happens to the rows a rule finds is
set per rule in ``transactions.rules`` (drop: a warning and the rows are left out; keep; error: the run
stops). Examples name the row by its line in a CSV file (header = line 1) or its row number in a Parquet file.

====================  =====================================================================================
missing_column        a role's column (``transactions.columns``) is not in the file [error; nothing is read]
missing_value         a line without invoice or stock code [error]
unparseable_date      an invoice date that is empty or does not parse (``transactions.date_format``)
future_date           an invoice date after now [error: the export or its clock is wrong]
unparseable_number    a quantity or price that is empty or not a number
negative_price        a price below 0 (Online Retail's "Adjust bad debt" lines)
quantity_sign         a sale with a quantity of 0 or less (stock adjustments), or a cancellation with more
duplicate_line        a line repeating an earlier line field for field, numbers and dates as parsed (the
                      first one is kept)
cancellation          a cancelled invoice (``C...``): its lines are returns (negative quantities); kept by
                      default, they count towards the return rate and never as purchases
missing_customer_id   a line without a customer id (a guest purchase): no customer to learn about
dropped_rows          more rows dropped than ``max_dropped_fraction`` [error]
too_few_rows          fewer clean rows than ``min_rows`` [error]
====================  =====================================================================================

The clean table ``tx`` (and the silver Parquet file) holds, per kept line: invoice, stock_code, description,
quantity, price, invoice_date (timestamp), customer_id, country, is_return (a cancellation's line) and the
time as ``t`` (days since 1970-01-01, fractional) and ``day_number`` (whole days): the feature SQL compares
numbers, which DuckDB and PostgreSQL do alike.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from churnops.data.validate import Example, Issue, Severity, Verdict, issue_lines
from churnops.io import atomic_path, write_json_atomic, write_text_atomic
from churnops.logs import get_logger
from churnops.settings import TransactionSettings

log = get_logger(__name__)

REPORT_JSON = "transactions_validation.json"
REPORT_TEXT = "transactions_validation.txt"
TEXT_ROLES = ("invoice", "stock_code", "description", "customer_id", "country")
CLEAN_COLUMNS = ("invoice", "stock_code", "description", "quantity", "price", "invoice_date", "customer_id",
                 "country", "is_return", "t", "day_number")
MS_PER_DAY = 86_400_000.0


class TransactionInputError(ValueError):
    """The file cannot be read as a transactions table; the message names the file and what is wrong."""


@dataclass(frozen=True)
class RowExample(Example):
    """An example in a Parquet file: rows numbered from 1."""

    def __str__(self) -> str:
        return f"row {self.line}: {'(empty)' if self.value is None else repr(self.value)}"


@dataclass
class TransactionReport(Verdict):
    source: str
    rows: int
    kept: int
    issues: list[Issue]
    stats: dict[str, Any]
    rules: dict[str, Any]
    seconds: float = 0.0
    columns: dict[str, str] = field(default_factory=dict)  # role -> header name

    def find(self, rule: str) -> list[Issue]:
        return [i for i in self.issues if i.rule == rule]

    def summary(self) -> str:
        """One line naming the errors (for exceptions and logs)."""
        return "; ".join(f"{i.column or '(table)'}: {i.rule}: {i.message}" for i in self.errors[:5])

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source, "ok": self.ok, "rows": self.rows, "kept": self.kept,
            "columns": self.columns,
            "counts": {"error": len(self.errors), "warning": len(self.warnings)},
            "rules": self.rules, "seconds": round(self.seconds, 3),
            "issues": [i.to_dict() for i in self.issues], "stats": self.stats,
        }

    def to_text(self) -> str:
        verdict = "PASSED" if self.ok else "FAILED"
        stats = self.stats
        head = [
            f"transactions validation: {self.source}",
            f"rows: {self.rows}   kept: {self.kept}   customers: {stats.get('customers', '-')}   "
            f"invoices: {stats.get('invoices', '-')}   history: {stats.get('first', '-')} to "
            f"{stats.get('last', '-')}",
            f"verdict: {verdict} ({len(self.errors)} error{'' if len(self.errors) == 1 else 's'}, "
            f"{len(self.warnings)} warning{'' if len(self.warnings) == 1 else 's'})",
        ]
        if not self.issues:
            return "\n".join(head) + "\n"
        return "\n".join([*head, "", *issue_lines(self.issues)]) + "\n"


def connect(threads: int | None = None):  # -> duckdb.DuckDBPyConnection
    """An in-memory DuckDB connection (all cores unless `threads`)."""
    import duckdb

    con = duckdb.connect(":memory:")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    return con


def write_report(report: TransactionReport, directory: Path | str) -> tuple[Path, Path]:
    """transactions_validation.json and .txt in `directory`, each written atomically."""
    directory = Path(directory)
    doc, text = report.to_dict(), report.to_text()
    return (write_json_atomic(directory / REPORT_JSON, doc), write_text_atomic(directory / REPORT_TEXT, text))


# -- reading -------------------------------------------------------------------------------------------
def _is_parquet(path: Path) -> bool:
    """By the extension, or by the content for a file without one (a DVC cache entry)."""
    if path.suffix.lower() in (".parquet", ".pq"):
        return True
    if path.suffix or not path.is_file():
        return False
    with path.open("rb") as fh:
        return fh.read(4) == b"PAR1"


def _scan(path: Path) -> str:
    quoted = str(path).replace("'", "''")
    if _is_parquet(path):
        return f"read_parquet('{quoted}')"
    # every field as text: what it holds is validation's business; a ragged row is an error (strict)
    return (f"read_csv('{quoted}', header = true, all_varchar = true, delim = ',', quote = '\"', "
            f"escape = '\"', strict_mode = true, null_padding = false)")


def _header(con, path: Path) -> dict[str, str]:
    """Column name -> DuckDB type of the file, or a TransactionInputError naming what is wrong."""
    import duckdb

    if not path.exists():
        raise TransactionInputError(f"{path}: file not found")
    if not path.is_file():
        raise TransactionInputError(f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise TransactionInputError(f"{path}: empty file (0 bytes)")
    try:
        rows = con.execute(f"DESCRIBE SELECT * FROM {_scan(path)}").fetchall()
    except duckdb.Error as exc:
        kind = "Parquet" if _is_parquet(path) else "comma-separated UTF-8 CSV with a header line"
        raise TransactionInputError(f"{path}: cannot be read as {kind}: {_first_line(exc)}") from exc
    return {str(r[0]): str(r[1]) for r in rows}


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _date_expr(column: str, kind: str, date_format: str | None) -> str:
    if kind.startswith(("TIMESTAMP", "DATE")):
        return f"CAST({column} AS TIMESTAMP)"
    text = f"NULLIF(CAST({column} AS VARCHAR), '')"
    if date_format:
        fmt = date_format.replace("'", "''")
        return f"TRY_STRPTIME({text}, '{fmt}')"
    return f"TRY_CAST({text} AS TIMESTAMP)"


# -- checking ------------------------------------------------------------------------------------------
# rule -> (flag over the checked table, role of the column it is about, roles its examples show, message)
_RULES: dict[str, tuple[str, str, tuple[str, ...], str]] = {
    "missing_value": ("invoice IS NULL OR stock_code IS NULL", "invoice", ("invoice", "stock_code"),
                      "lines without an invoice or stock code"),
    "unparseable_date": ("ts IS NULL", "invoice_date", ("invoice_date",),
                         "invoice dates that are empty or do not parse"),
    "future_date": ("ts > $now", "invoice_date", ("invoice_date",), "invoice dates after now"),
    "unparseable_number": ("quantity IS NULL OR price IS NULL", "quantity", ("quantity", "price"),
                           "quantities or prices that are empty or not numbers (shown: quantity, price)"),
    "negative_price": ("price < 0", "price", ("price",), "prices below 0"),
    "quantity_sign": ("(NOT is_return AND quantity <= 0) OR (is_return AND quantity > 0)", "quantity",
                      ("invoice", "quantity"),
                      "sales with a quantity of 0 or less, or cancellations with a positive one"),
    "duplicate_line": ("dup", "invoice", ("invoice", "stock_code"),
                       "lines repeating an earlier line field for field (numbers and dates as parsed)"),
    "cancellation": ("is_return", "invoice", ("invoice",), "lines of cancelled invoices (C...): returns"),
    "missing_customer_id": ("customer_id IS NULL", "customer_id", ("customer_id",),
                            "lines without a customer id"),
}
_ALWAYS_ERROR = {"missing_value", "future_date"}
_NUMERIC_TYPES = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "FLOAT", "DOUBLE", "DECIMAL")


def _typed_columns(names: dict[str, str], header: dict[str, str], date_format: str | None) -> str:
    """The SELECT list turning the raw columns into typed ones, with no more work than each type needs:
    Parquet numbers and timestamps are taken as they are, CSV text is cast once."""

    def text(role: str) -> str:
        return f"NULLIF(CAST({_quote(names[role])} AS VARCHAR), '')"

    def number(role: str) -> str:
        column = _quote(names[role])
        if header[names[role]].startswith(_NUMERIC_TYPES):
            return f"CAST({column} AS DOUBLE)"
        return f"TRY_CAST({text(role)} AS DOUBLE)"

    customer = names["customer_id"]
    if header[customer].startswith(_NUMERIC_TYPES):  # ids exported as numbers (12346.0)
        customer_id = f"CAST(CAST({_quote(customer)} AS BIGINT) AS VARCHAR)"
    else:
        value = text("customer_id")
        customer_id = (f"CASE WHEN suffix({value}, '.0') THEN left({value}, length({value}) - 2) "
                       f"ELSE {value} END")
    date = _date_expr(_quote(names["invoice_date"]), header[names["invoice_date"]], date_format)
    return (f"rowid AS row_no, {text('invoice')} AS invoice, {text('stock_code')} AS stock_code, "
            f"{text('description')} AS description, {number('quantity')} AS quantity, "
            f"{number('price')} AS price, {date} AS ts, {customer_id} AS customer_id, "
            f"{text('country')} AS country")


def _shown(names: dict[str, str], roles: tuple[str, ...]) -> str:
    """What an example shows: the raw text of the roles' columns (several: joined, empty ones named)."""
    if len(roles) == 1:
        return f"CAST({_quote(names[roles[0]])} AS VARCHAR)"
    parts = ", ".join(f"coalesce(NULLIF(CAST({_quote(names[r])} AS VARCHAR), ''), '(empty)')" for r in roles)
    return f"concat_ws(' / ', {parts})"


def check_transactions(con, path: Path | str, cfg: TransactionSettings, *,
                       now: datetime | None = None) -> TransactionReport:
    """Read and check `path`; when the report is ok, `con` holds the clean table ``tx``.

    Raises :class:`TransactionInputError` for a file that cannot be read at all (missing, empty, not CSV or
    Parquet, ragged rows); a file with the wrong columns gives a failed report naming them.
    """
    started = time.perf_counter()
    path = Path(path)
    now = (now or datetime.now(UTC)).replace(tzinfo=None)
    header = _header(con, path)
    names = cfg.columns.by_role
    rules = cfg.rules
    issues: list[Issue] = []
    missing = [role for role, name in names.items() if name not in header]
    if missing:
        folded = {h.strip().lower(): h for h in header}
        for role in missing:
            near = folded.get(names[role].strip().lower())
            hint = f" (found {near!r}: names are case- and space-sensitive)" if near else ""
            issues.append(Issue(names[role], "missing_column", "error", 0,
                                f"the {role} column is missing{hint}; the file has {sorted(header)} "
                                f"(set transactions.columns in params.yaml for other header names)"))
        return TransactionReport(str(path), 0, 0, issues, {}, rules.model_dump(),
                                 time.perf_counter() - started, names)

    import duckdb

    try:
        con.execute(f"CREATE OR REPLACE TABLE raw_lines AS SELECT * FROM {_scan(path)}")
        con.execute(f"CREATE OR REPLACE TEMP TABLE typed AS "
                    f"SELECT {_typed_columns(names, header, cfg.date_format)} FROM raw_lines")
        # copies of an earlier line, numbered within (invoice, a hash of the other fields) on a narrow
        # projection: sorting every column of millions of lines by all of them costs three times as much
        con.execute("""
            CREATE OR REPLACE TEMP TABLE checked AS
            WITH copies AS (
                SELECT row_no FROM (
                    SELECT row_no, row_number() OVER (
                        PARTITION BY invoice,
                                     hash(stock_code, description, quantity, price, ts, customer_id, country)
                        ORDER BY row_no) AS k
                    FROM typed)
                WHERE k > 1)
            SELECT t.*, coalesce(t.invoice ILIKE 'C%', false) AS is_return, c.row_no IS NOT NULL AS dup
            FROM typed t LEFT JOIN copies c USING (row_no)""")
        con.execute("DROP TABLE typed")
        counts = _counts(con, now)
    except duckdb.Error as exc:
        raise TransactionInputError(f"{path}: cannot be read: {_first_line(exc)}") from exc

    n = counts.pop("rows")
    line_offset = 1 if _is_parquet(path) else 2  # Parquet: row numbers; CSV: lines (header = line 1)
    example = RowExample if _is_parquet(path) else Example
    drop: list[str] = []
    for rule, (flag, role, shows, message) in _RULES.items():
        rows = counts[rule]
        if not rows:
            continue
        action = "error" if rule in _ALWAYS_ERROR else getattr(rules, rule)
        if action == "drop":
            drop.append(flag)
        severity: Severity = "error" if action == "error" else "warning"
        how = {"drop": "dropped", "keep": "kept", "error": f"refused (transactions.rules.{rule})"}[action]
        if rule in _ALWAYS_ERROR:
            how = "refused"
        if rule == "future_date":
            message = f"{message} ({now:%Y-%m-%d %H:%M} UTC): the export or its clock is wrong"
        shown = con.execute(
            f"SELECT rowid, {_shown(names, shows)} FROM raw_lines WHERE rowid IN (SELECT row_no FROM checked "
            f"WHERE {flag} ORDER BY row_no LIMIT {rules.max_examples}) ORDER BY rowid",
            {"now": now} if "$now" in flag else None).fetchall()
        examples = tuple(example(int(r[0]) + line_offset, None if r[1] is None else str(r[1])) for r in shown)
        issues.append(Issue(names[role], rule, severity, rows,
                            f"{rows / n:.2%} of the lines: {message}, {how}", examples))

    dropped_flag = " OR ".join(f"({f})" for f in drop) or "false"
    blocked = "ts IS NULL OR quantity IS NULL OR price IS NULL OR invoice IS NULL OR stock_code IS NULL " \
              "OR customer_id IS NULL"
    keep = f"NOT ({dropped_flag}) AND NOT ({blocked})"
    if rules.cancellation == "drop":
        keep += " AND NOT is_return"
    con.execute(f"""
        CREATE OR REPLACE TABLE tx AS
        SELECT invoice, stock_code, description, quantity, price, ts AS invoice_date, customer_id, country,
               is_return, epoch_ms(ts) / {MS_PER_DAY} AS t,
               CAST(floor(epoch_ms(ts) / {MS_PER_DAY}) AS INTEGER) AS day_number
        FROM checked WHERE {keep} ORDER BY row_no
    """)
    stats = _clean_stats(con)
    kept = stats.pop("rows")
    dropped = n - kept
    if n and dropped / n > rules.max_dropped_fraction:
        issues.append(Issue(None, "dropped_rows", "error", dropped,
                            f"{dropped / n:.2%} of the lines were dropped by the rules above, more than "
                            f"max_dropped_fraction {rules.max_dropped_fraction}: is this the right file?"))
    if kept < rules.min_rows:
        issues.append(Issue(None, "too_few_rows", "error", kept,
                            f"{kept} clean lines, fewer than min_rows {rules.min_rows}"))
    con.execute("DROP TABLE checked")
    con.execute("DROP TABLE raw_lines")
    report = TransactionReport(str(path), n, kept, issues, stats, rules.model_dump(),
                               time.perf_counter() - started, names)
    if not report.ok:
        con.execute("DROP TABLE tx")
    log.info("transactions.validate.done", source=str(path), rows=n, kept=kept, ok=report.ok,
             errors=len(report.errors), warnings=len(report.warnings), seconds=round(report.seconds, 3))
    return report


def _counts(con, now: datetime) -> dict[str, int]:
    parts = ", ".join(f"count(*) FILTER (WHERE {flag}) AS {rule}" for rule, (flag, *_) in _RULES.items())
    cursor = con.execute(f"SELECT count(*) AS rows, {parts} FROM checked", {"now": now})
    names = [d[0] for d in cursor.description]
    return {name: int(value) for name, value in zip(names, cursor.fetchall()[0], strict=True)}


def _clean_stats(con) -> dict[str, Any]:
    row = con.execute("""
        SELECT count(*), count(DISTINCT customer_id), count(DISTINCT invoice),
               count(*) FILTER (WHERE is_return), min(invoice_date), max(invoice_date)
        FROM tx""").fetchall()[0]
    return {"rows": int(row[0]), "customers": int(row[1]), "invoices": int(row[2]),
            "return_lines": int(row[3]),
            "first": None if row[4] is None else str(row[4]), "last": None if row[5] is None else str(row[5])}


def write_clean(con, dest: Path | str) -> Path:
    """The clean table ``tx`` as Parquet, atomically."""
    dest = Path(dest)
    with atomic_path(dest) as tmp:
        quoted = str(tmp).replace("'", "''")
        con.execute(f"COPY tx TO '{quoted}' (FORMAT parquet, COMPRESSION zstd)")
    return dest


def validate_transactions(path: Path | str, cfg: TransactionSettings, *, report_dir: Path | str,
                          clean_out: Path | str | None = None, now: datetime | None = None,
                          con=None) -> TransactionReport:
    """Check `path`, write the report, and (only when it passes) the clean Parquet file `clean_out`.

    A failed check raises nothing: read ``report.ok``; the previous clean file stays as it was.
    """
    con = con or connect()
    report = check_transactions(con, path, cfg, now=now)
    write_report(report, report_dir)
    if report.ok and clean_out is not None:
        write_clean(con, clean_out)
    return report
