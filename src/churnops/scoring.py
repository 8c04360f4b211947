"""Scoring with a trained model pipeline: the lean path used by /predict and batch scoring alike.

A model pipeline is an sklearn ``Pipeline`` whose first step is the :class:`~churnops.features.FeatureEncoder`
and whose last step is the estimator, with optional numeric steps between (a scaler for logistic
regression). Scoring skips pandas and sklearn's per-call validation: rows are encoded to a numpy matrix,
passed through the middle steps, and scored by the estimator's compiled trees (:mod:`churnops.trees`:
XGBoost and random forests, checked against the library when compiled and equal to it) or natively (linear
models; any tree model whose compiled form does not match its library, which is logged).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from churnops.features import FeatureEncoder
from churnops.logs import get_logger
from churnops.trees import TreeEnsemble, compile_estimator

log = get_logger(__name__)


@dataclass(frozen=True)
class Contribution:
    feature: str  # raw column (or ratio) the effect comes from
    effect: float  # contribution to the log-odds of churn (positive raises risk)


@dataclass
class Scorer:
    """Wraps a fitted model pipeline for fast probability-of-churn scoring."""

    pipeline: Pipeline
    threshold: float = 0.5
    _booster: Any = field(default=None, init=False, repr=False)
    _trees: TreeEnsemble | None = field(default=None, init=False, repr=False)
    _compiled: bool = field(default=False, init=False, repr=False)
    _verified_diff: float | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        encoder = self.pipeline.steps[0][1]
        if not isinstance(encoder, FeatureEncoder):
            raise TypeError("the model pipeline must start with a FeatureEncoder step")
        self.encoder: FeatureEncoder = encoder
        self.middle = [step for _, step in self.pipeline.steps[1:-1]]
        self.estimator = self.pipeline.steps[-1][1]
        if type(self.estimator).__name__ == "XGBClassifier":
            self._booster = self.estimator.get_booster()
            self._booster.set_param({"nthread": 1})  # one thread per worker; scale with processes

    @property
    def kind(self) -> str:
        return type(self.estimator).__name__

    @property
    def compiled(self) -> TreeEnsemble | None:
        """The estimator's compiled trees, built and verified on first use; None when scoring is native."""
        if not self._compiled:
            self._trees = self._compile()
            self._compiled = True
        return self._trees

    def _compile(self) -> TreeEnsemble | None:
        try:
            trees = compile_estimator(self.estimator)
            if trees is not None:
                self._verified_diff = trees.verify(self._library_proba)
        except Exception as exc:  # unsupported shape or a mismatch: the library's own path stays exact
            log.warning("scoring.native", model=self.kind, reason=str(exc))
            return None
        if trees is not None:
            log.info("scoring.compiled", model=self.kind, trees=trees.n_trees, depth=trees.depth,
                     layout="complete" if trees.layout is not None else "pointers",
                     max_abs_diff=self._verified_diff)
        return trees

    def describe(self) -> dict[str, Any]:
        """How rows are scored: ``path`` "compiled" (with the trees' shape and the largest difference from
        the library found when verifying) or "library"."""
        trees = self.compiled
        if trees is None:
            return {"path": "library"}
        return {"path": "compiled", "trees": trees.n_trees, "depth": trees.depth,
                "layout": "complete" if trees.layout is not None else "pointers",
                "verified_max_abs_diff": self._verified_diff}

    def matrix(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        return self._middle(self.encoder.encode_records(records))

    def _middle(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        for step in self.middle:
            X = step.transform(X)  # noqa: N806
        return X

    def _library_proba(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        if self._booster is not None:
            return np.asarray(self._booster.inplace_predict(X), dtype=np.float64)
        return self.estimator.predict_proba(X)[:, 1]

    def _proba(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        trees = self.compiled
        if trees is not None:
            return trees.predict_proba(X)
        return self._library_proba(X)

    def predict_proba_encoded(self, encoded: np.ndarray) -> np.ndarray:
        """Churn probability for rows already encoded by :attr:`encoder` (shared with outlier scoring)."""
        return self._proba(self._middle(encoded))

    def predict_proba_records(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Churn probability for rows keyed by schema column name (already validated)."""
        return self.predict_proba_encoded(self.encoder.encode_records(records))

    def predict_proba_frame(self, frame: pd.DataFrame) -> np.ndarray:
        return self.predict_proba_encoded(self.encoder.transform(frame))

    @property
    def explains(self) -> bool:
        """Whether :meth:`contributions_encoded` works for this model (XGBoost, linear models, forests whose
        compiled trees carry every node's value)."""
        if self._booster is not None or hasattr(self.estimator, "coef_"):
            return True
        trees = self.compiled
        return trees is not None and trees.node_value is not None

    def contributions_encoded(
        self, encoded: np.ndarray, approx: bool = False, threads: int = 1
    ) -> np.ndarray:
        """Contributions to the churn score (rows x encoded features, bias dropped) of encoded rows.

        XGBoost: the booster's own SHAP contributions to the log-odds (`approx`: its path attribution, about
        40x cheaper), on `threads` threads. Linear models: coefficient x scaled value (log-odds). Random
        forests: path attribution on the compiled trees (:meth:`churnops.trees.TreeEnsemble.
        path_contributions`; shares of the probability, as a forest averages probabilities). Other
        estimators: NotImplementedError."""
        X = self._middle(encoded)  # noqa: N806
        if self._booster is not None:
            import xgboost as xgb

            if threads != 1:
                self._booster.set_param({"nthread": threads})
            try:
                contribs = self._booster.predict(xgb.DMatrix(X, nthread=threads), pred_contribs=True,
                                                 approx_contribs=approx)
            finally:
                if threads != 1:
                    self._booster.set_param({"nthread": 1})
            return contribs[:, :-1]  # drop bias
        if hasattr(self.estimator, "coef_"):
            return X * np.asarray(self.estimator.coef_).reshape(1, -1)
        trees = self.compiled
        if trees is not None and trees.node_value is not None:
            return trees.path_contributions(X)[0]
        raise NotImplementedError(f"explanations are not available for {self.kind}")

    def contributions_by(
        self, encoded: np.ndarray, groups: Sequence[str], approx: bool = False, threads: int = 1
    ) -> tuple[list[str], np.ndarray]:
        """(labels, rows x labels): :meth:`contributions_encoded` summed per group, `groups` naming each
        encoded feature's group (:meth:`explain`: its raw column; analytics: its driver). Labels keep the
        order of their first feature. The one grouping of /predict?explain=true and the analytics drivers."""
        labels = list(dict.fromkeys(groups))
        index = {label: i for i, label in enumerate(labels)}
        projection = np.zeros((len(groups), len(labels)))
        projection[np.arange(len(groups)), [index[g] for g in groups]] = 1.0
        return labels, self.contributions_encoded(encoded, approx, threads) @ projection

    def explain(self, records: Sequence[Mapping[str, Any]]) -> list[list[Contribution]]:
        """Per-row contributions (:meth:`contributions_encoded`), summed per raw column, largest effect
        first. Models without contributions raise NotImplementedError (:attr:`explains`)."""
        labels, by_column = self.contributions_by(self.encoder.encode_records(records), self.encoder.sources_)
        rows = []
        for row in by_column:
            ranked = sorted(zip(labels, row.tolist(), strict=True), key=lambda kv: abs(kv[1]), reverse=True)
            rows.append([Contribution(k, v) for k, v in ranked])
        return rows
