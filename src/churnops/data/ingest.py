"""Read a customer CSV as strings, the way it was received (bronze layer), ready for validation.

:func:`read_table` is strict about the *file* and lenient about the *content*: a file that cannot be read as
a comma-separated UTF-8 table raises :class:`IngestError` naming what is wrong and where (missing, empty,
binary, not UTF-8, wrong delimiter, duplicate header names, ragged or truncated rows). Whether the values
make sense is :mod:`churnops.data.validate`'s job, so a column of text where numbers belong reads fine here.

The result
----------
- one object column of ``str`` per schema column found in the header, in the schema's order (id, features,
  target); every value as written, so ``"Unknown"``, ``"NA"`` or ``"nan"`` stay strings;
- an empty or whitespace-only field (``,,``, ``,"",`` or ``, ,``) is missing: ``None`` (``pd.isna`` is
  true); what a missing value means is the schema's missing-value policy (``schema.missing``);
- the schema's ``drop_columns`` (label leaks) and columns the schema does not know are never read;
- rows whose every schema field is empty (blank lines, ``,,,,``) are dropped and their line numbers recorded;
- a ``RangeIndex``; :func:`line_numbers` maps row positions back to lines of the file (header = line 1;
  a record counts as one line even when a quoted value spans several);
- ``frame.attrs``: ``source`` (the path), ``header`` (all header names), ``dropped_columns`` (drop_columns
  found), ``extra_columns`` (unknown header names, reported as warnings by validation) and
  ``blank_lines`` (line numbers of the dropped empty rows, reported as a warning by validation).

Reading uses pyarrow's CSV parser on one thread (≈ 3 s for 1,000,000 rows here; see benchmarks/RESULTS.md):
it checks every row's field count, which pandas does not (it pads short rows silently).
"""

from __future__ import annotations

import codecs
import csv
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from churnops.logs import get_logger
from churnops.settings import SchemaSettings

log = get_logger(__name__)

DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
MAX_BAD_ROWS_SHOWN = 5
_HEAD_BYTES = 64 * 1024
_MAGIC = {
    b"\x1f\x8b": "gzip-compressed data: decompress it first (gunzip)",
    b"PK\x03\x04": "a zip archive (or an .xlsx workbook): extract it or export the sheet as CSV",
    b"PAR1": "a Parquet file: it is already typed; export it as CSV to ingest it",
    b"\xd0\xcf\x11\xe0": "an old Excel/OLE document: export the sheet as CSV (UTF-8)",
    b"BZh": "bzip2-compressed data: decompress it first (bunzip2)",
    b"\xfd7zXZ": "xz-compressed data: decompress it first (unxz)",
}


class IngestError(ValueError):
    """The file cannot be read as a table: the message names the file, the line and what to do."""


@dataclass
class _BadRows:
    """Rows whose field count differs from the header's, collected by pyarrow's invalid-row handler."""

    expected: int = 0
    count: int = 0
    shown: list[tuple[int | None, int, str]] = field(default_factory=list)  # (line, fields, text)

    def __call__(self, row: object) -> str:
        self.expected = getattr(row, "expected_columns", 0)
        self.count += 1
        if len(self.shown) < MAX_BAD_ROWS_SHOWN:
            self.shown.append((getattr(row, "number", None), getattr(row, "actual_columns", 0),
                               getattr(row, "text", "")))
        return "skip"


def read_table(path: Path | str, schema: SchemaSettings) -> pd.DataFrame:
    """Read `path` (comma-separated, UTF-8, header on line 1) into string columns; see the module doc."""
    started = time.perf_counter()
    path = Path(path)
    if not path.exists():
        raise IngestError(f"{path}: file not found")
    if not path.is_file():
        raise IngestError(f"{path}: not a regular file (a directory?): give the path of a CSV file")
    size = path.stat().st_size
    if size == 0:
        raise IngestError(f"{path}: empty file (0 bytes): expected a header line and data rows")

    with path.open("rb") as fh:
        head = fh.read(_HEAD_BYTES)
    _reject_binary(path, head)
    header_line, header = _read_header(path)
    _reject_wrong_delimiter(path, header_line, header, schema)
    _reject_duplicate_names(path, header)

    names = set(header)
    known = set(schema.required_columns) | set(schema.drop_columns)
    keep = [c for c in schema.required_columns if c in names]
    dropped = [c for c in schema.drop_columns if c in names]
    extra = [c for c in header if c not in known]

    table, bad = _parse(path, header, keep)
    if bad.count:
        raise IngestError(_ragged_message(path, bad, table.num_rows, size))
    table = _blank_to_null(table)
    table, blank_lines = _drop_blank_rows(table)
    if table.num_rows == 0:
        raise IngestError(_no_rows(path, header))

    # pyarrow returns the included columns in `include_columns` order, i.e. the schema's
    # split_blocks + self_destruct: one block per column, arrow buffers freed as they convert (peak memory)
    frame = (table.to_pandas(split_blocks=True, self_destruct=True) if keep
             else pd.DataFrame(index=pd.RangeIndex(table.num_rows)))
    frame.attrs.update(
        source=str(path),
        header=list(header),
        dropped_columns=dropped,
        extra_columns=extra,
        blank_lines=blank_lines,
    )
    log.info("ingest.read", path=str(path), rows=len(frame), columns=len(keep), dropped=len(dropped),
             extra_columns=len(extra), seconds=round(time.perf_counter() - started, 3))
    return frame


