"""Anomalous customers: an Isolation Forest fitted on the champion's reference at training time.

``fit_outlier_detector(reference, schema, seed)`` encodes rows with the model's own
:class:`~churnops.features.FeatureEncoder` (numeric columns, ratios, one-hot categories), fits
scikit-learn's ``IsolationForest`` and compiles its trees into flat numpy arrays. The compiled
:class:`OutlierDetector` scores rows without scikit-learn or joblib (its trees are walked by the compiled
kernel of :mod:`churnops.trees`: microseconds for one row, where ``IsolationForest.score_samples`` took
about 15 ms), so /predict can afford it; scores equal scikit-learn's
(``tests/churnops/test_outliers.py``). It lives in the core so that serving and batch scoring
can use it; it is saved with each candidate model as the run artifact ``outliers/isolation_forest.npz``.

Score: the anomaly score of the Isolation Forest paper, ``2 ** (-mean path length / c(max_samples))``,
in (0, 1]: about 0.5 or less for ordinary rows, towards 1 for rows that are isolated quickly. A row is
flagged when its score is above the threshold that flags ``contamination`` of the reference rows.

An Isolation Forest cannot see *how far* outside the training range a value lies: a point beyond every
training value follows the same branches as the most extreme training points, so a credit limit of
900,000 scores like the highest limits seen in training (and BankChurners caps limits at 34,516, so the
top is dense). The detector therefore also flags rows with a numeric value outside the reference's range
widened by ``range_margin`` of its span on each side, and names those columns (``out_of_range``).

Saved as one ``.npz`` file (arrays plus a JSON header; loaded with ``allow_pickle=False``, so loading
runs no code and needs no scikit-learn version match).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from churnops.features import FeatureEncoder
from churnops.io import atomic_path
from churnops.trees import LEAF, TreeEnsemble

FORMAT = "churnops-isolation-forest/1"


def _average_path_length(n: np.ndarray) -> np.ndarray:
    """c(n): the average path length of an unsuccessful search in a binary search tree of n points."""
    n = np.asarray(n, dtype=np.float64)
    out = np.zeros_like(n)
    out[n == 2] = 1.0
    big = n > 2
    out[big] = 2.0 * (np.log(n[big] - 1.0) + np.euler_gamma) - 2.0 * (n[big] - 1.0) / n[big]
    return out


@dataclass(frozen=True)
class Anomaly:
    score: float  # Isolation Forest anomaly score in (0, 1]
    is_outlier: bool  # score above the cutoff, or a value outside the reference range
    out_of_range: tuple[str, ...] = ()  # numeric columns outside the (widened) reference range

    def to_dict(self) -> dict[str, Any]:
        return {"score": round(self.score, 6), "is_outlier": self.is_outlier,
                "out_of_range": list(self.out_of_range)}


class OutlierDetector:
    """A compiled Isolation Forest: every tree's nodes in flat arrays, traversed for all trees at once."""

    def __init__(self, *, encoder_config: dict[str, Any], feature: np.ndarray, threshold: np.ndarray,
                 left: np.ndarray, right: np.ndarray, leaf_depth: np.ndarray, roots: np.ndarray,
                 max_depth: int, normaliser: float, cutoff: float, meta: dict[str, Any],
                 range_low: np.ndarray, range_high: np.ndarray) -> None:
        self.encoder_config = encoder_config
        self.encoder = FeatureEncoder(**encoder_config).fit()
        self.feature, self.split = feature, threshold
        self.left, self.right = left, right
        self.leaf_depth = leaf_depth  # at leaves: node depth + c(training rows in the leaf) - 1
        self.roots = roots
        self.max_depth = max_depth
        self.normaliser = normaliser  # n_trees * c(max_samples)
        self.cutoff = cutoff  # anomaly score above which a row is an outlier
        self.meta = meta
        self.range_low, self.range_high = range_low, range_high  # per numeric column (encoded first)
        self.range_columns = list(encoder_config["numeric"])
        self._low, self._high = range_low.tolist(), range_high.tolist()
        ids = np.arange(left.shape[0])
        is_leaf = left == ids
        # the same compiled kernel as the churn models (leaves are marked -1 there, self-pointing on disk)
        self.trees = TreeEnsemble(
            feature=feature.astype(np.int32), threshold=threshold.astype(np.float64),
            left=np.where(is_leaf, LEAF, left).astype(np.int32),
            right=np.where(is_leaf, LEAF, right).astype(np.int32),
            default_left=np.zeros(left.shape[0], dtype=bool), value=leaf_depth.astype(np.float64),
            roots=roots.astype(np.int32), strict=False, base=0.0, link="mean",
            n_features=len(self.encoder.feature_names_))

    # -- scoring ---------------------------------------------------------------------------------
    def score_matrix(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        """Anomaly scores of encoded rows (higher: more anomalous)."""
        depths = self.trees.sum_leaves(X)  # float32 inputs against float64 thresholds, as scikit-learn
        # the power is taken with the C library's scalar pow, as the one-row path does: numpy's vectorised
        # power (AVX-512 on some machines) can differ in the last bit, and a row must score the same alone
        # or in a batch
        exponents = (-depths / self.normaliser).tolist()
        return np.fromiter((2.0 ** e for e in exponents), dtype=np.float64, count=len(exponents))

    def outside_range(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        """Bool matrix (rows x numeric columns): value outside the widened reference range."""
        k = len(self.range_columns)
        return (X[:, :k] < self.range_low) | (X[:, :k] > self.range_high)

    def score_frame(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(score, is_outlier) for each row of a frame holding the schema's raw feature columns."""
        X = self.encoder.transform(frame)  # noqa: N806
        scores = self.score_matrix(X)
        return scores, (scores > self.cutoff) | self.outside_range(X).any(axis=1)

    def score_records(self, records: Sequence[Mapping[str, Any]]) -> list[Anomaly]:
        """For validated rows keyed by column name (the /predict hot path, no pandas)."""
        return self.score_encoded(self.encoder.encode_records(records))

    def score_encoded(self, X: np.ndarray) -> list[Anomaly]:  # noqa: N803
        """For rows already encoded by :attr:`encoder` (or an encoder with :meth:`same_encoding`)."""
        if X.shape[0] == 1:  # /predict: plain Python is cheaper than numpy's per-call cost on one row
            score = 2.0 ** (-float(self.trees.sum_leaves(X)[0]) / self.normaliser)
            values = X[0, :len(self.range_columns)].tolist()
            bounds = zip(self.range_columns, values, self._low, self._high, strict=True)
            cols = tuple(c for c, v, lo, hi in bounds if v < lo or v > hi)
            return [Anomaly(score, score > self.cutoff or bool(cols), cols)]
        scores = self.score_matrix(X)
        outside = self.outside_range(X)
        out = []
        for i, s in enumerate(scores):
            cols = ()
            if outside[i].any():
                cols = tuple(c for c, o in zip(self.range_columns, outside[i], strict=True) if o)
            out.append(Anomaly(float(s), bool(s > self.cutoff) or bool(cols), cols))
        return out

    # -- persistence -----------------------------------------------------------------------------
    def save(self, path: Path | str) -> Path:
        header = {"format": FORMAT, "encoder": self.encoder_config, "max_depth": self.max_depth,
                  "normaliser": self.normaliser, "cutoff": self.cutoff, "meta": self.meta}
        with atomic_path(path, suffix=".npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8),
                                    feature=self.feature, threshold=self.split, left=self.left,
                                    right=self.right, leaf_depth=self.leaf_depth, roots=self.roots,
                                    range_low=self.range_low, range_high=self.range_high)
        return Path(path)

    @classmethod
    def load(cls, path: Path | str) -> OutlierDetector:
        try:
            with np.load(path, allow_pickle=False) as z:
                header = json.loads(z["header"].tobytes().decode())
                arrays = {k: z[k] for k in ("feature", "threshold", "left", "right", "leaf_depth", "roots",
                                            "range_low", "range_high")}
        except (OSError, ValueError, KeyError) as exc:
            raise ValueError(f"{path} is not an outlier detector saved by churnops: {exc}") from exc
        if header.get("format") != FORMAT:
            raise ValueError(f"{path} has format {header.get('format')!r}, expected {FORMAT!r}")
        return cls(encoder_config=header["encoder"], max_depth=int(header["max_depth"]),
                   normaliser=float(header["normaliser"]), cutoff=float(header["cutoff"]),
                   meta=header.get("meta", {}), **arrays)


def compile_forest(forest: Any, encoder_config: dict[str, Any], cutoff: float, meta: dict[str, Any],
                   range_low: np.ndarray, range_high: np.ndarray) -> OutlierDetector:
    """Flatten a fitted ``sklearn.ensemble.IsolationForest`` (every feature used by every tree)."""
    if forest.max_features != 1.0 or forest.bootstrap:
        raise ValueError("only forests with max_features=1.0 and bootstrap=False can be compiled")
    feats, thrs, lefts, rights, leaf_depths, roots = [], [], [], [], [], []
    offset, max_depth = 0, 0
    for est in forest.estimators_:
        t = est.tree_
        n = t.node_count
        ids = np.arange(n)
        is_leaf = t.children_left == -1
        depth = t.compute_node_depths()  # root at depth 1, as scikit-learn's _decision_path_lengths
        leaf_value = depth + _average_path_length(t.n_node_samples) - 1.0
        feats.append(np.where(is_leaf, 0, t.feature).astype(np.int64))
        thrs.append(np.where(is_leaf, 0.0, t.threshold))
        lefts.append(np.where(is_leaf, ids, t.children_left) + offset)
        rights.append(np.where(is_leaf, ids, t.children_right) + offset)
        leaf_depths.append(np.where(is_leaf, leaf_value, 0.0))
        roots.append(offset)
        offset += n
        max_depth = max(max_depth, int(t.max_depth))
    normaliser = len(forest.estimators_) * float(_average_path_length(np.array([forest._max_samples]))[0])
    return OutlierDetector(
        encoder_config=encoder_config, feature=np.concatenate(feats), threshold=np.concatenate(thrs),
        left=np.concatenate(lefts), right=np.concatenate(rights), leaf_depth=np.concatenate(leaf_depths),
        roots=np.asarray(roots, dtype=np.int64), max_depth=max_depth, normaliser=normaliser, cutoff=cutoff,
        meta=meta, range_low=range_low, range_high=range_high)


def fit_outlier_detector(reference: pd.DataFrame, schema: Any, seed: int, *, n_estimators: int = 100,
                         max_samples: int = 256, contamination: float = 0.01,
                         range_margin: float = 0.1) -> OutlierDetector:
    """Fit on the reference (the champion's training features) and compile for fast scoring.

    The threshold flags ``contamination`` of the reference rows: with 0.01, one customer in a hundred
    that looks like the training data is flagged; a window where many more are flagged is unusual.
    """
    from sklearn import __version__ as sklearn_version
    from sklearn.ensemble import IsolationForest

    encoder = FeatureEncoder.from_schema(schema).fit(reference)  # fill values (schema.missing) from it
    X = encoder.transform(reference)  # noqa: N806
    if len(X) < 2:
        raise ValueError(f"the reference has {len(X)} rows: an outlier detector needs at least 2")
    forest = IsolationForest(n_estimators=n_estimators, max_samples=min(max_samples, len(X)),
                             contamination=contamination, random_state=seed, n_jobs=1).fit(X)
    encoder_config = encoder.fitted_config()
    meta = {"seed": seed, "n_estimators": n_estimators, "max_samples": int(forest._max_samples),
            "contamination": contamination, "range_margin": range_margin, "reference_rows": len(X),
            "sklearn": sklearn_version, "feature_names": list(encoder.feature_names_)}
    k = len(encoder.numeric_)
    lo, hi = X[:, :k].min(axis=0), X[:, :k].max(axis=0)
    pad = range_margin * (hi - lo)
    # scikit-learn flags score_samples < offset_; score_samples is minus the paper's score
    return compile_forest(forest, encoder_config, cutoff=-float(forest.offset_), meta=meta,
                          range_low=lo - pad, range_high=hi + pad)


def fit_from_settings(reference: pd.DataFrame, settings: Any, seed: int | None = None) -> OutlierDetector:
    """:func:`fit_outlier_detector` with ``monitoring.outliers`` from params.yaml (seed: train.seed)."""
    o = settings.params.monitoring.outliers
    seed = settings.params.train.seed if seed is None else seed
    return fit_outlier_detector(reference, settings.schema, seed,
                                n_estimators=o.n_estimators, max_samples=o.max_samples,
                                contamination=o.contamination, range_margin=o.range_margin)
