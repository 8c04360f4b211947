"""Same seed, same bytes; another seed, another table; the file looks like the real one."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from churnops.data.generate import DriftSpec, generate, generate_to_csv
from churnops.settings import SchemaSettings

NUMBER = re.compile(r"-?\d+(\.\d*[1-9])?")  # no exponent, no trailing zeros, no ".0"
QUOTED = re.compile(r'"[^"]*"')


def test_same_seed_writes_identical_bytes(schema: SchemaSettings, tmp_path: Path) -> None:
    drift = DriftSpec.parse(shifts=["Total_Trans_Ct=-0.5"], mixes=["Card_Category=Silver:0.2"])
    a = generate_to_csv(schema, 3000, seed=5, out=tmp_path / "a.csv", drift=drift)
    b = generate_to_csv(schema, 3000, seed=5, out=tmp_path / "b.csv", drift=drift)
    assert a.read_bytes() == b.read_bytes()


def test_different_seeds_give_different_tables(schema: SchemaSettings) -> None:
    a, b = generate(schema, 2000, seed=1), generate(schema, 2000, seed=2)
    assert not a[schema.id_column].isin(b[schema.id_column]).all()
    for col in ("Customer_Age", "Credit_Limit", "Total_Trans_Ct", "Gender"):
        assert (a[col] != b[col]).mean() > 0.3, col


def test_csv_reads_back_to_the_generated_values(schema: SchemaSettings, tmp_path: Path) -> None:
    frame = generate(schema, 2500, seed=9)
    back = pd.read_csv(generate_to_csv(schema, 2500, seed=9, out=tmp_path / "t.csv"))
    pd.testing.assert_frame_equal(back, frame)


def test_csv_is_formatted_like_the_real_file(schema: SchemaSettings, tmp_path: Path, real_data: Path) -> None:
    path = generate_to_csv(schema, 2000, seed=4, out=tmp_path / "t.csv")
    raw = path.read_bytes()
    assert b"\r" not in raw and raw.endswith(b"\n")
    real_header = real_data.read_text().splitlines()[0].split(",")
    lines = raw.decode().splitlines()
    assert lines[0].split(",") == [h for h in real_header if h.strip('"') not in schema.drop_columns]
    header = [h.strip('"') for h in lines[0].split(",")]
    text_columns = {schema.target.column, *schema.categorical}
    for line in lines[1:]:
        for name, cell in zip(header, line.split(","), strict=True):
            pattern = QUOTED if name in text_columns else NUMBER
            assert pattern.fullmatch(cell), f"{name}={cell!r} in {line!r}"


def test_bad_drift_leaves_an_existing_file_untouched(schema: SchemaSettings, tmp_path: Path) -> None:
    out = tmp_path / "t.csv"
    out.write_text("previous good table\n")
    with pytest.raises(ValueError, match="Avg_Open_To_Buy"):
        generate_to_csv(schema, 100, seed=1, out=out, drift=DriftSpec(shifts={"Avg_Open_To_Buy": 1.0}))
    assert out.read_text() == "previous good table\n"
    assert [p.name for p in tmp_path.iterdir()] == ["t.csv"]


def _reference_csv(frame: pd.DataFrame) -> bytes:
    """The same format, one cell at a time."""
    def cell(v: object) -> str:
        if isinstance(v, str):
            return '"' + v.replace('"', '""') + '"'
        text = repr(float(v)) if isinstance(v, float) else str(v)
        return text.removesuffix(".0")

    lines = [",".join(cell(str(c)) for c in frame.columns)]
    lines += [",".join(cell(v) for v in row) for row in frame.itertuples(index=False)]
    return ("\n".join(lines) + "\n").encode()


def test_the_vectorised_writer_prints_every_cell_like_a_plain_one(tmp_path: Path) -> None:
    from churnops.data.generate import write_csv

    frame = pd.DataFrame({
        "id": [900000001, 5, 123456789012],
        "label": ['say "hi"', "Ünïcode, with comma", "x"],
        "small": [-3, 0, 7],
        "money": [-1438.3, 0.0, 34516.0],
        "ratio": [0.061, 2.5, -0.001],
        "irrational": [1 / 3, -2.0, 1e-9],  # no short decimal form: falls back to repr
    })
    out = write_csv(frame, tmp_path / "t.csv")
    assert out.read_bytes() == _reference_csv(frame)
    empty = write_csv(frame.iloc[:0], tmp_path / "empty.csv")
    assert empty.read_bytes() == _reference_csv(frame.iloc[:0])
