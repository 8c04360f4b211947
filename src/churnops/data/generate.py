"""Synthetic customer tables in the configured schema, calibrated on the real one, with drift options.

The model is a class-conditional Gaussian copula fitted by :mod:`churnops.data.calibrate` and stored in
``calibration.json``:

1. each row's label is drawn with the calibrated churn rate (or ``churn_rate``);
2. per class, correlated normal scores are drawn for every numeric column and every categorical column
   (a latent rank) with that class's correlation matrix, and mapped to values through the class's
   marginals: exact frequencies for small integer columns, 201 interpolated quantile points for the others,
   cumulative category frequencies for categories;
3. the accounting identities found at calibration are enforced: a difference ``x = p - q`` (the
   ``Avg_Open_To_Buy = Credit_Limit - Total_Revolving_Bal`` of BankChurners) keeps ``x`` at or above its
   observed minimum by drawing ``q`` from its distribution truncated at ``p - min``; a ratio
   (``Avg_Utilization_Ratio``) is recomputed and rounded like the source;
4. values are rounded to the source's decimals (integer columns are integers) and kept within the
   schema's ranges; ids are unique.

Drift (:class:`DriftSpec`), for monitoring work: ``shift`` moves a numeric column's mean by k of its
(calibrated) standard deviations, ``scale`` multiplies its spread around its calibrated mean, ``mix``
sets category probabilities (the class-conditional structure is kept: categories are re-weighted, not
re-drawn), ``churn_rate`` changes the label prior. Derived columns follow their inputs and cannot be
drifted themselves.

The same seed gives the same table, byte for byte. The CSV is written like the real file: header and
strings quoted, numbers bare, integer-valued numbers without a trailing ``.0``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import special

from churnops.data.calibrate import (
    CLASSES,
    Calibration,
    Marginal,
    categorical_ppf,
    correlation_root,
)
from churnops.io import atomic_path
from churnops.logs import get_logger, progress
from churnops.settings import SchemaSettings

log = get_logger(__name__)

CSV_CHUNK_ROWS = 100_000
GENERATE_CHUNK_ROWS = 250_000
MIX_ITERATIONS = 200


# ------------------------------------------------------------------------------------------------------
# Drift options
# ------------------------------------------------------------------------------------------------------
def _split_item(item: str, option: str, metavar: str) -> tuple[str, str]:
    column, sep, value = item.partition("=")
    if not sep or not column.strip() or not value.strip():
        raise ValueError(f"{option} {item!r}: expected {metavar}")
    return column.strip(), value.strip()


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{what}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{what}: {text!r} is not a finite number")
    return value


@dataclass(frozen=True)
class DriftSpec:
    """Requested distribution changes. Build with :meth:`parse` (CLI strings) or directly."""

    shifts: Mapping[str, float] = field(default_factory=dict)  # column -> standard deviations
    scales: Mapping[str, float] = field(default_factory=dict)  # column -> spread factor
    # column -> {category: weight}: the probability of each listed category, the others sharing the rest
    # in their calibrated proportions; when every category is listed, relative weights (normalised)
    mixes: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    @classmethod
    def parse(cls, shifts: Iterable[str] = (), scales: Iterable[str] = (), mixes: Iterable[str] = (),
              schema: SchemaSettings | None = None) -> DriftSpec:
        """Parse ``COLUMN=SIGMAS``, ``COLUMN=FACTOR`` and ``COLUMN=CAT:WEIGHT,...`` items.

        Raises ValueError naming the offending item. With `schema`, columns and categories are checked too.
        """
        parsed_shifts: dict[str, float] = {}
        for item in shifts:
            col, value = _split_item(item, "--shift", "COLUMN=SIGMAS (e.g. Total_Trans_Ct=-0.5)")
            if col in parsed_shifts:
                raise ValueError(f"--shift {item!r}: column {col!r} is shifted twice")
            parsed_shifts[col] = _number(value, f"--shift {item!r}")
        parsed_scales: dict[str, float] = {}
        for item in scales:
            col, value = _split_item(item, "--scale", "COLUMN=FACTOR (e.g. Credit_Limit=1.5)")
            if col in parsed_scales:
                raise ValueError(f"--scale {item!r}: column {col!r} is scaled twice")
            factor = _number(value, f"--scale {item!r}")
            if factor <= 0:
                raise ValueError(f"--scale {item!r}: the factor must be positive, got {factor}")
            parsed_scales[col] = factor
        parsed_mixes: dict[str, dict[str, float]] = {}
        for item in mixes:
            col, value = _split_item(item, "--mix", "COLUMN=CATEGORY:WEIGHT[,CATEGORY:WEIGHT...] "
                                                    "(e.g. Card_Category=Blue:0.5,Silver:0.3)")
            if col in parsed_mixes:
                raise ValueError(f"--mix {item!r}: column {col!r} is mixed twice")
            weights: dict[str, float] = {}
            for part in value.split(","):
                cat, sep, weight = part.rpartition(":")
                if not sep or not cat.strip():
                    raise ValueError(f"--mix {item!r}: {part!r} is not CATEGORY:WEIGHT")
                cat = cat.strip()
                if cat in weights:
                    raise ValueError(f"--mix {item!r}: category {cat!r} is given twice")
                w = _number(weight.strip(), f"--mix {item!r}, category {cat!r}")
                if w < 0:
                    raise ValueError(f"--mix {item!r}: weight of {cat!r} must not be negative, got {w}")
                weights[cat] = w
            parsed_mixes[col] = weights
        spec = cls(parsed_shifts, parsed_scales, parsed_mixes)
        if schema is not None:
            spec.validate(schema)
        return spec

    def __bool__(self) -> bool:
        return bool(self.shifts or self.scales or self.mixes)

    def validate(self, schema: SchemaSettings) -> None:
        """Raise ValueError naming each column or category the schema does not have."""
        for option, cols in (("--shift", self.shifts), ("--scale", self.scales)):
            for col in cols:
                if col in schema.categorical:
                    raise ValueError(f"{option} {col}: {col!r} is categorical; use --mix to drift it")
                if col not in schema.numeric:
                    raise ValueError(f"{option} {col}: unknown column {col!r}; numeric columns are "
                                     f"{list(schema.numeric)}")
        for col, weights in self.mixes.items():
            if col in schema.numeric:
                raise ValueError(f"--mix {col}: {col!r} is numeric; use --shift or --scale to drift it")
            if col not in schema.categorical:
                raise ValueError(f"--mix {col}: unknown column {col!r}; categorical columns are "
                                 f"{list(schema.categorical)}")
            allowed = schema.categorical[col]
            for cat in weights:
                if cat not in allowed:
                    raise ValueError(f"--mix {col}: unknown category {cat!r} of {col!r}; allowed: {allowed}")
            total = sum(weights.values())
            if len(weights) == len(allowed):
                if total <= 0:
                    raise ValueError(f"--mix {col}: the weights of all categories sum to 0")
            elif total > 1 + 1e-9:
                raise ValueError(f"--mix {col}: weights sum to {total:g} > 1 while other categories "
                                 f"({[c for c in allowed if c not in weights]}) keep a share; list every "
                                 "category to give relative weights")

    def to_dict(self) -> dict[str, Any]:
        return {"shifts": dict(self.shifts), "scales": dict(self.scales),
                "mixes": {k: dict(v) for k, v in self.mixes.items()}}


# ------------------------------------------------------------------------------------------------------
# Generation
# ------------------------------------------------------------------------------------------------------
def _mix_weights(target: np.ndarray, class_freq: list[np.ndarray],
                 class_share: list[float]) -> list[np.ndarray]:
    """Per-class category probabilities, re-weighted so that the mixture over classes equals `target`.

    Every class's probabilities are multiplied by the same per-category factor (the association between
    category and label is kept); the factors are found by a fixed-point iteration.
    """
    freqs = [np.where(target > 0, np.maximum(f, 1e-9), f) for f in class_freq]
    w = np.ones_like(target)
    for _ in range(MIX_ITERATIONS):
        adjusted = [f * w / np.sum(f * w) for f in freqs]
        achieved = sum(s * a for s, a in zip(class_share, adjusted, strict=True))
        with np.errstate(divide="ignore", invalid="ignore"):
            w = np.where(achieved > 0, w * target / achieved, 0.0)
    return [f * w / np.sum(f * w) for f in freqs]


def _mix_target(weights: Mapping[str, float], order: list[str], overall: np.ndarray) -> np.ndarray:
    given = np.array([weights.get(c, np.nan) for c in order])
    listed = ~np.isnan(given)
    if listed.all():
        return given / given.sum()
    rest = 1.0 - given[listed].sum()
    others = np.where(listed, 0.0, overall)
    share = others / others.sum() if others.sum() > 0 else np.where(listed, 0.0, 1.0 / (~listed).sum())
    return np.where(listed, np.nan_to_num(given), rest * share)


def _round(x: np.ndarray, decimals: int) -> np.ndarray:
    return np.round(x, decimals) + 0.0  # + 0.0 turns -0.0 into 0.0


def _clip_to_schema(x: np.ndarray, spec: Any) -> np.ndarray:
    lo = -np.inf if spec.min is None else spec.min
    hi = np.inf if spec.max is None else spec.max
    return np.clip(x, lo, hi)


def generate(schema: SchemaSettings, rows: int, seed: int, drift: DriftSpec | None = None,
             churn_rate: float | None = None, calibration: Calibration | Path | str | None = None
             ) -> pd.DataFrame:
    """A synthetic table of `rows` customers in `schema`: id, target, features, in the source's column order.

    `calibration` is a loaded :class:`Calibration` or a path (default: the packaged calibration.json).
    Raises CalibrationError (a ValueError) when the calibration does not cover the schema, ValueError for
    bad arguments or drift options.
    """
    started = time.perf_counter()
    if rows < 1:
        raise ValueError(f"rows must be at least 1, got {rows}")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    cal = calibration if isinstance(calibration, Calibration) else Calibration.load(calibration)
    cal.check_covers(schema)
    doc = cal.doc
    drift = drift or DriftSpec()
    drift.validate(schema)
    rate = doc["churn_rate"] if churn_rate is None else float(churn_rate)
    if not 0 < rate < 1:
        raise ValueError(f"churn_rate must be strictly between 0 and 1, got {churn_rate}")

    numeric = list(schema.numeric)
    derived = {c: spec for c, spec in doc["derived"].items()
               if c in schema.numeric and all(s in schema.numeric for s in spec["of"])}
    drifted_derived = sorted(c for c in (*drift.shifts, *drift.scales) if c in derived)
    if drifted_derived:
        described = [f"{c} (= {derived[c]['of'][0]} {'/' if derived[c]['op'] == 'ratio' else '-'} "
                     f"{derived[c]['of'][1]})" for c in drifted_derived]
        raise ValueError(f"cannot drift derived columns {', '.join(described)}: they follow their inputs; "
                         "drift the input columns instead")
    # x = p - q >= minimum: q is drawn below p - minimum (whether or not x itself is in the schema)
    truncated = {spec["of"][1]: (spec["of"][0], spec["min"]) for spec in doc["derived"].values()
                 if spec["op"] == "difference" and all(c in schema.numeric for c in spec["of"])}

    copula_cols = [c for c in doc["copula_columns"] if c in schema.numeric or c in schema.categorical]
    index = [doc["copula_columns"].index(c) for c in copula_cols]
    rng = np.random.default_rng(seed)
    is_pos = rng.random(rows) < rate
    shares = [rate, 1.0 - rate]

    # category probabilities per class, in latent order, after any mix drift
    cat_freq: dict[str, list[np.ndarray]] = {}
    for col in schema.categorical:
        freqs = [np.asarray(doc["classes"][side]["categorical"][col], dtype=np.float64) for side in CLASSES]
        freqs = [f / f.sum() for f in freqs]
        if col in drift.mixes:
            overall = shares[0] * freqs[0] + shares[1] * freqs[1]
            target = _mix_target(drift.mixes[col], doc["category_order"][col], overall)
            freqs = _mix_weights(target, freqs, shares)
        cat_freq[col] = freqs

    values = {c: np.empty(rows, dtype=np.float64) for c in numeric}
    codes = {c: np.empty(rows, dtype=np.int64) for c in schema.categorical}
    to_schema = {col: np.array([cats.index(cat) for cat in doc["category_order"][col]])
                 for col, cats in schema.categorical.items()}
    for k, side in enumerate(CLASSES):
        where = np.flatnonzero(is_pos if side == "positive" else ~is_pos)
        cls_doc = doc["classes"][side]
        latent = np.asarray(cls_doc["latent_correlation"], dtype=np.float64)[np.ix_(index, index)]
        root = correlation_root(latent)
        marginals = {c: Marginal.from_doc(cls_doc["numeric"][c], truncated=c in truncated) for c in numeric}
        for start in range(0, len(where), GENERATE_CHUNK_ROWS):  # chunks bound the memory of the draws
            part = where[start:start + GENERATE_CHUNK_ROWS]
            u = special.ndtr(rng.standard_normal((len(part), len(copula_cols))) @ root.T)
            drawn: dict[str, np.ndarray] = {}
            for j, col in enumerate(copula_cols):
                if col in schema.categorical:
                    codes[col][part] = to_schema[col][categorical_ppf(u[:, j], cat_freq[col][k])]
                elif col not in truncated:
                    drawn[col] = marginals[col].ppf(u[:, j])
            for col, (p, minimum) in truncated.items():
                ceiling = marginals[col].cdf(drawn[p] - minimum)
                drawn[col] = marginals[col].ppf(u[:, copula_cols.index(col)] * ceiling)
            for col in numeric:
                values[col][part] = drawn[col]

    # drift, rounding, ranges; then identities
    num_meta = doc["numeric"]
    decimals = {c: 0 if schema.numeric[c].integer else int(num_meta[c]["decimals"]) for c in numeric}
    for col in numeric:
        if col in derived:
            continue
        x = values[col]
        if col in drift.scales:
            x = num_meta[col]["mean"] + drift.scales[col] * (x - num_meta[col]["mean"])
        if col in drift.shifts:
            x = x + drift.shifts[col] * num_meta[col]["std"]
        values[col] = _round(_clip_to_schema(x, schema.numeric[col]), decimals[col])
    for col, (p, minimum) in truncated.items():
        lo = schema.numeric[col].min if schema.numeric[col].min is not None else -np.inf
        step = 10.0 ** -decimals[col]
        ceiling = np.floor(np.round((values[p] - minimum) / step, 6)) * step
        values[col] = _round(np.clip(values[col], None, np.maximum(ceiling, lo)), decimals[col])
    for col, spec in derived.items():
        a, b = values[spec["of"][0]], values[spec["of"][1]]
        if spec["op"] == "difference":
            x = a - b
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                x = np.where(b != 0, a / b, 0.0)
        values[col] = _round(_clip_to_schema(x, schema.numeric[col]), decimals[col])

    columns: dict[str, Any] = {}
    id_doc = doc["id"]
    span = max(int(id_doc["max"]) - int(id_doc["min"]) + 1, 10 * rows)
    ids = rng.choice(span, size=rows, replace=False).astype(np.int64)
    columns[schema.id_column] = ids + int(id_doc["min"])
    labels = np.array([schema.target.negative, schema.target.positive], dtype=object)
    columns[schema.target.column] = labels[is_pos.astype(np.int64)]
    for col in numeric:
        columns[col] = values[col].astype(np.int64) if decimals[col] == 0 else values[col]
    for col, cats in schema.categorical.items():
        columns[col] = np.array(cats, dtype=object)[codes[col]]
    order = [c for c in doc["column_order"] if c in columns]
    order += [c for c in columns if c not in order]
    frame = pd.DataFrame({c: columns[c] for c in order}, copy=False)
    log.info("generate.done", rows=rows, seed=seed, churn_rate=round(float(is_pos.mean()), 4),
             drift=drift.to_dict() if drift else None, seconds=round(time.perf_counter() - started, 2))
    return frame


# ------------------------------------------------------------------------------------------------------
# CSV in the real file's format
# ------------------------------------------------------------------------------------------------------
def _quote(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def _fixed(k: np.ndarray, decimals: int) -> np.ndarray:
    """Integers k / 10**decimals as ASCII bytes like the real file: no exponent, trailing zeros or '.0'."""
    text = (np.abs(k) // 10**decimals).astype(bytes)
    if decimals:
        frac_codes, frac_inverse = np.unique(np.abs(k) % 10**decimals, return_inverse=True)
        suffix = np.array([f".{f:0{decimals}d}".rstrip("0").rstrip(".").encode()
                           for f in frac_codes.tolist()], dtype=bytes)
        text = np.char.add(text, suffix[frac_inverse])
    if np.any(k < 0):
        text = np.where(k < 0, np.char.add(b"-", text), text)
    return text


def _distinct(k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct values, index of each row's value in them) without sorting; ids are kept row by row."""
    if len(k) == 0:
        return k, np.zeros(0, dtype=np.int64)
    lo, hi = int(k.min()), int(k.max())
    if hi - lo >= max(4 * len(k), 1 << 16):  # mostly distinct (ids): print every row
        return k, np.arange(len(k))
    present = np.zeros(hi - lo + 1, dtype=bool)
    present[k - lo] = True
    return np.flatnonzero(present) + lo, (np.cumsum(present) - 1)[k - lo]


