"""Calibration of the synthetic-data model on a real customer table.

The synthetic generator (:mod:`churnops.data.generate`) is a class-conditional Gaussian copula. This module
fits it: for each class of the target (churned / stayed) it records

- each numeric column's marginal: exact value frequencies for integer columns with few distinct values
  (ages, counts, months), otherwise 201 quantile points (interpolated when sampling);
- each categorical column's category frequencies, in a *latent order* shared by both classes (categories
  sorted along the main axis of their association with the other columns, so that a Gaussian latent rank
  can carry that association: e.g. incomes ordered by credit limit and gender);
- the correlation matrix of the columns' normal scores, corrected so that samples drawn from the copula and
  pushed through the (often discrete) marginals reproduce the real table's normal-score correlations;

plus table-wide facts: the churn rate, the range of ids, each numeric column's decimals, mean and
standard deviation (drift options are expressed in those units), the source's column order, and the
accounting identities that hold on every row (``Avg_Open_To_Buy = Credit_Limit - Total_Revolving_Bal``,
``Avg_Utilization_Ratio = round(Total_Revolving_Bal / Credit_Limit, 3)``), found in the data rather than
hard-coded so another schema gets its own.

The result is a JSON document (``calibration.json``): summary statistics only, never rows. It is
deterministic: calibrating the same table with the same schema writes the same bytes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import special, stats

from churnops.io import write_json_atomic
from churnops.logs import get_logger
from churnops.settings import SchemaSettings

log = get_logger(__name__)

FORMAT_VERSION = 1
QUANTILE_POINTS = 201
MAX_DISCRETE_VALUES = 64  # integer columns with at most this many distinct values keep exact frequencies
MIN_CLASS_ROWS = 30  # fewer rows of a class than this cannot calibrate a correlation matrix
CORRECTION_ROUNDS = 6
CORRECTION_SAMPLE = 50_000
CLASSES = ("positive", "negative")


class CalibrationError(ValueError):
    """The calibration source or file is unusable; the message says where and what to do."""


def default_calibration_path() -> Path:
    """The calibration shipped with churnops (calibrated on the public BankChurners table)."""
    return Path(str(resources.files("churnops.data").joinpath("calibration.json")))


def recalibrate_hint(schema_note: str = "") -> str:
    return (
        "run `churnops data calibrate --source your.csv --out calibration.json` on a real table in the "
        f"configured schema{schema_note}, then `churnops data generate --calibration calibration.json ...`"
    )


# ------------------------------------------------------------------------------------------------------
# Math shared with the generator
# ------------------------------------------------------------------------------------------------------
def normal_scores(values: np.ndarray) -> np.ndarray:
    """Mid-rank normal scores: Phi^-1(rank / (n + 1)), ties sharing their mean rank."""
    ranks = stats.rankdata(values, method="average")
    return special.ndtri(ranks / (len(values) + 1.0))


def score_correlation(columns: list[np.ndarray]) -> np.ndarray:
    scores = np.column_stack([normal_scores(c) for c in columns])
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.corrcoef(scores, rowvar=False)
    # a constant column (e.g. a category absent from one class) has no correlation with anything
    corr = np.nan_to_num(corr, nan=0.0)
    np.fill_diagonal(corr, 1.0)
    return corr


def nearest_correlation(matrix: np.ndarray, floor: float = 1e-6) -> np.ndarray:
    """Symmetric, positive definite, unit diagonal: eigenvalues clipped at `floor`, then rescaled."""
    sym = (matrix + matrix.T) / 2.0
    vals, vecs = np.linalg.eigh(sym)
    fixed = (vecs * np.clip(vals, floor, None)) @ vecs.T
    d = np.sqrt(np.diag(fixed))
    out = fixed / np.outer(d, d)
    np.fill_diagonal(out, 1.0)
    return out


def correlation_root(matrix: np.ndarray) -> np.ndarray:
    """A matrix L with L @ L.T == matrix (symmetric square root: robust for near-singular matrices)."""
    vals, vecs = np.linalg.eigh((matrix + matrix.T) / 2.0)
    return vecs * np.sqrt(np.clip(vals, 0.0, None))


@dataclass(frozen=True)
class Marginal:
    """One column's distribution within one class: exact frequencies or interpolated quantiles."""

    kind: str  # "discrete" | "quantiles"
    values: np.ndarray
    cum: np.ndarray  # discrete: cumulative probability up to and including each value; quantiles: probs

    @classmethod
    def from_doc(cls, doc: dict[str, Any], truncated: bool = False) -> Marginal:
        """`truncated`: the column is drawn below a ceiling (use its ``draw_probs``: _truncation_probs)."""
        values = np.asarray(doc["values"], dtype=np.float64)
        if doc["kind"] == "discrete":
            cum = np.cumsum(np.asarray(doc["freq"], dtype=np.float64))
            cum /= cum[-1]
            return cls("discrete", values, cum)
        if truncated and "draw_probs" in doc:
            return cls("quantiles", values, np.asarray(doc["draw_probs"], dtype=np.float64))
        return cls("quantiles", values, np.linspace(0.0, 1.0, len(values)))

    def ppf(self, u: np.ndarray) -> np.ndarray:
        if self.kind == "discrete":
            idx = np.searchsorted(self.cum, u, side="right")
            return self.values[np.minimum(idx, len(self.values) - 1)]
        return np.interp(u, self.cum, self.values)

    def cdf(self, x: np.ndarray) -> np.ndarray:
        if self.kind == "discrete":
            idx = np.searchsorted(self.values, x, side="right") - 1
            return np.where(idx >= 0, self.cum[np.maximum(idx, 0)], 0.0)
        return np.interp(x, self.values, self.cum)


