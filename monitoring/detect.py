"""The drift detector core: a reference frame and a current window in, a :class:`DriftResult` out.

Pure: no I/O, no settings file, no service. Steps:

1. A current window shorter than ``min_window`` rows is "not enough data": no test is run (exit code 4).
2. Every feature of the schema is tested (KS for numeric, chi-squared for categorical) by the configured
   backend, with a Bonferroni or FDR correction across features.
3. Effect-size floor: a feature drifts only if its test is significant *and* its shift is large enough to
   matter. Numeric features: the Wasserstein-1 distance between the two samples divided by the reference's
   standard deviation >= ``min_shift_sd`` (the average distance the values moved, in standard deviations:
   a mean shift of d sigma scores exactly d, whatever the shape of the distribution). Categorical features:
   the total variation distance between category shares >= ``min_category_shift`` (the share of customers
   that would have to change category). Both are sample-size free, unlike p-values, which on large
   windows flag shifts far too small to matter. (The KS statistic is not used as the floor: on peaked or
   atom-laden columns such as BankChurners' zero revolving balances it jumps for tiny shifts.)

Columns with a missing-value policy (params.yaml ``schema.missing``) may hold gaps, in the reference (the
training rows) and in windows (/predict filled a null field): a numeric column is tested on its present
values; a categorical column counts its gaps as one more category, so a change in how often the field is
left empty is tested too. Any other column with a gap is refused.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from monitoring.backends import (
    Backend,
    Correction,
    EncodedColumns,
    GapsNotSupported,
    get_backend,
    ks_and_wasserstein,
)

Status = Literal["drift", "no_drift", "not_enough_data"]
EXIT_CODES: dict[str, int] = {"no_drift": 0, "drift": 3, "not_enough_data": 4}


class DriftInputError(ValueError):
    """The reference or the current window cannot be tested; the message says which column and why."""


@dataclass(frozen=True)
class DriftConfig:
    p_value: float = 0.05
    correction: Correction = "bonferroni"
    min_window: int = 500
    min_shift_sd: float = 0.1
    min_category_shift: float = 0.05
    backend: str = "scipy"

    @classmethod
    def from_settings(cls, monitoring: Any, backend: str | None = None) -> DriftConfig:
        return cls(p_value=monitoring.p_value, correction=monitoring.correction,
                   min_window=monitoring.min_window, min_shift_sd=monitoring.min_shift_sd,
                   min_category_shift=monitoring.min_category_shift, backend=backend or monitoring.backend)


@dataclass(frozen=True)
class FeatureDrift:
    feature: str
    kind: Literal["numeric", "categorical"]
    test: Literal["ks", "chi2"]
    statistic: float  # KS D, or the chi-squared statistic
    p_value: float
    effect_size: float  # numeric: Wasserstein-1 / reference std; categorical: total variation distance
    effect_floor: float
    significant: bool  # p-value below the corrected threshold
    drift: bool  # significant and effect_size >= effect_floor

    def describe(self) -> str:
        """The change in words, for alerts: `Total_Trans_Amt moved 0.58 sd`."""
        if self.kind == "numeric":
            return f"{self.feature} moved {self.effect_size:.2f} sd"
        return f"{self.feature}: {self.effect_size:.0%} of rows changed category"


@dataclass(frozen=True)
class DriftResult:
    status: Status
    window_size: int
    reference_size: int
    reference_version: str | None
    backend: str
    config: DriftConfig
    threshold: float | None = None  # per-feature p-value threshold after correction
    features: list[FeatureDrift] = field(default_factory=list)
    message: str = ""
    source: dict[str, Any] = field(default_factory=dict)  # where the window came from (for the report)
    created_at: float = field(default_factory=time.time)

    @property
    def drift(self) -> bool:
        return self.status == "drift"

    @property
    def drifted_features(self) -> list[str]:
        return [f.feature for f in self.features if f.drift]

    @property
    def significant_below_floor(self) -> list[str]:
        """Statistically significant but too small to matter (the effect-size floor held them back)."""
        return [f.feature for f in self.features if f.significant and not f.drift]

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "drift": self.drift,
            "drifted_features": self.drifted_features,
            "significant_below_floor": self.significant_below_floor,
            "window_size": self.window_size,
            "reference_size": self.reference_size,
            "reference_version": self.reference_version,
            "backend": self.backend,
            "config": asdict(self.config),
            "threshold": self.threshold,
            "message": self.message,
            "source": self.source,
            "created_at": self.created_at,
            "features": [asdict(f) for f in self.features],
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> DriftResult:
        """The result :meth:`to_dict` wrote (an Airflow task hands it to the next as JSON)."""
        return cls(
            status=doc["status"],
            window_size=doc["window_size"],
            reference_size=doc["reference_size"],
            reference_version=doc.get("reference_version"),
            backend=doc["backend"],
            config=DriftConfig(**doc["config"]),
            threshold=doc.get("threshold"),
            features=[FeatureDrift(**f) for f in doc.get("features", [])],
            message=doc.get("message", ""),
            source=doc.get("source") or {},
            created_at=doc["created_at"],
        )

    def summary(self) -> dict[str, Any]:
        """The short form that goes into alerts and the retraining run's configuration."""
        top = sorted((f for f in self.features if f.drift), key=lambda f: f.effect_size, reverse=True)
        return {
            "status": self.status,
            "drifted_features": self.drifted_features,
            "effect_sizes": {f.feature: round(f.effect_size, 4) for f in top},
            "changes": [f.describe() for f in top],
            "window_size": self.window_size,
            "reference_version": self.reference_version,
            "backend": self.backend,
            "created_at": self.created_at,
            "source": self.source,
        }