@dataclass(frozen=True)
class _EncodedColumn:
    """A column as the table of its distinct printed cells (bytes, zero-padded) plus a code per row."""

    table: np.ndarray  # uint8 [distinct, width]
    codes: np.ndarray  # int [rows]

    @classmethod
    def of(cls, cells: np.ndarray, codes: np.ndarray) -> _EncodedColumn:
        if len(cells) == 0:
            cells = np.array([b""], dtype="S1")
        widest = max(int(np.char.str_len(cells).max()), 1)
        cells = np.ascontiguousarray(cells.astype(f"S{widest}"))
        return cls(cells.view(np.uint8).reshape(len(cells), widest), codes)


def _encode_column(series: pd.Series) -> _EncodedColumn:
    """Printed like the real file: strings quoted; numbers bare, integer-valued ones without '.0'.

    Floats keep the fewest decimals (at most 6) that represent every value of the column exactly, else
    Python's shortest repr.
    """
    x = series.to_numpy()
    if pd.api.types.is_bool_dtype(series.dtype) or not pd.api.types.is_numeric_dtype(series.dtype):
        codes, uniques = pd.factorize(series, use_na_sentinel=False)
        return _EncodedColumn.of(np.array([_quote(str(u)).encode() for u in uniques], dtype=bytes), codes)
    if pd.api.types.is_integer_dtype(series.dtype):
        k, decimals = x.astype(np.int64), 0
    else:
        finite = np.isfinite(x)
        decimals = next((d for d in range(7) if np.array_equal(x[finite], np.round(x[finite], d))), None)
        if decimals is None or not finite.all():
            distinct, inverse = np.unique(x, return_inverse=True)
            cells = [repr(v).removesuffix(".0").encode() for v in distinct.tolist()]
            return _EncodedColumn.of(np.array(cells, dtype=bytes), inverse)
        k = np.rint(x * 10.0**decimals).astype(np.int64)
    distinct, inverse = _distinct(k)
    return _EncodedColumn.of(_fixed(distinct, decimals), inverse)