def categorical_ppf(u: np.ndarray, freq: np.ndarray) -> np.ndarray:
    """Latent uniform -> index in the latent category order."""
    cum = np.cumsum(freq)
    cum /= cum[-1]
    return np.minimum(np.searchsorted(cum, u, side="right"), len(freq) - 1)


# ------------------------------------------------------------------------------------------------------
# The calibration document
# ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Calibration:
    """A loaded calibration.json with the checks the generator needs."""

    doc: dict[str, Any]
    path: Path | None = None

    @classmethod
    def load(cls, path: Path | str | None = None) -> Calibration:
        p = Path(path) if path is not None else default_calibration_path()
        if not p.is_file():
            raise CalibrationError(f"calibration file not found: {p}; {recalibrate_hint()}")
        try:
            doc = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CalibrationError(f"calibration file {p} is not readable JSON ({exc}); "
                                   f"{recalibrate_hint()}") from exc
        found = doc.get("format") if isinstance(doc, dict) else None
        if found != FORMAT_VERSION:
            raise CalibrationError(f"calibration file {p} has format {found!r} (expected {FORMAT_VERSION}); "
                                   f"{recalibrate_hint()}")
        return cls(doc, p)

    @property
    def where(self) -> str:
        return str(self.path) if self.path else "the given calibration"

    def check_covers(self, schema: SchemaSettings) -> None:
        """Raise CalibrationError unless every column and category of `schema` is calibrated."""
        cal = self.doc["schema"]
        problems = []
        if cal["target"] != schema.target.model_dump(include={"column", "positive", "negative"}):
            problems.append(f"target {schema.target.column!r} "
                            f"({schema.target.positive!r}/{schema.target.negative!r}) is calibrated as "
                            f"{cal['target']['column']!r} ({cal['target']['positive']!r}/"
                            f"{cal['target']['negative']!r})")
        if cal["id_column"] != schema.id_column:
            problems.append(f"id column {schema.id_column!r} is calibrated as {cal['id_column']!r}")
        missing_num = [c for c in schema.numeric if c not in cal["numeric"]]
        if missing_num:
            problems.append(f"numeric columns not calibrated: {missing_num}")
        missing_cat = [c for c in schema.categorical if c not in cal["categorical"]]
        if missing_cat:
            problems.append(f"categorical columns not calibrated: {missing_cat}")
        for col, cats in schema.categorical.items():
            if col in cal["categorical"] and set(cats) != set(cal["categorical"][col]):
                extra = sorted(set(cats) - set(cal["categorical"][col]))
                gone = sorted(set(cal["categorical"][col]) - set(cats))
                problems.append(f"categories of {col!r} differ (not calibrated: {extra}; calibrated but "
                                f"no longer allowed: {gone})")
        if problems:
            raise CalibrationError(
                f"calibration {self.where} does not cover the configured schema: " + "; ".join(problems)
                + f". To generate tables in this schema, {recalibrate_hint()}"
            )


