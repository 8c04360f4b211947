"""read_table: the real file reads as received minus the label leaks; unreadable files fail clearly."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from churnops.data.ingest import IngestError, line_numbers, read_table


def test_real_table_reads_as_strings_without_the_leak_columns(real_data: Path, schema) -> None:
    frame = read_table(real_data, schema)

    assert len(frame) == 10127
    assert list(frame.columns) == schema.required_columns
    assert not [c for c in frame.columns if c.startswith("Naive_Bayes")]
    assert frame.attrs["dropped_columns"] == schema.drop_columns
    assert frame.attrs["extra_columns"] == []
    assert all(frame[c].dtype == object for c in frame.columns)
    assert frame.loc[0, schema.id_column] == "768805383"  # the first row, as written
    assert frame.loc[0, "Customer_Age"] == "45"
    assert (frame["Education_Level"] == "Unknown").sum() == 1519  # "Unknown" is a category, not missing
    assert not frame.isna().any().any()


def test_na_like_strings_survive_and_only_empty_fields_are_missing(table, schema) -> None:
    def edit(rows, header):
        rows[0]["Education_Level"] = "NA"
        rows[1]["Marital_Status"] = "null"
        rows[2]["Income_Category"] = ""
        rows[3]["Customer_Age"] = "nan"

    frame = read_table(table(edit), schema)

    assert frame.loc[0, "Education_Level"] == "NA"
    assert frame.loc[1, "Marital_Status"] == "null"
    assert pd.isna(frame.loc[2, "Income_Category"])
    assert frame.loc[3, "Customer_Age"] == "nan"
    assert int(frame.isna().sum().sum()) == 1


def test_extra_columns_are_kept_out_and_listed(table, schema) -> None:
    def edit(rows, header):
        header.insert(3, "Branch")
        for row in rows:
            row["Branch"] = "north"

    frame = read_table(table(edit), schema)

    assert "Branch" not in frame.columns
    assert frame.attrs["extra_columns"] == ["Branch"]
    assert frame.attrs["header"][3] == "Branch"


def test_missing_schema_column_is_left_for_validation(table, schema) -> None:
    frame = read_table(table(lambda rows, header: header.remove("Gender")), schema)

    assert "Gender" not in frame.columns
    assert len(frame) == 300


def test_missing_file_is_named(tmp_path: Path, schema) -> None:
    path = tmp_path / "nowhere.csv"
    with pytest.raises(IngestError, match="nowhere.csv: file not found"):
        read_table(path, schema)


def test_directory_is_not_a_file(tmp_path: Path, schema) -> None:
    with pytest.raises(IngestError, match="not a regular file"):
        read_table(tmp_path, schema)


def test_zero_byte_file_is_empty(tmp_path: Path, schema) -> None:
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    with pytest.raises(IngestError, match=r"empty file \(0 bytes\)"):
        read_table(path, schema)


@pytest.mark.parametrize("ending", ["\n", "", "\n\n"])
def test_header_only_file_is_empty(tmp_path: Path, schema, header, write_csv, ending: str) -> None:
    path = write_csv(tmp_path / "header.csv", header, [])
    path.write_text(path.read_text().rstrip("\n") + ending)
    with pytest.raises(IngestError, match="empty file: the header has 23 columns but there are no data rows"):
        read_table(path, schema)


@pytest.mark.parametrize(("delimiter", "name"), [(";", "semicolon"), ("\t", "tab"), ("|", "pipe")])
def test_wrong_delimiter_is_detected_and_named(table, schema, delimiter: str, name: str) -> None:
    path = table()
    text = path.read_text().replace(",", delimiter)
    path.write_text(text)

    with pytest.raises(IngestError) as err:
        read_table(path, schema)

    message = str(err.value)
    assert f"the delimiter is {name} ({delimiter!r}), not comma" in message
    assert "23 columns" in message and "but 1 on ','" in message


def test_truncated_file_names_the_last_line(table, schema) -> None:
    path = table()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 60])  # cut the last row short

    with pytest.raises(IngestError) as err:
        read_table(path, schema)

    message = str(err.value)
    assert "1 row(s) do not have the header's 23 fields" in message
    assert "line 301 has" in message  # header + 300 rows: the cut row is line 301
    assert "looks truncated" in message


def test_ragged_rows_are_named_with_their_line_and_field_count(table, schema) -> None:
    path = table()
    lines = path.read_text().splitlines()
    lines[9] += ",surplus"  # line 10 has 24 fields
    lines[20] = lines[20].rsplit(",", 2)[0]  # line 21 has 21
    path.write_text("\n".join(lines) + "\n")

    with pytest.raises(IngestError) as err:
        read_table(path, schema)

    message = str(err.value)
    assert "2 row(s) do not have the header's 23 fields" in message
    assert "line 10 has 24" in message and "line 21 has 21" in message
    assert "truncated" not in message


def test_unclosed_quote_is_a_ragged_row(table, schema) -> None:
    path = table()
    path.write_text(path.read_text() + '799999999,"Existing Customer,45\n')
    with pytest.raises(IngestError, match="line 302 has"):
        read_table(path, schema)


def test_duplicate_header_name_is_rejected(table, schema, header) -> None:
    first = header.index("Gender") + 1
    path = table(lambda rows, header: header.append("Gender"))
    expected = rf"column 'Gender' appears twice in the header \(columns {first} and 24\)"
    with pytest.raises(IngestError, match=expected):
        read_table(path, schema)


def test_gzip_file_is_recognised_as_binary(table, schema, tmp_path: Path) -> None:
    packed = tmp_path / "customers.csv.gz"
    packed.write_bytes(gzip.compress(table().read_bytes()))
    with pytest.raises(IngestError, match="binary content.*gzip-compressed"):
        read_table(packed, schema)


def test_nul_bytes_are_binary(tmp_path: Path, schema) -> None:
    path = tmp_path / "blob.csv"
    path.write_bytes(b"CLIENTNUM,Gender\n1,\x00\x01\x02\n")
    with pytest.raises(IngestError, match=r"NUL byte at byte offset 19 \(line 2\)"):
        read_table(path, schema)


def test_utf16_file_is_named(table, schema) -> None:
    path = table()
    path.write_bytes(path.read_text().encode("utf-16"))
    with pytest.raises(IngestError, match="UTF-16 encoded"):
        read_table(path, schema)


def test_undecodable_byte_is_located(table, schema) -> None:
    path = table()
    lines = path.read_bytes().split(b"\n")
    lines[41] = lines[41].replace(b"Blue", b"Bl\xe9")  # latin-1 e-acute on line 42
    assert b"\xe9" in lines[41]
    path.write_bytes(b"\n".join(lines))

    with pytest.raises(IngestError) as err:
        read_table(path, schema)

    message = str(err.value)
    assert "not valid UTF-8" in message
    assert "undecodable byte 0xe9 at line 42" in message
    offset = path.read_bytes().index(b"\xe9")
    assert f"(byte offset {offset})" in message


def test_utf8_bom_and_crlf_line_endings_are_read(table, schema) -> None:
    path = table()
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\n", b"\r\n"))

    frame = read_table(path, schema)

    assert list(frame.columns) == schema.required_columns
    assert frame.loc[0, schema.id_column] == "700000000"
    assert frame.loc[len(frame) - 1, schema.target.column] == schema.target.negative  # no stray \r


def test_blank_rows_are_dropped_and_line_numbers_stay_true(table, schema) -> None:
    path = table()
    lines = path.read_text().splitlines()
    lines[4:4] = ["", ","  * 22]  # lines 5 and 6: a blank line and an all-empty row
    path.write_text("\n".join(lines) + "\n\n")  # and a blank line at the end (line 304)

    frame = read_table(path, schema)

    assert len(frame) == 300
    assert frame.attrs["blank_lines"] == [5, 6, 304]
    text_lines = path.read_text().split("\n")
    for position in (0, 2, 3, 10, 299):
        line = int(line_numbers(frame, [position])[0])
        assert text_lines[line - 1].startswith(frame.loc[position, schema.id_column])


def test_line_numbers_of_a_plain_frame_count_the_header() -> None:
    frame = pd.DataFrame({"a": ["x", "y", "z"]})
    assert line_numbers(frame, [0, 2]).tolist() == [2, 4]
    frame.attrs["blank_lines"] = [3, 4]
    assert line_numbers(frame, np.array([0, 1, 2])).tolist() == [2, 5, 6]


def test_quoted_values_may_hold_commas_and_quotes(table, schema) -> None:
    def edit(rows, header):
        rows[0]["Income_Category"] = 'odd, "quoted" value'

    frame = read_table(table(edit), schema)

    assert frame.loc[0, "Income_Category"] == 'odd, "quoted" value'
    assert len(frame) == 300

