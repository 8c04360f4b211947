"""Compiled tree ensembles: a fitted forest as flat node arrays, scored by one small compiled kernel.

Scoring one row through XGBoost's ``Booster.inplace_predict`` is mostly per-call set-up, and scikit-learn
forests dispatch through joblib on every call; walking the same trees in a compiled loop costs a small
fraction of that (measured side by side in ``benchmarks/RESULTS.md``, "Serving"). :func:`compile_xgboost` and
:func:`compile_sklearn_forest` flatten a fitted model into a :class:`TreeEnsemble` (every tree's nodes in
shared arrays), which numba kernels walk for every row: trees up to depth 10 in a complete layout with
4-byte nodes (feature, rank of the split point among that feature's split points), deeper ones through
their child pointers.

Exactness is part of the contract, not an assumption: the kernel reproduces each library's comparison
(XGBoost: ``x < split`` in float32, missing values follow the node's default branch; scikit-learn:
``float32(x) <= threshold``) and its accumulation (XGBoost sums leaf values in float32 in tree order,
from the base margin). :meth:`TreeEnsemble.verify` compares against the library itself on rows built
from the model's own split points (both sides of every threshold); :class:`~churnops.scoring.Scorer`
runs it whenever it compiles a model and keeps the library's path when they disagree.

Forests also explain their scores: :meth:`TreeEnsemble.path_contributions` credits each split on a row's
path with the change of the node value it leads to, so the bias plus a row's contributions equal its
probability (``?explain=true`` and the analytics drivers of a random-forest champion).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numba import njit

LEAF = -1
COMPLETE_MAX_DEPTH = 10  # trees up to this depth are also laid out as complete binary trees (no pointers)
# what the kernels return per row: the leaves' sum, sigmoid of it (float32, as XGBoost), or its mean
SUM, LOGISTIC, MEAN = 0, 1, 2
_LINKS = {"sum": SUM, "logistic": LOGISTIC, "mean": MEAN}


@njit(cache=True, nogil=True)
def _goes_right(x, threshold, default_left, strict):  # noqa: ANN001, ANN202
    if np.isnan(x):
        return not default_left
    if strict:
        return not x < threshold
    return not x <= threshold


@njit(cache=True, nogil=True)
def _finish(acc, link, n_trees):  # noqa: ANN001, ANN202
    if link == LOGISTIC:  # XGBoost's sigmoid, in float32
        one = np.float32(1.0)
        return one / (one + np.exp(-np.float32(acc)))
    if link == MEAN:
        return acc / n_trees
    return acc


@njit(cache=True, nogil=True)
def _score_nodes(X, feature, threshold, left, right, default_left, value, roots, strict, base, link, out):  # noqa: N803, ANN001
    """Pointer layout (any depth): walk from each tree's root until a leaf (``left == -1``)."""
    for r in range(X.shape[0]):
        acc = base
        for t in range(roots.shape[0]):
            node = roots[t]
            while left[node] != LEAF:
                x = np.float32(X[r, feature[node]])  # both libraries test float32 values
                if _goes_right(x, threshold[node], default_left[node], strict):
                    node = right[node]
                else:
                    node = left[node]
            acc += value[node]
        out[r] = _finish(acc, link, roots.shape[0])


@njit(cache=True, nogil=True)
def _path_contributions(X, feature, threshold, left, right, default_left, node_value, roots, strict, out):  # noqa: N803, ANN001
    """Per row and feature: the sum over trees of the value changes of the splits on that feature along
    the row's path (the caller divides by the number of trees)."""
    for r in range(X.shape[0]):
        for t in range(roots.shape[0]):
            node = roots[t]
            while left[node] != LEAF:
                x = np.float32(X[r, feature[node]])
                if _goes_right(x, threshold[node], default_left[node], strict):
                    child = right[node]
                else:
                    child = left[node]
                out[r, feature[node]] += node_value[child] - node_value[node]
                node = child


MISSING_CODE = 0xFFFF  # a row's code for a missing value
PAD_BIN = 0xFFFE  # padding nodes: every non-missing code goes left
DEFAULT_LEFT_BIT = 0x8000  # high bit of a node's feature field: where a missing value goes


@njit(cache=True, nogil=True)
def _row_codes(X, r, cuts, cut_start, strict, codes):  # noqa: N803, ANN001, ANN202
    """For each feature, how many of its split points the value passes: with strict tests (XGBoost) the
    number of cuts <= x, so that ``x < cut[k]`` exactly when the code is <= k; with ``<=`` tests
    (scikit-learn) the number of cuts < x, so that ``x <= cut[k]`` exactly when the code is <= k."""
    for j in range(codes.shape[0]):
        x = np.float32(X[r, j])
        if np.isnan(x):
            codes[j] = MISSING_CODE
            continue
        lo, hi = cut_start[j], cut_start[j + 1]
        first = lo
        while lo < hi:  # binary search for the first cut that x does not pass
            mid = (lo + hi) >> 1
            passed = cuts[mid] <= x if strict else cuts[mid] < x
            if passed:
                lo = mid + 1
            else:
                hi = mid
        codes[j] = lo - first