# ------------------------------------------------------------------------------------------------------
# Fitting
# ------------------------------------------------------------------------------------------------------
def _decimals(x: np.ndarray, max_decimals: int = 6) -> int:
    for d in range(max_decimals + 1):
        if np.all(np.abs(x - np.round(x, d)) <= 1e-9 * np.maximum(1.0, np.abs(x))):
            return d
    return max_decimals


def _round_sig(values: np.ndarray, digits: int = 10) -> list[float]:
    return [float(f"{v:.{digits}g}") for v in np.asarray(values, dtype=np.float64)]


def read_source(path: Path | str, schema: SchemaSettings) -> pd.DataFrame:
    """Read a real table for calibration: required columns present, labels known, values parseable."""
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"calibration source not found: {path}")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise CalibrationError(f"cannot read calibration source {path} as CSV: {exc}") from exc
    missing = [c for c in schema.required_columns if c not in frame.columns]
    if missing:
        raise CalibrationError(f"calibration source {path} lacks columns of the configured schema: {missing}")
    frame = frame[[c for c in frame.columns if c in set(schema.required_columns)]].copy()
    labels = {schema.target.positive, schema.target.negative}
    bad = sorted(set(frame[schema.target.column].unique()) - labels)
    if bad:
        raise CalibrationError(f"{path}: column {schema.target.column!r} holds labels other than "
                               f"{sorted(labels)}: {bad[:5]}")
    for col in schema.numeric:
        parsed = pd.to_numeric(frame[col].str.strip(), errors="coerce")
        if parsed.isna().any():
            examples = frame.loc[parsed.isna(), col].head(5).tolist()
            raise CalibrationError(f"{path}: numeric column {col!r} has values that are not numbers "
                                   f"(e.g. {examples}); fix or drop those rows before calibrating")
        frame[col] = parsed.astype(np.float64)
    for col, cats in schema.categorical.items():
        unknown = sorted(set(frame[col].unique()) - set(cats))
        if unknown:
            raise CalibrationError(f"{path}: column {col!r} has categories the schema does not allow: "
                                   f"{unknown[:5]} (allowed: {cats}); add them to params.yaml or fix "
                                   "the data")
    for side in CLASSES:
        label = getattr(schema.target, side)
        n = int((frame[schema.target.column] == label).sum())
        if n < MIN_CLASS_ROWS:
            raise CalibrationError(f"{path}: only {n} rows labelled {label!r}; calibration needs at least "
                                   f"{MIN_CLASS_ROWS} rows of each class")
    return frame


