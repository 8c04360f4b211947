"""The packed format of the ``features`` field: :class:`Layout`, built from the schema and stored (as JSON)
in each version's meta."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from churnops.feature_store.errors import FeatureStoreError
from churnops.settings import SchemaSettings

FORMAT = "churnops-fs/1"  # packed little-endian float64 numerics, then uint16 category codes
MISSING_CODE = 0xFFFF  # a missing category of an optional column (numerics: NaN)


@dataclass(frozen=True)
class Layout:
    """How one customer's feature values are packed into the ``features`` field of its hash."""

    numeric: tuple[str, ...]
    integer: frozenset[str]
    categorical: tuple[tuple[str, tuple[str, ...]], ...]
    optional: frozenset[str] = frozenset()  # columns with a missing-value policy: stored missing, read None

    @classmethod
    def from_schema(cls, schema: SchemaSettings) -> Layout:
        for col, cats in schema.categorical.items():
            if len(cats) >= MISSING_CODE:
                raise FeatureStoreError(f"categorical column {col!r} has {len(cats)} categories; "
                                        f"the feature store packs at most {MISSING_CODE - 1}")
        return cls(
            numeric=tuple(schema.numeric),
            integer=frozenset(c for c, spec in schema.numeric.items() if spec.integer),
            categorical=tuple((c, tuple(v)) for c, v in schema.categorical.items()),
            optional=frozenset(schema.missing),
        )

    @property
    def columns(self) -> list[str]:
        return [*self.numeric, *(c for c, _ in self.categorical)]

    @cached_property
    def dtype(self) -> np.dtype:
        return np.dtype([(c, "<f8") for c in self.numeric] + [(c, "<u2") for c, _ in self.categorical])

    @cached_property
    def _struct(self) -> struct.Struct:
        return struct.Struct(f"<{len(self.numeric)}d{len(self.categorical)}H")

    @property
    def size(self) -> int:
        return self._struct.size

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "numeric": list(self.numeric), "integer": sorted(self.integer),
                           "categorical": {c: list(v) for c, v in self.categorical},
                           "optional": sorted(self.optional)})

    @classmethod
    def from_json(cls, text: str | bytes) -> Layout:
        doc = json.loads(text)
        if doc.get("format") != FORMAT:
            raise FeatureStoreError(f"feature set written in format {doc.get('format')!r}; this churnops "
                                    f"reads {FORMAT!r}: push the features again (churnops features push)")
        return cls(numeric=tuple(doc["numeric"]), integer=frozenset(doc["integer"]),
                   categorical=tuple((c, tuple(v)) for c, v in doc["categorical"].items()),
                   optional=frozenset(doc.get("optional", ())))

    def encode(self, frame: pd.DataFrame, source: str = "frame") -> np.ndarray:
        """Pack the feature columns of `frame` (one record per row). Missing values, non-numeric numbers
        and unknown categories are refused with the column, row count and examples."""
        out = np.empty(len(frame), dtype=self.dtype)
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            raise FeatureStoreError(f"{source} lacks feature columns {missing}")
        for col in self.numeric:
            try:
                values = pd.to_numeric(frame[col], errors="raise").to_numpy(dtype=np.float64)
            except (ValueError, TypeError) as exc:
                raise FeatureStoreError(f"{source}: column {col!r} is not numeric: {exc}") from exc
            bad = ~np.isfinite(values)
            if col in self.optional:
                bad &= ~np.isnan(values)  # a gap the model's encoder fills (schema.missing)
            if bad.any():
                raise FeatureStoreError(f"{source}: column {col!r} has {int(bad.sum())} missing or infinite "
                                        f"values; the gold layer must be complete (run the pipeline's "
                                        f"validation and features stages)")
            out[col] = values
        for col, cats in self.categorical:
            codes = pd.Categorical(frame[col], categories=list(cats)).codes
            bad = codes < 0
            if col in self.optional:
                gap = frame[col].isna().to_numpy()
                bad &= ~gap
                codes = np.where(gap, MISSING_CODE, codes)
            if bad.any():
                examples = sorted(set(map(str, frame[col][bad].head(20))))[:5]
                raise FeatureStoreError(f"{source}: column {col!r} has {int(bad.sum())} values outside its "
                                        f"categories {list(cats)} (e.g. {examples})")
            out[col] = codes
        return out

    def decode(self, blob: bytes) -> dict[str, Any]:
        """One customer's ``{column: value}`` (ints for integer columns, floats, category strings)."""
        try:
            values = self._struct.unpack(blob)
        except struct.error as exc:
            raise FeatureStoreError(f"stored features are {len(blob)} bytes, the layout needs {self.size}: "
                                    f"the feature set is corrupt; push it again") from exc
        row: dict[str, Any] = {}
        n = len(self.numeric)
        for col, value in zip(self.numeric, values[:n], strict=True):
            if value != value and col in self.optional:  # NaN: missing
                row[col] = None
            else:
                row[col] = int(value) if col in self.integer else value
        for (col, cats), code in zip(self.categorical, values[n:], strict=True):
            if code == MISSING_CODE and col in self.optional:
                row[col] = None
                continue
            if code >= len(cats):
                raise FeatureStoreError(f"stored code {code} of column {col!r} is outside its "
                                        f"{len(cats)} categories: the feature set is corrupt; push it again")
            row[col] = cats[code]
        return row
