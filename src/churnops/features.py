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
    ) -> None:
        self.numeric = numeric
        self.categorical = categorical
        self.ratios = ratios

    @classmethod
    def from_schema(cls, schema: SchemaSettings) -> FeatureEncoder:
        return cls(
            numeric=list(schema.numeric),
            categorical={c: list(v) for c, v in schema.categorical.items()},
            ratios={k: list(v) for k, v in schema.ratios.items()},
        )

    # -- sklearn API -----------------------------------------------------------------------------
    def fit(self, X: Any = None, y: Any = None) -> FeatureEncoder:  # noqa: N803 (sklearn naming)
        cats = self.categorical or {}
        self.numeric_ = list(self.numeric)
        self.ratios_ = {k: (v[0], v[1]) for k, v in (self.ratios or {}).items()}
        self.vocab_ = {col: {cat: i for i, cat in enumerate(values)} for col, values in cats.items()}
        names = [*self.numeric_, *self.ratios_]
        for col, values in cats.items():
            names += [f"{col}={v}" for v in values]
        self.feature_names_ = names
        # feature index -> raw input column it comes from (for explanations in raw terms)
        sources = [*self.numeric_, *(f"{a}/{b}" for a, b in self.ratios_.values())]
        for col, values in cats.items():
            sources += [col] * len(values)
        self.sources_ = sources
        self.input_columns_ = [*self.numeric_, *cats]
        offset = len(self.numeric_) + len(self.ratios_)
        self.onehot_ = []  # (column, vocabulary, offset of its first one-hot feature)
        for col, vocab in self.vocab_.items():
            self.onehot_.append((col, vocab, offset))
            offset += len(vocab)
        return self

    def same_encoding(self, other: FeatureEncoder) -> bool:
        """True when `other` turns rows into exactly the same matrix (same columns, ratios, vocabularies)."""
        return (self.numeric_ == other.numeric_ and self.ratios_ == other.ratios_
                and self.vocab_ == other.vocab_)

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
        which ``tests/unit/test_features.py`` checks value for value."""
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
        values += onehot
        return np.array(values, dtype=np.float64).reshape(1, -1)

    # -- the one implementation ------------------------------------------------------------------
    def _encode(self, columns: Mapping[str, Any], n_rows: int) -> np.ndarray:
        out = np.zeros((n_rows, len(self.feature_names_)), dtype=np.float64)
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
        return out

    def source_column(self, feature_index: int) -> str:
        return self.sources_[feature_index]
