"""The one preprocessing artefact shared by training and serving.

:class:`FeatureEncoder` turns raw schema columns into the model's numeric matrix: numeric columns as they
are, the ratio features declared in params.yaml, and one-hot categories with a fixed vocabulary taken from
the schema. It is the first step of every model pipeline saved to MLflow, so serving runs exactly the
code that training ran. Two entry points share one implementation:

- :meth:`FeatureEncoder.transform` takes a pandas DataFrame (training, batch scoring);
- :meth:`FeatureEncoder.encode_records` takes a list of ``{column: value}`` dicts (the /predict hot path,
  no pandas).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

from churnops.settings import SchemaSettings


class FeatureEncoder(TransformerMixin, BaseEstimator):
    def __init__(
        self,
        numeric: Sequence[str] = (),
        categorical: Mapping[str, Sequence[str]] | None = None,
        ratios: Mapping[str, Sequence[str]] | None = None,
        missing: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.numeric = numeric
        self.categorical = categorical
        self.ratios = ratios
        self.missing = missing  # column -> {"impute": median|most_frequent|constant, "value", "indicator"}

    @classmethod
    def from_schema(cls, schema: SchemaSettings) -> FeatureEncoder:
        return cls(
            numeric=list(schema.numeric),
            categorical={c: list(v) for c, v in schema.categorical.items()},
            ratios={k: list(v) for k, v in schema.ratios.items()},
            missing={c: p.model_dump() for c, p in schema.missing.items()} or None,
        )

    def fitted_config(self) -> dict[str, Any]:
        """Constructor arguments that encode exactly as this fitted encoder with no training rows: the
        learned fill values written as constants (for artefacts saved without the pipeline)."""
        return {"numeric": list(self.numeric_), "categorical": {c: list(v) for c, v in self.vocab_.items()},
                "ratios": {k: list(v) for k, v in self.ratios_.items()},
                "missing": {c: {"impute": "constant", "value": v, "indicator": c in self.indicators_}
                            for c, v in self.fill_.items()} or None}

    # -- sklearn API -----------------------------------------------------------------------------
    def fit(self, X: Any = None, y: Any = None) -> FeatureEncoder:  # noqa: N803 (sklearn naming)
        cats = self.categorical or {}
        self.numeric_ = list(self.numeric)
        self.ratios_ = {k: (v[0], v[1]) for k, v in (self.ratios or {}).items()}
        self.vocab_ = {col: {cat: i for i, cat in enumerate(values)} for col, values in cats.items()}
        policies = dict(self.missing or {})
        self.fill_ = {col: self._fill_value(col, dict(policy), X) for col, policy in policies.items()}
        self.indicators_ = [col for col, policy in (self.missing or {}).items() if policy.get("indicator")]
        names = [*self.numeric_, *self.ratios_]
        for col, values in cats.items():
            names += [f"{col}={v}" for v in values]
        names += [f"{col}_missing" for col in self.indicators_]
        self.feature_names_ = names
        # feature index -> raw input column it comes from (for explanations in raw terms)
        sources = [*self.numeric_, *(f"{a}/{b}" for a, b in self.ratios_.values())]
        for col, values in cats.items():
            sources += [col] * len(values)
        sources += list(self.indicators_)
        self.sources_ = sources
        self.input_columns_ = [*self.numeric_, *cats]
        offset = len(self.numeric_) + len(self.ratios_)
        self.onehot_ = []  # (column, vocabulary, offset of its first one-hot feature)
        for col, vocab in self.vocab_.items():
            self.onehot_.append((col, vocab, offset))
            offset += len(vocab)
        self.indicator_offset_ = offset  # the <column>_missing features come last
        return self

    def _fill_value(self, col: str, policy: dict[str, Any], X: Any) -> float | str:  # noqa: N803
        how = policy.get("impute")
        if how == "constant":
            value = policy.get("value")
            return value if col in (self.categorical or {}) else float(value)
        if X is None or col not in getattr(X, "columns", ()):
            raise ValueError(f"imputing {col!r} by {how} needs the training rows: fit the encoder on them")
        values = X[col].dropna()
        if values.empty:
            raise ValueError(f"column {col!r} has no value in the training rows to impute its {how} from")
        if how == "median":
            return float(np.median(values.to_numpy(dtype=np.float64)))
        if how == "most_frequent":  # ties: the first in sorted order, so a refit on the same rows agrees
            counts = values.value_counts(sort=False)
            best = counts[counts == counts.max()].index
            value = sorted(best.tolist())[0]
            return value if col in (self.categorical or {}) else float(value)
        raise ValueError(f"unknown imputation {how!r} for {col!r}")

    def same_encoding(self, other: FeatureEncoder) -> bool:
        """True when `other` turns rows into exactly the same matrix (same columns, ratios, vocabularies,
        fill values and indicators)."""
        return (self.numeric_ == other.numeric_ and self.ratios_ == other.ratios_
                and self.vocab_ == other.vocab_ and self.fill_ == getattr(other, "fill_", {})
                and self.indicators_ == getattr(other, "indicators_", []))

    def transform(self, X: pd.DataFrame) -> np.ndarray:  # noqa: N803
        missing = [c for c in self.input_columns_ if c not in X.columns]
        if missing:
            raise KeyError(f"input is missing feature columns: {missing}")
        return self._encode({c: X[c].to_numpy() for c in self.input_columns_}, len(X))

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        return np.asarray(self.feature_names_, dtype=object)

    # -- serving hot path ------------------------------------------------------------------------
    def encode_records(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Encode already-validated rows keyed by column name, without pandas."""
        if len(records) == 1:
            return self._encode_one(records[0])
        columns = {c: [r[c] for r in records] for c in self.input_columns_}
        return self._encode(columns, len(records))

    def _encode_one(self, record: Mapping[str, Any]) -> np.ndarray:
        """One row in plain Python (a fifth of the array path's cost); the same arithmetic as :meth:`_encode`,
        which ``tests/churnops/test_features.py`` checks value for value."""
        fill = self.fill_
        if fill:  # None / NaN -> the learned fill value (only for the columns with a policy)
            absent = [c for c in fill if _is_blank(record.get(c))]
            if absent:
                record = {**record, **{c: fill[c] for c in absent}}
        else:
            absent = []
        values = [float(record[c]) for c in self.numeric_]
        for num, den in self.ratios_.values():
            b = float(record[den])
            values.append(float(record[num]) / b if b != 0 else 0.0)
        onehot = [0.0] * (len(self.feature_names_) - len(values))
        start = len(values)
        for col, vocab, offset in self.onehot_:
            k = vocab.get(record[col])
            if k is not None:
                onehot[offset - start + k] = 1.0
        for i, col in enumerate(self.indicators_):
            if col in absent:
                onehot[self.indicator_offset_ - start + i] = 1.0
        values += onehot
        return np.array(values, dtype=np.float64).reshape(1, -1)

    # -- the one implementation ------------------------------------------------------------------
    def _encode(self, columns: Mapping[str, Any], n_rows: int) -> np.ndarray:
        out = np.zeros((n_rows, len(self.feature_names_)), dtype=np.float64)
        blanks: dict[str, np.ndarray] = {}
        if self.fill_:
            columns = dict(columns)
            for col, value in self.fill_.items():
                filled, blanks[col] = _filled(columns[col], value, numeric=col not in self.vocab_)
                columns[col] = filled
        j = 0
        for col in self.numeric_:
            out[:, j] = np.asarray(columns[col], dtype=np.float64)
            j += 1
        for num, den in self.ratios_.values():
            a = np.asarray(columns[num], dtype=np.float64)
            b = np.asarray(columns[den], dtype=np.float64)
            out[:, j] = np.divide(a, b, out=np.zeros(n_rows), where=b != 0)
            j += 1
        for col, vocab in self.vocab_.items():
            values = columns[col]
            for i, value in enumerate(values):
                k = vocab.get(value)
                if k is not None:  # an unknown category encodes as all zeros (validation rejects it earlier)
                    out[i, j + k] = 1.0
            j += len(vocab)
        for col in self.indicators_:
            out[:, j] = blanks[col]
            j += 1
        return out

    def source_column(self, feature_index: int) -> str:
        return self.sources_[feature_index]


def _is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def _filled(values: Any, fill: float | str, *, numeric: bool) -> tuple[Any, np.ndarray]:
    """(`values` with None / NaN replaced by `fill`, the 0/1 mask of what was replaced)."""
    if numeric:
        array = np.asarray(values, dtype=np.float64)  # None -> NaN
        blank = np.isnan(array)
        return (np.where(blank, fill, array) if blank.any() else array), blank.astype(np.float64)
    blank = np.fromiter((_is_blank(v) for v in values), dtype=bool, count=len(values))
    if not blank.any():
        return values, blank.astype(np.float64)
    return [fill if b else v for v, b in zip(values, blank, strict=True)], blank.astype(np.float64)
