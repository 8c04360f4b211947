"""Fixtures for ingest and validation tests: a small valid table built from the schema, and ways to spoil it.

The table is derived from params.yaml's schema (not from the real data), so these tests run without
/work/shared/data; tests on the real table use the `real_data` fixture and skip when it is absent.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import pytest

from churnops.settings import SchemaSettings, Settings, ValidateSettings

GOOD_ROWS = 300  # above min_rows (200); every 4th row is positive: 75 >= min_class_count (30)


@pytest.fixture
def settings(settings_factory: Callable[..., Settings]) -> Settings:
    return settings_factory()


@pytest.fixture
def schema(settings: Settings) -> SchemaSettings:
    return settings.schema


@pytest.fixture
def rules(settings: Settings) -> ValidateSettings:
    return settings.params.validate_


def header_of(schema: SchemaSettings) -> list[str]:
    """The real file's column order: id, target, features, then the two leak columns."""
    return [schema.id_column, schema.target.column, *schema.feature_columns, *schema.drop_columns]


def good_rows(schema: SchemaSettings, n: int = GOOD_ROWS) -> list[dict[str, str]]:
    """`n` valid rows: every category and a spread of in-range numbers, unique ids, both labels."""
    rows = []
    for i in range(n):
        row = {schema.id_column: str(700_000_000 + i * 7),
               schema.target.column: schema.target.positive if i % 4 == 0 else schema.target.negative}
        for col, spec in schema.numeric.items():
            lo = spec.min if spec.min is not None else 0.0
            hi = spec.max if spec.max is not None else lo + 100.0
            if spec.integer:
                row[col] = str(int(lo) + i % (min(int(hi - lo), 10) + 1))
            else:
                row[col] = repr(round(lo + (hi - lo) * (i % 10) / 10 * 0.5 + 0.125, 3))
        for col, cats in schema.categorical.items():
            row[col] = cats[i % len(cats)]
        for col in schema.drop_columns:
            row[col] = "0.5"
        rows.append(row)
    return rows


def write_csv(path: Path, header: list[str], rows: list[dict[str, str]] | list[list[str]]) -> Path:
    """Write like the real file: quoted header, quoted text fields, bare numbers."""
    with path.open("w", newline="") as fh:
        fh.write(",".join(f'"{h}"' for h in header) + "\n")
        writer = csv.writer(fh, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
        for row in rows:
            writer.writerow([row.get(h, "") for h in header] if isinstance(row, dict) else row)
    return path


@pytest.fixture
def table(schema: SchemaSettings, tmp_path: Path) -> Callable[..., Path]:
    """Write a valid table to tmp_path, after `edit(rows, header)` may spoil it; returns the CSV path.

        path = table(lambda rows, header: rows[3].update(Customer_Age="abc"))
    Row i of `rows` lands on line i + 2 of the file.
    """

    def _make(edit: Callable[[list[dict[str, str]], list[str]], object] | None = None, *, n: int = GOOD_ROWS,
              name: str = "customers.csv") -> Path:
        header, rows = header_of(schema), good_rows(schema, n)
        if edit is not None:
            edit(rows, header)
        return write_csv(tmp_path / name, header, rows)

    return _make


@pytest.fixture
def header(schema: SchemaSettings) -> list[str]:
    return header_of(schema)


@pytest.fixture(name="write_csv")
def write_csv_fixture() -> Callable[[Path, list[str], list], Path]:
    return write_csv