@njit(cache=True, nogil=True, inline="always")
def _child(node_feature, node_bin, codes, k, i):  # noqa: ANN001, ANN202
    """Position (within its tree) of the child of node `i` (stored at `k`) that the row's codes lead to."""
    f = node_feature[k]
    code = codes[f & 0x7FFF]
    if code == MISSING_CODE:
        right = (f & DEFAULT_LEFT_BIT) == 0
    else:
        right = code > node_bin[k]
    return 2 * i + 1 + right


@njit(cache=True, nogil=True)
def _score_complete(X, cuts, cut_start, node_feature, node_bin, leaf, depth, strict, base, link, out):  # noqa: N803, ANN001
    """Complete, quantized layout: tree t's inner nodes at ``t * (2**depth - 1) + i`` (children of i: 2i+1,
    2i+2), its leaves at ``t * 2**depth + j``. A node holds its feature and the index of its split point among
    that feature's sorted cuts (4 bytes: a tree's first levels share a cache line); the row is turned into
    codes once, then every tree takes a fixed number of integer comparisons.

    Trees are walked four at a time, level by level: each walk is a chain of dependent loads, and four
    independent chains keep the processor busy while each waits (faster than one tree after another:
    ``benchmarks/RESULTS.md``, "Serving"). Leaves are still added in tree order, so the sum is the same to
    the bit."""
    n_inner = (1 << depth) - 1
    n_leaves = 1 << depth
    n_trees = leaf.shape[0] // n_leaves
    codes = np.empty(cut_start.shape[0] - 1, dtype=np.uint16)
    for r in range(X.shape[0]):
        _row_codes(X, r, cuts, cut_start, strict, codes)
        acc = base
        t = 0
        while t + 4 <= n_trees:
            o0 = t * n_inner
            o1 = o0 + n_inner
            o2 = o1 + n_inner
            o3 = o2 + n_inner
            i0 = i1 = i2 = i3 = 0
            for _ in range(depth):
                i0 = _child(node_feature, node_bin, codes, o0 + i0, i0)
                i1 = _child(node_feature, node_bin, codes, o1 + i1, i1)
                i2 = _child(node_feature, node_bin, codes, o2 + i2, i2)
                i3 = _child(node_feature, node_bin, codes, o3 + i3, i3)
            first_leaf = t * n_leaves - n_inner
            acc += leaf[first_leaf + i0]
            acc += leaf[first_leaf + n_leaves + i1]
            acc += leaf[first_leaf + 2 * n_leaves + i2]
            acc += leaf[first_leaf + 3 * n_leaves + i3]
            t += 4
        while t < n_trees:
            offset = t * n_inner
            i = 0
            for _ in range(depth):
                i = _child(node_feature, node_bin, codes, offset + i, i)
            acc += leaf[t * n_leaves + i - n_inner]
            t += 1
        out[r] = _finish(acc, link, n_trees)


@dataclass(frozen=True)
class CompleteLayout:
    """The same trees padded to one depth (a leaf above the bottom becomes a subtree whose leaves all hold
    its value; the padding nodes' tests do not matter) with split points replaced by their rank."""

    cuts: np.ndarray  # every feature's sorted distinct split points, feature after feature
    cut_start: np.ndarray  # int64: feature j's cuts are cuts[cut_start[j]:cut_start[j + 1]]
    node_feature: np.ndarray  # uint16: feature index, DEFAULT_LEFT_BIT set when a missing value goes left
    node_bin: np.ndarray  # uint16: rank of the node's split point among its feature's cuts
    leaf: np.ndarray
    depth: int


def tree_depths(left: np.ndarray, right: np.ndarray, roots: np.ndarray) -> np.ndarray:
    """Depth of every tree (a lone leaf has depth 0)."""
    depths = np.zeros(roots.shape[0], dtype=np.int64)
    for t, root in enumerate(roots):
        level, d = [int(root)], 0
        while True:
            nxt = [c for n in level if left[n] != LEAF for c in (int(left[n]), int(right[n]))]
            if not nxt:
                break
            level, d = nxt, d + 1
        depths[t] = d
    return depths