def _csv_rows(columns: list[_EncodedColumn], rows: slice) -> bytes:
    """The CSV lines of a row range, assembled by numpy.

    Each row is laid out at fixed width (every cell zero-padded to its column's widest, followed by its
    separator), then the zero bytes are dropped: what remains is the cells joined by commas, one line each.
    """
    codes = [c.codes[rows] for c in columns]
    width = sum(c.table.shape[1] + 1 for c in columns)
    grid = np.zeros((len(codes[0]) if codes else 0, width), dtype=np.uint8)
    at = 0
    for column, k in zip(columns, codes, strict=True):
        w = column.table.shape[1]
        grid[:, at:at + w] = column.table[k]
        grid[:, at + w] = ord(",")
        at += w + 1
    grid[:, -1] = ord("\n")
    flat = grid.ravel()
    return flat[flat != 0].tobytes()


def write_csv(frame: pd.DataFrame, out: Path | str) -> Path:
    """Write `frame` atomically like BankChurners.csv: quoted header and strings, bare numbers, LF.

    Text must not contain NUL bytes (none of a customer table's cells do).
    """
    out = Path(out)
    columns = [_encode_column(frame[c]) for c in frame.columns]
    with atomic_path(out) as tmp, open(tmp, "wb") as fh:
        fh.write((",".join(_quote(str(c)) for c in frame.columns) + "\n").encode())
        starts = range(0, len(frame), CSV_CHUNK_ROWS)
        for start in progress(starts, task=f"write {out.name}", total=len(starts)):
            fh.write(_csv_rows(columns, slice(start, start + CSV_CHUNK_ROWS)))
    return out


def generate_to_csv(schema: SchemaSettings, rows: int, seed: int, out: Path | str,
                    drift: DriftSpec | None = None, churn_rate: float | None = None,
                    calibration: Calibration | Path | str | None = None) -> Path:
    """:func:`generate` and write the table to `out` (atomically). Returns the path."""
    frame = generate(schema, rows, seed, drift=drift, churn_rate=churn_rate, calibration=calibration)
    started = time.perf_counter()
    path = write_csv(frame, out)
    log.info("generate.written", path=str(path), rows=rows, seconds=round(time.perf_counter() - started, 2))
    return path
