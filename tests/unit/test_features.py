"""The preprocessing artefact: one row, many rows and a DataFrame encode to the same numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd

from churnops.features import FeatureEncoder

CATEGORIES = {"g": ["F", "M"], "card": ["Blue", "Gold", "Silver"]}


def _encoder() -> FeatureEncoder:
    return FeatureEncoder(numeric=["a", "b", "c"], categorical=CATEGORIES,
                          ratios={"a_per_b": ["a", "b"], "c_per_a": ["c", "a"]}).fit()


def _records(n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        rows.append({"a": float(rng.choice([0.0, rng.uniform(-5, 5), 1e-300])), "b": int(rng.integers(0, 4)),
                     "c": float(rng.normal(scale=1e6)), "g": str(rng.choice(["F", "M"])),
                     "card": str(rng.choice(["Blue", "Gold", "Silver"]))})
    return rows


def test_one_row_many_rows_and_frame_encode_identically() -> None:
    encoder = _encoder()
    records = _records(300, seed=0)  # zero and tiny denominators included
    batch = encoder.encode_records(records)
    one_by_one = np.vstack([encoder.encode_records([r]) for r in records])
    np.testing.assert_array_equal(one_by_one, batch)
    np.testing.assert_array_equal(encoder.transform(pd.DataFrame(records)), batch)
    assert batch.shape == (300, len(encoder.feature_names_)) == (300, 3 + 2 + 5)


def test_one_row_layout_follows_the_feature_names() -> None:
    encoder = _encoder()
    (row,) = encoder.encode_records([{"a": 6, "b": 3, "c": 1.5, "g": "M", "card": "Silver"}])
    assert dict(zip(encoder.feature_names_, row.tolist(), strict=True)) == {
        "a": 6.0, "b": 3.0, "c": 1.5, "a_per_b": 2.0, "c_per_a": 0.25, "g=F": 0.0, "g=M": 1.0,
        "card=Blue": 0.0, "card=Gold": 0.0, "card=Silver": 1.0}
    (zero,) = encoder.encode_records([{"a": 0, "b": 0, "c": 0, "g": "F", "card": "Blue"}])
    assert zero[3] == 0.0 and zero[4] == 0.0  # a zero denominator encodes as 0, as in training


def test_same_encoding_compares_what_the_encoding_depends_on() -> None:
    assert _encoder().same_encoding(_encoder())
    other = FeatureEncoder(numeric=["a", "b", "c"], categorical=CATEGORIES,
                           ratios={"a_per_b": ["b", "a"], "c_per_a": ["c", "a"]}).fit()
    assert not _encoder().same_encoding(other)