def line_numbers(frame: pd.DataFrame, positions: np.ndarray | list[int]) -> np.ndarray:
    """Line numbers in the source file (header = line 1) of the rows at `positions` of `frame`.

    Rows sit on line ``position + 2`` shifted past the blank lines read_table dropped before them; a frame
    not made by read_table is numbered as if written with a header and no blank lines.
    """
    pos = np.asarray(positions, dtype=np.int64)
    blank = np.asarray(frame.attrs.get("blank_lines") or [], dtype=np.int64) - 2  # original 0-based rows
    if blank.size == 0:
        return pos + 2
    # original index of the p-th kept row: p plus the number of dropped rows at or before it
    shifted = np.sort(blank) - np.arange(blank.size)
    return pos + np.searchsorted(shifted, pos, side="right") + 2


# -- checks on the raw bytes ---------------------------------------------------------------------------


def _reject_binary(path: Path, head: bytes) -> None:
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise IngestError(f"{path}: the file is UTF-16 encoded: save it as UTF-8 CSV "
                          f"(e.g. iconv -f UTF-16 -t UTF-8 {path.name} > out.csv)")
    for magic, what in _MAGIC.items():
        if head.startswith(magic):
            raise IngestError(f"{path}: binary content, not CSV text: this looks like {what}")
    nul = head.find(b"\x00")
    if nul >= 0:
        line = head.count(b"\n", 0, nul) + 1
        raise IngestError(f"{path}: binary content, not CSV text: NUL byte at byte offset {nul} "
                          f"(line {line}); give a comma-separated UTF-8 text file")


def _read_header(path: Path) -> tuple[str, list[str]]:
    with path.open("rb") as fh:
        raw = fh.readline()
        rest = fh.read(_HEAD_BYTES)
    try:
        line = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise IngestError(_undecodable_message(path, raw, exc, line_number=1, line_start=0)) from exc
    line = line.rstrip("\r\n")
    if not line.strip():
        raise IngestError(f"{path}: line 1 is blank: expected the header (column names) on line 1")
    header = next(csv.reader([line]))
    if not rest.strip():
        raise IngestError(_no_rows(path, header))
    return line, header


def _no_rows(path: Path, header: list[str]) -> str:
    return f"{path}: empty file: the header has {len(header)} columns but there are no data rows"


def _reject_wrong_delimiter(path: Path, line: str, header: list[str], schema: SchemaSettings) -> None:
    """Say so when the header splits into the schema's columns on another delimiter than the comma."""
    known = set(schema.required_columns) | set(schema.drop_columns)
    comma_hits = sum(name in known for name in header)
    best, best_fields, best_hits = ",", header, comma_hits
    for delim in DELIMITERS:
        if delim == "," or delim not in line:
            continue
        fields = next(csv.reader([line], delimiter=delim))
        hits = sum(name in known for name in fields)
        splits_more = len(fields) > len(best_fields) and len(header) == 1
        if hits > best_hits or (hits == best_hits and splits_more):
            best, best_fields, best_hits = delim, fields, hits
    if best != ",":
        raise IngestError(
            f"{path}: the delimiter is {DELIMITERS[best]} ({best!r}), not comma: the header splits into "
            f"{len(best_fields)} columns on {best!r} ({best_hits} schema columns) but {len(header)} on ','. "
            f"Convert it to comma-separated CSV, e.g. "
            f"pandas.read_csv(path, sep={best!r}, dtype=str).to_csv(out, index=False)"
        )


def _reject_duplicate_names(path: Path, header: list[str]) -> None:
    seen: dict[str, int] = {}
    for position, name in enumerate(header, start=1):
        if name in seen:
            raise IngestError(f"{path}: line 1: column {name!r} appears twice in the header "
                              f"(columns {seen[name]} and {position}): rename or remove one")
        seen[name] = position


# -- parsing -------------------------------------------------------------------------------------------


