"""Pure functions of the feature store: key names, the packed layout, the protocol bytes of a chunk."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from churnops import feature_store as fs


def test_keys_follow_the_documented_key_space() -> None:
    assert fs.current_key("ns") == "ns:fs:current"
    assert fs.lock_key("ns") == "ns:fs:lock"
    assert fs.meta_key("ns", "v1") == "ns:fs:v:v1:meta"
    assert fs.customer_key("ns", "v1", "768805383") == "ns:fs:v:v1:c:768805383"
    assert fs.version_prefix("ns", "v1") == "ns:fs:v:v1:"
    assert fs.ids_key("ns", "v1") == "ns:fs:v:v1:ids:0" and fs.ids_key("ns", "v1", 3) == "ns:fs:v:v1:ids:3"
    assert fs.ids_header(9) == b"churnops-ids/1 9\n"


@pytest.mark.parametrize("version", ["a:b", "v*", "", "-x", "x" * 65, "a b", "v[1]"])
def test_versions_that_would_break_the_key_space_are_refused(version: str) -> None:
    with pytest.raises(fs.FeatureStoreError, match="not allowed"):
        fs.check_version(version)


def test_safe_versions_and_ids_are_accepted() -> None:
    assert fs.check_version("2024-06-01_v1.2") == "2024-06-01_v1.2"
    assert fs.normalise_id(768805383) == fs.normalise_id("768805383") == "768805383"
    assert fs.normalise_id(np.int64(5)) == "5"
    with pytest.raises(fs.FeatureStoreError):
        fs.normalise_id(True)


def _frame(settings: Any, rows: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=settings.schema.feature_columns)


def _row(settings: Any, **overrides: Any) -> dict[str, Any]:
    schema = settings.schema
    row: dict[str, Any] = {c: (int(spec.min or 0) if spec.integer else float(spec.min or 0))
                           for c, spec in schema.numeric.items()}
    row.update({c: cats[-1] for c, cats in schema.categorical.items()})
    row.update(overrides)
    return row


def test_packed_values_decode_to_exactly_what_was_pushed(settings: Any) -> None:
    schema = settings.schema
    layout = fs.Layout.from_schema(schema)
    awkward = [_row(settings, Credit_Limit=0.1 + 0.2, Avg_Utilization_Ratio=1e-300,
                    Total_Trans_Amt=999999.999, Customer_Age=100, Gender="M", Income_Category="$120K +"),
               _row(settings, Credit_Limit=12691.0, Total_Amt_Chng_Q4_Q1=1.335, Education_Level="Unknown")]
    packed = layout.encode(_frame(settings, awkward))
    assert packed.dtype.itemsize == layout.size == 8 * len(schema.numeric) + 2 * len(schema.categorical)
    for row, record in zip(awkward, packed, strict=True):
        decoded = layout.decode(record.tobytes())
        assert decoded == row
        assert all(type(decoded[c]) is int for c, spec in schema.numeric.items() if spec.integer)
    assert fs.Layout.from_json(layout.to_json()) == layout


def test_layout_refuses_missing_values_and_unknown_categories(settings: Any) -> None:
    layout = fs.Layout.from_schema(settings.schema)
    with pytest.raises(fs.FeatureStoreError, match=r"'Credit_Limit' has 1 missing"):
        layout.encode(_frame(settings, [_row(settings, Credit_Limit=float("nan"))]))
    with pytest.raises(fs.FeatureStoreError, match=r"'Gender' has 1 values outside .* \['Q'\]"):
        layout.encode(_frame(settings, [_row(settings, Gender="Q")]))
    with pytest.raises(fs.FeatureStoreError, match="lacks feature columns"):
        layout.encode(_frame(settings, [_row(settings)]).drop(columns=["Gender"]))
    with pytest.raises(fs.FeatureStoreError, match="corrupt"):
        layout.decode(b"short")


def test_columns_with_a_missing_value_policy_are_stored_missing_and_read_as_none(settings: Any) -> None:
    from churnops.settings import SchemaSettings

    schema = SchemaSettings.model_validate({**settings.schema.model_dump(), "missing": {
        "Credit_Limit": {"impute": "median"}, "Customer_Age": {"impute": "median"},
        "Gender": {"impute": "most_frequent"}}})
    layout = fs.Layout.from_schema(schema)
    assert fs.Layout.from_json(layout.to_json()) == layout
    rows = [_row(settings, Credit_Limit=float("nan"), Customer_Age=None, Gender=None), _row(settings)]
    packed = layout.encode(pd.DataFrame(rows, columns=schema.feature_columns))
    gap = layout.decode(packed[0].tobytes())
    assert gap["Credit_Limit"] is None and gap["Customer_Age"] is None and gap["Gender"] is None
    assert layout.decode(packed[1].tobytes()) == rows[1]
    with pytest.raises(fs.FeatureStoreError, match=r"'Total_Trans_Amt' has 1 missing"):  # no policy
        layout.encode(pd.DataFrame([_row(settings, Total_Trans_Amt=float("nan"))],
                                   columns=schema.feature_columns))


def test_a_chunk_is_exactly_the_protocol_redis_py_would_send(settings: Any) -> None:
    """Vectorised RESP packing gives byte for byte redis-py's own HSET commands (rows grouped by key
    length, in order within a group)."""
    from redis.connection import PythonRespSerializer

    layout = fs.Layout.from_schema(settings.schema)
    ids = np.array([b"7", b"12345", b"abc", b"99", b"x-long-customer-id"], dtype=np.bytes_)
    rows = [_row(settings, Customer_Age=20 + i, Credit_Limit=1000.5 + i) for i in range(len(ids))]
    packed = layout.encode(_frame(settings, rows))
    chunk = fs.encode_hset_chunk(b"ns:fs:v:v1:c:", ids, packed, b"1718000000.5")

    pack = PythonRespSerializer(buffer_cutoff=1 << 30, encode=lambda v: v).pack
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    expected = b"".join(
        b"".join(pack("HSET", b"ns:fs:v:v1:c:" + ids[i], b"features", packed[i].tobytes(), b"event_time",
                      b"1718000000.5")) for i in order)
    assert chunk == expected


def test_id_list_appends_and_unlinks_are_exactly_the_protocol_redis_py_would_send() -> None:
    """One APPEND of fixed-width records per chunk; UNLINK commands of at most `per_command` keys, ids
    grouped by length (in order within a group)."""
    from redis.connection import PythonRespSerializer

    pack = PythonRespSerializer(buffer_cutoff=1 << 30, encode=lambda v: v).pack
    ids = np.array([b"7", b"12345", b"abc", b"99", b"x-long-customer-id", b"8", b"6", b"a\x00b"],
                   dtype=np.bytes_)
    width = ids.dtype.itemsize
    assert fs.encode_ids_append(b"ns:fs:v:v1:ids:0", ids) == b"".join(
        pack("APPEND", b"ns:fs:v:v1:ids:0", b"".join(i.ljust(width, b"\x00") for i in ids.tolist())))

    payload, commands = fs.encode_unlink(b"ns:fs:v:v1:c:", ids, per_command=2)
    groups: dict[int, list[bytes]] = {}
    for i in ids.tolist():
        groups.setdefault(len(i), []).append(b"ns:fs:v:v1:c:" + i)
    expected = [pack("UNLINK", *group[k:k + 2]) for _, group in sorted(groups.items())
                for k in range(0, len(group), 2)]
    assert commands == len(expected) == 6
    assert payload == b"".join(b"".join(parts) for parts in expected)
    assert fs.encode_unlink(b"p:", ids[:0]) == (b"", 0)