# -- encoding ------------------------------------------------------------------------------------

MISSING_CATEGORY = "(missing)"  # the code of a gap in an optional categorical column


def _numeric(frame: pd.DataFrame, col: str, role: str, optional: bool = False) -> np.ndarray:
    """The column's values as a sorted float64 array (the univariate tests need only the marginal); the
    gaps of an optional column are left out."""
    series = frame[col]
    try:
        # a copy (sorted in place below, the frame is untouched); nullable NA -> NaN
        values = series.to_numpy(dtype=np.float64, copy=True, na_value=np.nan)
    except (TypeError, ValueError) as exc:
        raise DriftInputError(f"{role} column {col!r} is not numeric ({series.dtype}): "
                              "validate the data against the schema first") from exc
    values.sort()
    if len(values) and np.isnan(values[-1]):  # NaN sorts last
        missing = int(np.isnan(values).sum())
        if optional:
            return values[: len(values) - missing]
        raise DriftInputError(f"{role} column {col!r} has {missing} missing values: drift tests need "
                              "complete rows (validate the data first, or drop incomplete rows)")
    return values


def _codes(series: pd.Series, vocab_index: dict[Any, int], col: str, role: str,
           optional: bool = False) -> np.ndarray:
    """Integer codes of a column's values in a vocabulary; values not yet in it are appended to it. The gaps
    of an optional column are coded as the category ``(missing)``."""
    if optional and series.isna().any():
        series = series.astype(object).where(series.notna(), MISSING_CATEGORY)
    if isinstance(series.dtype, pd.CategoricalDtype):
        local_codes = series.cat.codes.to_numpy()
        uniques = list(series.cat.categories)
    else:
        local_codes, uniques_idx = pd.factorize(series, use_na_sentinel=True)
        uniques = list(uniques_idx)
    if (local_codes < 0).any():
        missing = int((local_codes < 0).sum())
        raise DriftInputError(f"{role} column {col!r} has {missing} missing values: drift tests need "
                              "complete rows (validate the data first)")
    mapping = np.empty(len(uniques), dtype=np.int64)
    for i, value in enumerate(uniques):
        key = str(value)
        if key not in vocab_index:
            vocab_index[key] = len(vocab_index)
        mapping[i] = vocab_index[key]
    return mapping[local_codes] if len(uniques) else np.zeros(0, dtype=np.int64)


@dataclass
class EncodedReference:
    """A reference sample encoded once (so many windows can be tested against it cheaply)."""

    columns: EncodedColumns
    vocab: dict[str, dict[str, int]]  # categorical column -> category -> code
    numeric_features: list[str]
    categorical_features: list[str]
    scale: dict[str, float]  # numeric column -> reference standard deviation
    optional: frozenset[str] = frozenset()  # columns that may hold gaps (schema.missing)


def encode_reference(reference: pd.DataFrame, numeric: Sequence[str], categorical: Sequence[str],
                     categories: Mapping[str, Sequence[str]] | None = None,
                     optional: Sequence[str] = ()) -> EncodedReference:
    _require_columns(reference, [*numeric, *categorical], "reference")
    gaps = frozenset(optional)
    vocab: dict[str, dict[str, int]] = {}
    cat_codes: dict[str, np.ndarray] = {}
    for col in categorical:
        # the schema's categories first (stable codes), then anything else the data holds
        vocab[col] = {str(c): i for i, c in enumerate((categories or {}).get(col, []))}
        cat_codes[col] = _codes(reference[col], vocab[col], col, "reference", col in gaps)
    num_cols = {c: _numeric(reference, c, "reference", c in gaps) for c in numeric}
    cols = EncodedColumns(num_cols, cat_codes, len(reference))
    scale = {c: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for c, v in cols.numeric.items()}
    return EncodedReference(cols, vocab, list(numeric), list(categorical), scale, gaps)


def encode_current(ref: EncodedReference, current: pd.DataFrame) -> EncodedColumns:
    _require_columns(current, [*ref.numeric_features, *ref.categorical_features], "current")
    gaps = ref.optional
    return EncodedColumns(
        {c: _numeric(current, c, "current", c in gaps) for c in ref.numeric_features},
        {c: _codes(current[c], ref.vocab[c], c, "current", c in gaps) for c in ref.categorical_features},
        len(current))


