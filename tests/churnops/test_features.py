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


# -- missing-value policies ---------------------------------------------------------------------------
POLICIES = {"a": {"impute": "median", "indicator": True}, "c": {"impute": "constant", "value": 7.5},
            "card": {"impute": "most_frequent", "indicator": True}}


def _with_gaps(n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = _records(n, seed)
    for row in rows:
        for col in ("a", "c", "card"):
            if rng.uniform() < 0.2:
                row[col] = None if rng.uniform() < 0.5 else float("nan")
    return rows


def _imputing_encoder(training: list[dict]) -> FeatureEncoder:
    return FeatureEncoder(numeric=["a", "b", "c"], categorical=CATEGORIES,
                          ratios={"a_per_b": ["a", "b"], "c_per_a": ["c", "a"]},
                          missing=POLICIES).fit(pd.DataFrame(training))


def test_imputed_columns_encode_identically_one_row_many_rows_and_frame() -> None:
    training = _with_gaps(400, seed=1)
    encoder = _imputing_encoder(training)
    records = _with_gaps(300, seed=2)
    batch = encoder.encode_records(records)
    one_by_one = np.vstack([encoder.encode_records([r]) for r in records])
    np.testing.assert_array_equal(one_by_one, batch)
    np.testing.assert_array_equal(encoder.transform(pd.DataFrame(records)), batch)
    assert not np.isnan(batch).any()
    assert encoder.feature_names_[-2:] == ["a_missing", "card_missing"]
    blank_a = np.array([r["a"] is None or r["a"] != r["a"] for r in records])
    assert blank_a.any() and np.array_equal(batch[:, -2] == 1.0, blank_a)


def test_fill_values_are_learned_from_the_training_rows_only() -> None:
    training = _with_gaps(400, seed=3)
    encoder = _imputing_encoder(training)
    known_a = [r["a"] for r in training if r["a"] is not None and r["a"] == r["a"]]
    cards = pd.Series([r["card"] for r in training]).dropna()
    assert encoder.fill_ == {"a": float(np.median(known_a)), "c": 7.5, "card": cards.value_counts().idxmax()}
    (row,) = encoder.encode_records([{"a": None, "b": 2, "c": None, "g": "F", "card": None}])
    named = dict(zip(encoder.feature_names_, row.tolist(), strict=True))
    assert named["a"] == encoder.fill_["a"] and named["c"] == 7.5
    assert named[f"card={encoder.fill_['card']}"] == 1
    assert named["a_missing"] == 1.0 and named["card_missing"] == 1.0


def test_a_refit_from_the_fitted_config_encodes_the_same_without_training_rows() -> None:
    encoder = _imputing_encoder(_with_gaps(400, seed=4))
    again = FeatureEncoder(**encoder.fitted_config()).fit()
    records = _with_gaps(100, seed=5)
    np.testing.assert_array_equal(again.encode_records(records), encoder.encode_records(records))
    assert again.same_encoding(encoder) and not _encoder().same_encoding(encoder)


def test_columns_without_a_policy_stay_refused_and_median_needs_training_rows() -> None:
    import pytest

    with pytest.raises(ValueError, match="needs the training rows"):
        FeatureEncoder(numeric=["a"], missing={"a": {"impute": "median"}}).fit()
    encoder = _imputing_encoder(_with_gaps(50, seed=6))
    (row,) = encoder.encode_records([{"a": 1.0, "b": float("nan"), "c": 1.0, "g": "F", "card": "Blue"}])
    assert np.isnan(row[1])  # b has no policy: its gap is not silently filled (validation refuses it first)


def test_compiled_trees_score_imputed_rows_one_at_a_time_as_in_a_batch_and_as_the_library() -> None:
    from sklearn.pipeline import Pipeline
    from xgboost import XGBClassifier

    from churnops.scoring import Scorer

    def sane(rows: list[dict]) -> list[dict]:  # no 1e-300 denominators: c / a must fit XGBoost's float32
        return [r | {"a": 0.5} if r["a"] is not None and abs(r["a"]) < 1e-3 else r for r in rows]

    frame = pd.DataFrame(sane(_with_gaps(600, seed=7)))
    y = ((frame["b"] > 1) ^ frame["a"].isna()).astype(int).to_numpy()  # the gap itself carries signal
    encoder = FeatureEncoder(numeric=["a", "b", "c"], categorical=CATEGORIES,
                             ratios={"a_per_b": ["a", "b"], "c_per_a": ["c", "a"]}, missing=POLICIES)
    pipeline = Pipeline([("encode", encoder), ("model", XGBClassifier(n_estimators=20, max_depth=3, n_jobs=1,
                                                                      random_state=0))]).fit(frame, y)
    scorer = Scorer(pipeline)
    assert scorer.describe()["path"] == "compiled"
    records = sane(_with_gaps(200, seed=8))
    batch = scorer.predict_proba_records(records)
    one_by_one = np.concatenate([scorer.predict_proba_records([r]) for r in records])
    np.testing.assert_array_equal(one_by_one, batch)
    np.testing.assert_array_equal(scorer.predict_proba_frame(pd.DataFrame(records)), batch)
    library = pipeline.predict_proba(pd.DataFrame(records))[:, 1]
    np.testing.assert_allclose(batch, library, rtol=0, atol=1e-6)