def _parse(path: Path, header: list[str], keep: list[str]):  # -> (pyarrow.Table, _BadRows)
    import pyarrow as pa
    from pyarrow import csv as pacsv

    bad = _BadRows()
    read = pacsv.ReadOptions(use_threads=False, block_size=1 << 24)  # one thread: exact line numbers
    parse = pacsv.ParseOptions(delimiter=",", newlines_in_values=True, ignore_empty_lines=False,
                               invalid_row_handler=bad)
    # Excluded columns are still split (so every row's field count is checked) but never converted.
    include = keep or header[:1]
    convert = pacsv.ConvertOptions(
        column_types={c: pa.string() for c in include},
        include_columns=include,
        null_values=[""],
        strings_can_be_null=True,
        quoted_strings_can_be_null=True,
    )
    try:
        table = pacsv.read_csv(path, read_options=read, parse_options=parse, convert_options=convert)
    except pa.ArrowInvalid as exc:
        if "UTF8" in str(exc) or "utf8" in str(exc).lower():
            raise IngestError(_locate_undecodable(path)) from exc
        raise IngestError(f"{path}: cannot be parsed as CSV: {exc}") from exc
    if not keep:
        table = table.select([])
    return table, bad


def _blank_to_null(table):  # (pyarrow.Table) -> pyarrow.Table
    """Whitespace-only fields (a telecom export's ``" "``) are missing values, as empty ones are."""
    import pyarrow as pa
    import pyarrow.compute as pc

    columns = []
    for column in table.columns:
        blank = pc.match_substring_regex(column, r"^\s+$")
        if pc.any(blank).as_py():
            column = pc.if_else(blank, pa.scalar(None, pa.string()), column)
        columns.append(column)
    return pa.table(columns, names=table.column_names)


def _drop_blank_rows(table):  # (pyarrow.Table) -> (pyarrow.Table, list[int])
    """Drop rows whose every field is empty (blank lines, ``,,,,``); return their line numbers."""
    import pyarrow.compute as pc

    if table.num_columns == 0 or table.num_rows == 0:
        return table, []
    blank = None
    for column in table.columns:
        nulls = pc.is_null(column)
        blank = nulls if blank is None else pc.and_(blank, nulls)
    positions = np.flatnonzero(blank.to_numpy(zero_copy_only=False))
    if positions.size == 0:
        return table, []
    return table.filter(pc.invert(blank)), [int(p) + 2 for p in positions]


def _ragged_message(path: Path, bad: _BadRows, good_rows: int, size: int) -> str:
    shown = "; ".join(f"line {line if line is not None else '?'} has {fields}: {_clip(text)!r}"
                      for line, fields, text in bad.shown)
    more = f" (first {len(bad.shown)} shown)" if bad.count > len(bad.shown) else ""
    msg = (f"{path}: {bad.count} row(s) do not have the header's {bad.expected} fields{more}: {shown}")
    last_line, last_fields, _ = bad.shown[-1]
    total_records = 1 + good_rows + bad.count
    with path.open("rb") as fh:
        fh.seek(max(0, size - 1))
        ends_with_newline = fh.read(1) == b"\n"
    if bad.count == 1 and last_line == total_records and last_fields < bad.expected and not ends_with_newline:
        msg += (f". The file looks truncated: its last line ({last_line}) stops after {last_fields} of "
                f"{bad.expected} fields; copy or download it again")
    else:
        msg += ". Fix those lines (a stray or missing comma, or an unclosed quote) and ingest again"
    return msg


def _locate_undecodable(path: Path) -> str:
    """Find the first byte that is not UTF-8 (only on the error path: reads the file once more)."""
    decoder = codecs.getincrementaldecoder("utf-8")()  # a BOM is valid UTF-8
    offset = line = 0
    line_start = 0
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                # exc.start indexes into the decoder's buffer: pending bytes of the previous chunk + this one
                pending = len(exc.object) - len(chunk)
                at = offset - pending + exc.start
                before = exc.object[: exc.start]
                line_no = line + before.count(b"\n") + 1
                nl = before.rfind(b"\n")
                start = (offset - pending + nl + 1) if nl >= 0 else line_start
                fh.seek(start)
                raw_line = fh.readline(4096)
                return _undecodable_message(path, raw_line, exc, line_number=line_no, line_start=start, at=at)
            nl = chunk.rfind(b"\n")
            if nl >= 0:
                line_start = offset + nl + 1
            line += chunk.count(b"\n")
            offset += len(chunk)
    return f"{path}: not valid UTF-8 text: re-encode it as UTF-8"


def _undecodable_message(path: Path, raw_line: bytes, exc: UnicodeDecodeError, *, line_number: int,
                         line_start: int, at: int | None = None) -> str:
    at = line_start + exc.start if at is None else at
    byte = exc.object[exc.start: exc.start + 1].hex()
    snippet = raw_line[:120].decode("utf-8", errors="backslashreplace").rstrip("\r\n")
    return (f"{path}: not valid UTF-8 text: undecodable byte 0x{byte} at line {line_number} "
            f"(byte offset {at}): {snippet!r}. Re-encode the file as UTF-8 (e.g. iconv -f latin1 -t UTF-8)")


def _clip(text: str, width: int = 80) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."