def _find_identities(frame: pd.DataFrame, schema: SchemaSettings,
                     decimals: dict[str, int]) -> dict[str, dict[str, Any]]:
    """Accounting identities that hold on every row: x = round(a / b, d) and x = a - b.

    Of the three columns of a difference, the one derived is the last declared in the schema that is
    not an input of a ratio; a derived column is never the input of another identity.
    """
    cols = list(schema.numeric)
    data = {c: frame[c].to_numpy(np.float64) for c in cols}
    ratios: dict[str, dict[str, Any]] = {}
    for x in cols:
        d = decimals[x]
        if d == 0 or d > 4 or np.ptp(data[x]) == 0:
            continue
        for a in cols:
            for b in cols:
                if len({x, a, b}) < 3 or np.any(data[b] == 0) or x in ratios:
                    continue
                if np.all(np.abs(data[x] - data[a] / data[b]) <= 0.5 * 10.0**-d + 1e-9):
                    ratios[x] = {"op": "ratio", "of": [a, b], "decimals": d}
    ratio_inputs = {c for spec in ratios.values() for c in spec["of"]}
    derived: dict[str, dict[str, Any]] = dict(ratios)
    seen: set[frozenset[str]] = set()
    for x in cols:
        for a in cols:
            for b in cols:
                triple = frozenset((x, a, b))
                if len(triple) < 3 or triple in seen:
                    continue
                tolerance = 1e-6 * np.maximum(1.0, np.abs(data[x]))
                if not np.all(np.abs(data[x] - (data[a] - data[b])) <= tolerance):
                    continue
                seen.add(triple)
                if triple & set(derived):
                    continue
                choices = [c for c in cols if c in triple and c not in ratio_inputs]
                if not choices:
                    continue
                target = choices[-1]
                # target = p - q with p the column that is the sum of the other two
                others = [c for c in cols if c in triple and c != target]
                p, q = (others if np.all(data[others[0]] >= data[others[1]] - 1e-9) else others[::-1])
                derived[target] = {"op": "difference", "of": [p, q], "decimals": decimals[target],
                                   "min": float(np.min(data[target]))}
    used = {c for spec in derived.values() for c in spec["of"]}
    return {k: v for k, v in derived.items() if k not in used}


def _category_order(frame: pd.DataFrame, schema: SchemaSettings, target: np.ndarray) -> dict[str, list[str]]:
    """Each categorical column's categories along the main axis of their association with the rest.

    Features of a row: numeric normal scores, the churn indicator and the other categorical columns'
    one-hot indicators (standardised). A category's profile is the mean of those over its rows; the
    categories are sorted by their profile's projection on the first principal axis of the profiles
    (weighted by frequency). Categories never seen go last.
    """
    feats = [normal_scores(frame[c].to_numpy(np.float64)) for c in schema.numeric]
    feats.append(target.astype(np.float64))
    onehots: dict[str, list[np.ndarray]] = {}
    for col, cats in schema.categorical.items():
        onehots[col] = [(frame[col].to_numpy() == cat).astype(np.float64) for cat in cats]
    order: dict[str, list[str]] = {}
    for col, cats in schema.categorical.items():
        parts = feats + [h for other, hs in onehots.items() if other != col for h in hs]
        mat = np.column_stack(parts)
        std = mat.std(axis=0)
        mat = (mat - mat.mean(axis=0)) / np.where(std > 0, std, 1.0)
        values = frame[col].to_numpy()
        seen = [c for c in cats if np.any(values == c)]
        weights = np.array([np.mean(values == c) for c in seen])
        profiles = np.array([mat[values == c].mean(axis=0) for c in seen])
        cov = (profiles * weights[:, None]).T @ profiles
        vals, vecs = np.linalg.eigh(cov)
        axis = vecs[:, -1]
        axis = axis if axis[np.argmax(np.abs(axis))] > 0 else -axis
        proj = profiles @ axis
        ranked = [seen[i] for i in np.argsort(proj, kind="stable")]
        order[col] = ranked + [c for c in cats if c not in seen]
    return order


def _fit_marginal(x: np.ndarray, support: np.ndarray | None) -> dict[str, Any]:
    if support is not None:
        counts = np.array([np.sum(x == v) for v in support], dtype=np.float64)
        return {"kind": "discrete", "values": _round_sig(support), "freq": _round_sig(counts / len(x), 8)}
    q = np.quantile(x, np.linspace(0.0, 1.0, QUANTILE_POINTS))
    return {"kind": "quantiles", "values": _round_sig(q)}


def _latent_values(frame: pd.DataFrame, columns: list[str], numeric: set[str],
                   order: dict[str, list[str]]) -> list[np.ndarray]:
    out = []
    for c in columns:
        if c in numeric:
            out.append(frame[c].to_numpy(np.float64))
        else:
            pos = {cat: i for i, cat in enumerate(order[c])}
            out.append(frame[c].map(pos).to_numpy(np.float64))
    return out