def complete_layout(ens: TreeEnsemble, depth: int) -> CompleteLayout | None:
    """The complete, quantized layout; None when a feature has too many distinct split points for 16 bits."""
    inner = ens.left != LEAF
    per_feature = [np.unique(ens.threshold[inner & (ens.feature == j)]) for j in range(ens.n_features)]
    if ens.n_features >= DEFAULT_LEFT_BIT or any(c.size >= PAD_BIN for c in per_feature):
        return None
    cut_start = np.zeros(ens.n_features + 1, dtype=np.int64)
    cut_start[1:] = np.cumsum([c.size for c in per_feature])
    cuts = np.concatenate([*per_feature, np.zeros(0, dtype=ens.threshold.dtype)]).astype(ens.threshold.dtype)
    n_inner, n_leaves = (1 << depth) - 1, 1 << depth
    node_feature = np.zeros(ens.n_trees * n_inner, dtype=np.uint16)
    node_bin = np.full(ens.n_trees * n_inner, PAD_BIN, dtype=np.uint16)
    leaf = np.zeros(ens.n_trees * n_leaves, dtype=ens.value.dtype)
    for t, root in enumerate(ens.roots):
        stack = [(int(root), 0, 0)]  # (node, position in the complete tree, level)
        while stack:
            node, pos, level = stack.pop()
            if ens.left[node] == LEAF:  # every bottom-level position under `pos` gets this leaf's value
                first = pos
                for _ in range(depth - level):
                    first = 2 * first + 1
                start = t * n_leaves + first - n_inner
                leaf[start:start + (1 << (depth - level))] = ens.value[node]
                continue
            f = int(ens.feature[node])
            k = t * n_inner + pos
            node_feature[k] = f | (DEFAULT_LEFT_BIT if ens.default_left[node] else 0)
            node_bin[k] = int(np.searchsorted(per_feature[f], ens.threshold[node]))
            stack.append((int(ens.left[node]), 2 * pos + 1, level + 1))
            stack.append((int(ens.right[node]), 2 * pos + 2, level + 1))
    return CompleteLayout(cuts, cut_start, node_feature, node_bin, leaf, depth)


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
    link: str  # "logistic": probability = sigmoid(sum); "mean": sum / number of trees; "sum"
    n_features: int
    # every node's value (inner nodes too), for path contributions; None when the library gives its own
    node_value: np.ndarray | None = field(default=None, repr=False)
    depth: int = field(init=False)  # of the deepest tree
    layout: CompleteLayout | None = field(init=False, repr=False)  # None: walked through the pointers

    def __post_init__(self) -> None:
        depth = int(tree_depths(self.left, self.right, self.roots).max(initial=0))
        object.__setattr__(self, "depth", depth)
        layout = complete_layout(self, depth) if depth <= COMPLETE_MAX_DEPTH else None
        object.__setattr__(self, "layout", layout)

    @property
    def n_trees(self) -> int:
        return int(self.roots.shape[0])

    def _run(self, X: np.ndarray, link: str) -> np.ndarray:  # noqa: N803
        X = np.ascontiguousarray(X)  # noqa: N806 (values become float32 inside the kernel, inf beyond range)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"expected rows of {self.n_features} features, got shape {X.shape}")
        out = np.empty(X.shape[0], dtype=np.float64)
        base = self.value.dtype.type(self.base)
        code = _LINKS[link]
        c = self.layout
        if c is not None:
            _score_complete(X, c.cuts, c.cut_start, c.node_feature, c.node_bin, c.leaf, c.depth, self.strict,
                            base, code, out)
        else:
            _score_nodes(X, self.feature, self.threshold, self.left, self.right, self.default_left,
                         self.value, self.roots, self.strict, base, code, out)
        return out

    def sum_leaves(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        """Per row: base + the sum of the leaves reached, accumulated in the leaf values' dtype."""
        return self._run(X, "sum")

    def predict_proba(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        """Probability of the positive class, float64."""
        return self._run(X, self.link)

    def path_contributions(self, X: np.ndarray) -> tuple[np.ndarray, float]:  # noqa: N803
        """(rows x features, bias): each feature's share of each row's prediction, by path attribution.

        Every split on a row's path through a tree credits its feature with the change of the node value
        it leads to (child minus parent); averaged over the trees (``link == "mean"``), so
        ``bias + row sum`` equals :meth:`predict_proba` (the mean of the root values is the bias).
        Needs :attr:`node_value` (scikit-learn forests)."""
        if self.node_value is None or self.link != "mean":
            raise NotImplementedError("path contributions need every node's value of an averaged forest")
        X = np.ascontiguousarray(X)  # noqa: N806
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"expected rows of {self.n_features} features, got shape {X.shape}")
        out = np.zeros((X.shape[0], self.n_features), dtype=np.float64)
        _path_contributions(X, self.feature, self.threshold, self.left, self.right, self.default_left,
                            self.node_value, self.roots, self.strict, out)
        out /= self.n_trees
        return out, float(self.node_value[self.roots].mean())

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
    of every node of one tree (leaves score; every node's value gives path contributions)."""
    feats, thrs, lefts, rights, defaults, values, roots = [], [], [], [], [], [], []
    node_values = []
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
        every = np.asarray(leaf_value(t), dtype=np.float64)
        node_values.append(every)
        values.append(np.where(is_leaf, every, 0.0))
        roots.append(offset)
        offset += t.node_count
    return {"feature": np.concatenate(feats), "threshold": np.concatenate(thrs).astype(np.float64),
            "left": np.concatenate(lefts), "right": np.concatenate(rights),
            "default_left": np.concatenate(defaults), "value": np.concatenate(values),
            "node_value": np.concatenate(node_values), "roots": np.asarray(roots, dtype=np.int32)}


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