def _require_columns(frame: pd.DataFrame, columns: Sequence[str], role: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DriftInputError(f"{role} data lacks feature columns {missing} "
                              f"(it has {list(frame.columns)[:30]})")


def shift_in_sd(w1: float, sd: float) -> float:
    """Wasserstein-1 distance in reference standard deviations (any change of a constant column: inf)."""
    if sd > 0:
        return w1 / sd
    return float("inf") if w1 > 0 else 0.0


def total_variation(ref_codes: np.ndarray, cur_codes: np.ndarray, n_categories: int) -> float:
    """Half the L1 distance between the category shares of two samples (0: same shares, 1: disjoint)."""
    p = np.bincount(ref_codes, minlength=n_categories) / max(len(ref_codes), 1)
    q = np.bincount(cur_codes, minlength=n_categories) / max(len(cur_codes), 1)
    return float(0.5 * np.abs(p - q).sum())


# -- the detector --------------------------------------------------------------------------------

class DriftDetector:
    """Tests windows against one encoded reference: build once per reference, :meth:`check` per window."""

    def __init__(self, reference: pd.DataFrame, numeric: Sequence[str], categorical: Sequence[str],
                 config: DriftConfig, *, categories: Mapping[str, Sequence[str]] | None = None,
                 reference_version: str | None = None, backend: Backend | None = None,
                 optional: Sequence[str] = ()) -> None:
        self.config = config
        self.reference_version = reference_version
        if len(reference) < config.min_window:
            raise DriftInputError(
                f"the reference has only {len(reference)} rows, fewer than monitoring.min_window "
                f"({config.min_window}): it cannot stand for the training distribution; check the model's "
                "reference/reference.parquet artifact")
        self.reference = encode_reference(reference, numeric, categorical, categories, optional)
        self.backend = backend or get_backend(config.backend)
        try:
            self._prepared = self.backend.prepare(self.reference.columns, config.p_value, config.correction)
        except GapsNotSupported as exc:
            raise DriftInputError(f"reference: {exc}") from exc

    @classmethod
    def from_schema(cls, reference: pd.DataFrame, schema: Any, config: DriftConfig,
                    **kwargs: Any) -> DriftDetector:
        return cls(reference, list(schema.numeric), list(schema.categorical), config,
                   categories=schema.categorical, optional=list(schema.missing), **kwargs)

    def check(self, current: pd.DataFrame, *, source: dict[str, Any] | None = None) -> DriftResult:
        cfg = self.config
        common = dict(reference_size=self.reference.columns.n_rows, reference_version=self.reference_version,
                      backend=self.backend.name, config=cfg, source=dict(source or {}))
        if len(current) < cfg.min_window:
            return DriftResult(
                status="not_enough_data", window_size=len(current),
                message=f"the window has {len(current)} rows; at least {cfg.min_window} are needed "
                        "(monitoring.min_window) for a test that can be trusted", **common)
        cur = encode_current(self.reference, current)
        try:
            outcome = self._prepared.test(cur)
        except GapsNotSupported as exc:
            raise DriftInputError(f"current window: {exc}") from exc
        ref = self.reference.columns
        w1 = outcome.wasserstein or {}
        features: list[FeatureDrift] = []
        for i, name in enumerate(outcome.features):
            stat, pval = float(outcome.statistics[i]), float(outcome.p_values[i])
            sig = bool(outcome.significant[i])
            if name in ref.numeric:
                dist = w1[name] if name in w1 else ks_and_wasserstein(ref.numeric[name], cur.numeric[name])[1]
                effect = shift_in_sd(dist, self.reference.scale[name])
                floor, kind, test = cfg.min_shift_sd, "numeric", "ks"
            else:
                k = len(self.reference.vocab[name])
                effect = total_variation(ref.categorical[name], cur.categorical[name], k)
                floor, kind, test = cfg.min_category_shift, "categorical", "chi2"
            features.append(FeatureDrift(name, kind, test, stat, pval, effect, floor, sig,  # type: ignore[arg-type]
                                         sig and effect >= floor))
        drifted = [f.feature for f in features if f.drift]
        held = [f.feature for f in features if f.significant and not f.drift]
        if drifted:
            msg = f"drift in {len(drifted)} of {len(features)} features: {', '.join(drifted)}"
        else:
            msg = f"no drift in {len(features)} features"
        if held:
            msg += f" (significant but below the effect-size floor: {', '.join(held)})"
        return DriftResult(status="drift" if drifted else "no_drift", window_size=len(current),
                           threshold=outcome.threshold, features=features, message=msg, **common)


def check_drift(reference: pd.DataFrame, current: pd.DataFrame, schema: Any, config: DriftConfig, *,
                reference_version: str | None = None, source: dict[str, Any] | None = None,
                backend: Backend | None = None) -> DriftResult:
    """One-shot check of ``current`` against ``reference`` on the schema's feature columns."""
    detector = DriftDetector.from_schema(reference, schema, config, reference_version=reference_version,
                                         backend=backend)
    return detector.check(current, source=source)