def _truncation_probs(values: np.ndarray, ceiling: np.ndarray, u: np.ndarray,
                      start: np.ndarray | None = None, rounds: int = 30) -> np.ndarray:
    """Cumulative probabilities for a column drawn below a per-row ceiling that keep its observed quantiles.

    For ``x = p - q >= minimum`` the generator draws ``q`` from its distribution truncated at
    ``ceiling = p - minimum``. Truncating the observed distribution itself would push ``q`` down (fewer
    high balances than in the real table), so the mass between each pair of quantile points is re-weighted
    (a fixed-point iteration on simulated draws: `ceiling` and the uniforms `u` of q) until the truncated
    draws put an equal share of rows between each pair again. `start`: probabilities to start from.
    """
    segments = len(values) - 1
    target = np.full(segments, 1.0 / segments)
    mass = target.copy() if start is None else np.maximum(np.diff(start), 0.0)
    for _ in range(rounds):
        probs = np.concatenate([[0.0], np.cumsum(mass)])
        probs /= probs[-1]
        drawn = u * Marginal("quantiles", values, probs).cdf(ceiling)
        seg = np.clip(np.searchsorted(probs, drawn, side="right") - 1, 0, segments - 1)
        achieved = np.bincount(seg, minlength=segments) / len(seg)
        mass = np.where(achieved > 0, mass * target / np.maximum(achieved, 1e-12), mass)
        mass /= mass.sum()
    probs = np.concatenate([[0.0], np.cumsum(mass)])
    return probs / probs[-1]


def _fit_copula(target_corr: np.ndarray, columns: list[str], numeric: set[str],
                marginals: dict[str, dict[str, Any]], cat_freq: dict[str, list[float]],
                truncations: list[tuple[str, str, float]], seed: int, sample: int) -> np.ndarray:
    """Latent correlation whose samples, after the marginals, have the target normal-score correlation.

    Samples are mapped exactly as the generator maps them, truncations included (`truncations`: (q, p,
    minimum) for ``q <= p - minimum``); the truncated columns' draw probabilities (``draw_probs`` in their
    marginal) are re-fitted in each round. Common random numbers across rounds keep the iteration smooth.
    """
    rng = np.random.default_rng(seed)
    normals = rng.standard_normal((sample, len(columns)))
    freqs = {c: np.asarray(cat_freq[c], dtype=np.float64) for c in columns if c not in numeric}
    truncated = {q: (p, minimum) for q, p, minimum in truncations
                 if marginals[q]["kind"] == "quantiles" and p in columns and q in columns}
    latent = nearest_correlation(target_corr)
    for final in [False] * CORRECTION_ROUNDS + [True]:
        u = special.ndtr(normals @ correlation_root(latent).T)
        mapped: dict[str, np.ndarray] = {}
        for j, c in enumerate(columns):
            if c not in numeric:
                mapped[c] = categorical_ppf(u[:, j], freqs[c])
            elif c not in truncated:
                mapped[c] = Marginal.from_doc(marginals[c]).ppf(u[:, j])
        for q, (p, minimum) in truncated.items():
            values = np.asarray(marginals[q]["values"], dtype=np.float64)
            uq = u[:, columns.index(q)]
            start = np.asarray(marginals[q]["draw_probs"]) if "draw_probs" in marginals[q] else None
            probs = _truncation_probs(values, mapped[p] - minimum, uq, start, 30 if start is None else 8)
            marginals[q]["draw_probs"] = _round_sig(probs, 10)
            fitted = Marginal.from_doc(marginals[q], truncated=True)
            mapped[q] = fitted.ppf(uq * fitted.cdf(mapped[p] - minimum))
        if final:
            break
        achieved = score_correlation([mapped[c] for c in columns])
        latent = nearest_correlation(np.clip(latent + (target_corr - achieved), -0.999, 0.999))
    return latent


