"""Compiled tree ensembles: a fitted forest as flat node arrays, scored by one small compiled kernel.

Scoring one row through XGBoost's ``Booster.inplace_predict`` costs ≈ 0.6 ms on this machine for a
500-tree model, most of it per-call set-up, and scikit-learn forests dispatch through joblib on every call;
walking the same trees in a compiled loop costs a few microseconds. :func:`compile_xgboost` and
:func:`compile_sklearn_forest` flatten a fitted model into a :class:`TreeEnsemble` (every tree's nodes in
shared arrays), and :func:`sum_leaves` walks every tree for every row with numba.

Exactness is part of the contract, not an assumption: the kernel reproduces each library's comparison
(XGBoost: ``x < split`` in float32, missing values follow the node's default branch; scikit-learn:
``float32(x) <= threshold``) and its accumulation (XGBoost sums leaf values in float32 in tree order,
from the base margin). :meth:`TreeEnsemble.verify` compares against the library itself on rows built
from the model's own split points (both sides of every threshold); :class:`~churnops.scoring.Scorer`
runs it whenever it compiles a model and keeps the library's path when they disagree.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numba import njit

LEAF = -1


@njit(cache=True, nogil=True)
def _sum_leaves(X, feature, threshold, left, right, default_left, value, roots, strict, base, out):  # noqa: N803
    """out[r] = base + sum over trees of the leaf value row r reaches (accumulated in out's dtype)."""
    for r in range(X.shape[0]):
        acc = base
        for t in range(roots.shape[0]):
            node = roots[t]
            while left[node] != LEAF:
                x = X[r, feature[node]]
                if np.isnan(x):
                    go_left = default_left[node]
                elif strict:
                    go_left = x < threshold[node]
                else:
                    go_left = x <= threshold[node]
                node = left[node] if go_left else right[node]
            acc += value[node]
        out[r] = acc


@njit(cache=True, nogil=True)
def _sigmoid_f32(margin, out):  # noqa: ANN001
    one = np.float32(1.0)
    for i in range(margin.shape[0]):
        out[i] = one / (one + np.exp(-margin[i]))


@dataclass(frozen=True)
class TreeEnsemble:
    """Every tree's nodes in flat arrays; ``left[node] == -1`` marks a leaf whose value is ``value[node]``."""

    feature: np.ndarray  # int32: feature index tested at the node
    threshold: np.ndarray  # split value (float32 for XGBoost, float64 for scikit-learn)
    left: np.ndarray  # int32: child when the test holds; -1 at leaves
    right: np.ndarray  # int32: child otherwise
    default_left: np.ndarray  # bool: where a missing value (NaN) goes
    value: np.ndarray  # leaf values; their dtype is the accumulation dtype
    roots: np.ndarray  # int32: each tree's root node
    strict: bool  # True: ``x < threshold`` goes left (XGBoost); False: ``x <= threshold`` (scikit-learn)
    base: float  # added to every row's sum (XGBoost's base margin)
    link: str  # "logistic": probability = sigmoid(sum); "mean": sum / number of trees
    n_features: int

    @property
    def n_trees(self) -> int:
        return int(self.roots.shape[0])

    def sum_leaves(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        """Per row: base + the sum of the leaves reached, accumulated in the leaf values' dtype."""
        # both libraries test float32 values; one beyond float32 becomes inf: above every split
        with np.errstate(over="ignore"):
            X = np.ascontiguousarray(X, dtype=np.float32)  # noqa: N806
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"expected rows of {self.n_features} features, got shape {X.shape}")
        out = np.empty(X.shape[0], dtype=self.value.dtype)
        _sum_leaves(X, self.feature, self.threshold, self.left, self.right, self.default_left, self.value,
                    self.roots, self.strict, self.value.dtype.type(self.base), out)
        return out

    def predict_proba(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        """Probability of the positive class, float64."""
        total = self.sum_leaves(X)
        if self.link == "logistic":
            proba = np.empty_like(total)
            _sigmoid_f32(total, proba)
            return proba.astype(np.float64)
        return total / self.n_trees

    def probe_rows(self, n_rows: int = 512, seed: int = 0) -> np.ndarray:
        """Rows that exercise the trees' own boundaries: every value is one of the model's split points, a
        value just below or above one, or 0, so both branches of many nodes are taken."""
        rng = np.random.default_rng(seed)
        inner = self.left != LEAF
        X = np.zeros((n_rows, self.n_features), dtype=np.float32)  # noqa: N806
        for j in range(self.n_features):
            splits = np.unique(self.threshold[inner & (self.feature == j)].astype(np.float32))
            if splits.size == 0:
                continue
            candidates = np.concatenate([splits, np.nextafter(splits, np.float32(-np.inf)),
                                         np.nextafter(splits, np.float32(np.inf)), [np.float32(0)]])
            X[:, j] = rng.choice(candidates, size=n_rows)
        return X

    def verify(self, reference: Any, *, atol: float = 1e-6) -> float:
        """Largest |difference| between this ensemble's probabilities and ``reference(X)`` on probe rows.

        Raises ValueError when it exceeds `atol`: the compiled model must not be used then.
        """
        X = self.probe_rows()  # noqa: N806
        expected = np.asarray(reference(X), dtype=np.float64)
        diff = float(np.max(np.abs(self.predict_proba(X) - expected))) if len(X) else 0.0
        if not diff <= atol:
            raise ValueError(f"the compiled trees differ from the library by up to {diff:.3g} (> {atol:g})")
        return diff


# -- XGBoost ---------------------------------------------------------------------------------------
def compile_xgboost(booster: Any) -> TreeEnsemble:
    """Flatten a binary-logistic XGBoost ``Booster`` (numeric splits only, all trees)."""
    model = json.loads(booster.save_raw("json"))
    learner = model["learner"]
    objective = learner["objective"]["name"]
    if objective != "binary:logistic":
        raise ValueError(f"only binary:logistic boosters compile, not {objective}")
    booster_kind = learner["gradient_booster"]["name"]
    if booster_kind != "gbtree":
        raise ValueError(f"only gbtree boosters compile, not {booster_kind}")
    trees = learner["gradient_booster"]["model"]["trees"]
    param = learner["learner_model_param"]["base_score"]  # "[3.1833333E-1]" in XGBoost 3, a number before
    n_features = int(learner["learner_model_param"]["num_feature"])
    feats, thrs, lefts, rights, defaults, values, roots = [], [], [], [], [], [], []
    offset = 0
    for tree in trees:
        if any(int(t) != 0 for t in tree.get("split_type", [])):
            raise ValueError("categorical splits do not compile")
        left = np.asarray(tree["left_children"], dtype=np.int32)
        is_leaf = left == -1
        split = np.asarray(tree["split_conditions"], dtype=np.float32)
        feats.append(np.asarray(tree["split_indices"], dtype=np.int32))
        thrs.append(np.where(is_leaf, np.float32(0), split))
        lefts.append(np.where(is_leaf, LEAF, left + offset).astype(np.int32))
        rights.append(np.where(is_leaf, LEAF, np.asarray(tree["right_children"], dtype=np.int32) + offset)
                      .astype(np.int32))
        defaults.append(np.asarray(tree["default_left"], dtype=bool))
        values.append(np.where(is_leaf, split, np.float32(0)))  # a leaf's split condition is its value
        roots.append(offset)
        offset += left.shape[0]
    ensemble = TreeEnsemble(
        feature=np.concatenate(feats), threshold=np.concatenate(thrs).astype(np.float32),
        left=np.concatenate(lefts), right=np.concatenate(rights), default_left=np.concatenate(defaults),
        value=np.concatenate(values).astype(np.float32), roots=np.asarray(roots, dtype=np.int32),
        strict=True, base=0.0, link="logistic", n_features=n_features)
    return replace(ensemble, base=_base_margin(booster, ensemble, param))


def _base_margin(booster: Any, ensemble: TreeEnsemble, base_score: str) -> float:
    """The float32 margin XGBoost starts every row from.

    The JSON holds base_score as a rounded probability, and XGBoost derives the margin (its logit) in float32
    or in double depending on how base_score was set, so the last bit cannot be read from the file: the
    candidates around the logit are tried against the booster's own margins on probe rows and the one that
    reproduces them is kept.
    """
    p = float(json.loads(base_score)[0] if base_score.startswith("[") else base_score)
    one, p32 = np.float32(1.0), np.float32(p)
    logits = {np.float32(-np.log(one / p32 - one)), np.float32(np.log(p / (1.0 - p))),
              np.float32(-np.log(1.0 / float(p32) - 1.0))}
    candidates = set(logits)
    for c in logits:
        low = high = c
        for _ in range(2):
            low, high = np.nextafter(low, np.float32(-np.inf)), np.nextafter(high, np.float32(np.inf))
            candidates |= {low, high}
    X = ensemble.probe_rows(256, seed=1)  # noqa: N806
    expected = np.asarray(booster.inplace_predict(X, predict_type="margin"), dtype=np.float32)
    matches = {float(c): int(np.sum(replace(ensemble, base=float(c)).sum_leaves(X) == expected))
               for c in sorted(candidates)}
    return max(matches, key=matches.__getitem__)


# -- scikit-learn ----------------------------------------------------------------------------------
def flatten_sklearn_trees(trees: list[Any], leaf_value: Any) -> dict[str, np.ndarray]:
    """Node arrays of fitted scikit-learn trees (``estimator.tree_``); ``leaf_value(tree)`` gives the value
    of every node of one tree (only leaves are used)."""
    feats, thrs, lefts, rights, defaults, values, roots = [], [], [], [], [], [], []
    offset = 0
    for t in trees:
        left = t.children_left.astype(np.int32)
        # scikit-learn >= 1.3 trees learn where a missing value goes
        missing_left = getattr(t, "missing_go_to_left", None)
        defaults.append(np.zeros(t.node_count, dtype=bool) if missing_left is None
                        else np.asarray(missing_left, dtype=bool))
        is_leaf = left == -1
        feats.append(np.where(is_leaf, 0, t.feature).astype(np.int32))
        thrs.append(np.where(is_leaf, 0.0, t.threshold))
        lefts.append(np.where(is_leaf, LEAF, left + offset).astype(np.int32))
        rights.append(np.where(is_leaf, LEAF, t.children_right + offset).astype(np.int32))
        values.append(np.where(is_leaf, np.asarray(leaf_value(t), dtype=np.float64), 0.0))
        roots.append(offset)
        offset += t.node_count
    return {"feature": np.concatenate(feats), "threshold": np.concatenate(thrs).astype(np.float64),
            "left": np.concatenate(lefts), "right": np.concatenate(rights),
            "default_left": np.concatenate(defaults), "value": np.concatenate(values),
            "roots": np.asarray(roots, dtype=np.int32)}


def compile_sklearn_forest(forest: Any) -> TreeEnsemble:
    """Flatten a fitted binary ``RandomForestClassifier`` / ``ExtraTreesClassifier`` (probability of class 1
    = the mean over trees of the leaf's class-1 fraction)."""
    if len(getattr(forest, "classes_", ())) != 2:
        raise ValueError("only binary classifiers compile")

    def positive_fraction(t: Any) -> np.ndarray:
        v = t.value[:, 0, :]
        return v[:, 1] / v.sum(axis=1)  # fractions already in recent scikit-learn; counts in older ones

    arrays = flatten_sklearn_trees([e.tree_ for e in forest.estimators_], positive_fraction)
    return TreeEnsemble(**arrays, strict=False,
                        base=0.0, link="mean", n_features=int(forest.n_features_in_))


def compile_estimator(estimator: Any) -> TreeEnsemble | None:
    """The compiled form of a supported tree model, or None for other estimators (e.g. linear models)."""
    kind = type(estimator).__name__
    if kind == "XGBClassifier":
        return compile_xgboost(estimator.get_booster())
    if kind in ("RandomForestClassifier", "ExtraTreesClassifier"):
        return compile_sklearn_forest(estimator)
    return None