def calibrate_frame(frame: pd.DataFrame, schema: SchemaSettings, source_name: str = "",
                    source_sha256: str = "", sample: int = CORRECTION_SAMPLE) -> dict[str, Any]:
    """Fit the generator's model on a parsed table (as returned by :func:`read_source`).

    `sample`: simulated rows per class used to fit the latent correlations (more: closer, slower).
    """
    tcol = schema.target.column
    is_pos = (frame[tcol] == schema.target.positive).to_numpy()
    numeric = list(schema.numeric)
    numeric_set = set(numeric)
    decimals = {}
    for c in numeric:
        x = frame[c].to_numpy(np.float64)
        decimals[c] = 0 if schema.numeric[c].integer else _decimals(x)
    derived = _find_identities(frame, schema, decimals)
    order = _category_order(frame, schema, is_pos)
    supports: dict[str, np.ndarray | None] = {}
    for c in numeric:
        uniq = np.unique(frame[c].to_numpy(np.float64))
        supports[c] = uniq if decimals[c] == 0 and len(uniq) <= MAX_DISCRETE_VALUES else None
    columns = [*numeric, *schema.categorical]

    ids = pd.to_numeric(frame[schema.id_column], errors="coerce")
    id_doc: dict[str, Any]
    if ids.notna().all() and (ids == ids.round()).all() and ids.min() >= 0:
        id_doc = {"min": int(ids.min()), "max": int(ids.max())}
    else:
        id_doc = {"min": 100_000_000, "max": 999_999_999}

    classes: dict[str, Any] = {}
    for i, side in enumerate(CLASSES):
        part = frame[is_pos] if side == "positive" else frame[~is_pos]
        marginals = {c: _fit_marginal(part[c].to_numpy(np.float64), supports[c]) for c in numeric}
        cat_freq = {c: _round_sig([np.mean(part[c].to_numpy() == cat) for cat in order[c]], 8)
                    for c in schema.categorical}
        target_corr = score_correlation(_latent_values(part, columns, numeric_set, order))
        truncations = [(spec["of"][1], spec["of"][0], spec["min"]) for spec in derived.values()
                       if spec["op"] == "difference"]
        latent = _fit_copula(target_corr, columns, numeric_set, marginals, cat_freq, truncations, seed=i,
                             sample=sample)
        classes[side] = {
            "label": getattr(schema.target, side),
            "rows": len(part),
            "numeric": marginals,
            "categorical": cat_freq,
            "observed_score_correlation": [_round_sig(row, 6) for row in target_corr],
            "latent_correlation": [_round_sig(row, 8) for row in latent],
        }
        log.info("calibrate.class", label=getattr(schema.target, side), rows=len(part))

    return {
        "format": FORMAT_VERSION,
        "description": "Class-conditional Gaussian copula for churnops synthetic tables: summary statistics "
                       "of the source, no rows. Written by `churnops data calibrate`.",
        "source": {"name": source_name, "sha256": source_sha256, "rows": len(frame)},
        "schema": {
            "id_column": schema.id_column,
            "target": schema.target.model_dump(include={"column", "positive", "negative"}),
            "numeric": numeric,
            "categorical": {c: list(cats) for c, cats in schema.categorical.items()},
        },
        "column_order": [c for c in frame.columns if c in set(schema.required_columns)],
        "id": id_doc,
        "churn_rate": round(float(is_pos.mean()), 8),
        "numeric": {
            c: {"decimals": decimals[c],
                "mean": _round_sig([frame[c].mean()])[0],
                "std": _round_sig([frame[c].std(ddof=0)])[0]}
            for c in numeric
        },
        "derived": derived,
        "copula_columns": columns,
        "category_order": order,
        "classes": classes,
    }


def calibrate(source: Path | str, schema: SchemaSettings, out: Path | str | None = None,
              sample: int = CORRECTION_SAMPLE) -> Path:
    """Calibrate on the CSV `source`, write the calibration (default: the packaged one), return its path."""
    source = Path(source)
    frame = read_source(source, schema)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    doc = calibrate_frame(frame, schema, source_name=source.name, source_sha256=digest, sample=sample)
    dest = Path(out) if out is not None else default_calibration_path()
    write_json_atomic(dest, doc)
    log.info("calibrate.written", path=str(dest), rows=len(frame), churn_rate=doc["churn_rate"],
             derived=sorted(doc["derived"]))
    return dest
