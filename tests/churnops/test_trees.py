"""Compiled tree ensembles score exactly like the libraries they come from, and refuse when they would not."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import xgboost as xgb
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from churnops.features import FeatureEncoder
from churnops.scoring import Scorer
from churnops.trees import compile_estimator, compile_sklearn_forest, compile_xgboost


def _data(n: int = 3000, d: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * rng.uniform(0.1, 1000, size=d)  # noqa: N806 (wide value ranges)
    X[:, 3] = rng.integers(0, 6, size=n)  # a discrete column: many rows sit exactly on split points
    logit = X[:, 0] / X[:, 0].std() - X[:, 1] / X[:, 1].std() * (X[:, 3] > 2) + rng.normal(size=n)
    return X, (logit > 0.8).astype(int)


def _rows_with_missing(X: np.ndarray, seed: int) -> np.ndarray:  # noqa: N803
    rng = np.random.default_rng(seed)
    out = X.copy()
    out[rng.random(out.shape) < 0.1] = np.nan
    return out


@pytest.mark.parametrize("params", [
    {"n_estimators": 200, "max_depth": 6, "learning_rate": 0.1},
    {"n_estimators": 50, "max_depth": 3, "scale_pos_weight": 5.0, "base_score": 0.3},
    {"n_estimators": 80, "max_depth": 0, "max_leaves": 31, "grow_policy": "lossguide"},
])
def test_xgboost_compiles_to_the_boosters_own_probabilities(params: dict) -> None:
    X, y = _data()  # noqa: N806
    booster = xgb.XGBClassifier(**params, tree_method="hist", n_jobs=1).fit(X, y).get_booster()
    trees = compile_xgboost(booster)
    assert trees.n_trees == booster.num_boosted_rounds()
    X_new, _ = _data(seed=1)  # noqa: N806
    for rows in (X_new, _rows_with_missing(X_new, 2), trees.probe_rows(2000, seed=3)):
        expected = booster.inplace_predict(rows)
        got = trees.predict_proba(rows)
        # same float32 comparisons and float32 accumulation as XGBoost: equal to the last bit in practice
        assert np.abs(got - expected).max() <= 1e-7
        assert np.mean(got == expected.astype(np.float64)) >= 0.999
    # one row at a time (the /predict path) gives the same numbers as the batch
    np.testing.assert_array_equal([trees.predict_proba(X_new[i:i + 1])[0] for i in range(50)],
                                  trees.predict_proba(X_new[:50]))


@pytest.mark.parametrize("cls", [RandomForestClassifier, ExtraTreesClassifier])
@pytest.mark.parametrize("max_depth", [None, 5])  # deep trees walk pointers, shallow ones a complete layout
def test_sklearn_forests_compile_to_their_predict_proba(cls: type, max_depth: int | None) -> None:
    X, y = _data()  # noqa: N806
    forest = cls(n_estimators=40, max_depth=max_depth, min_samples_leaf=2, random_state=0, n_jobs=1).fit(X, y)
    trees = compile_sklearn_forest(forest)
    assert (trees.layout is None) == (max_depth is None)
    X_new, _ = _data(seed=4)  # noqa: N806
    for rows in (X_new, trees.probe_rows(1000, seed=5)):
        np.testing.assert_allclose(trees.predict_proba(rows), forest.predict_proba(rows)[:, 1], rtol=0,
                                   atol=1e-12)


def test_forests_that_learned_where_missing_values_go_keep_it() -> None:
    X, y = _data()  # noqa: N806
    X = _rows_with_missing(X, 6)  # noqa: N806
    forest = RandomForestClassifier(n_estimators=20, random_state=0, n_jobs=1).fit(X, y)
    rows = _rows_with_missing(_data(seed=7)[0], 8)
    np.testing.assert_allclose(compile_sklearn_forest(forest).predict_proba(rows),
                               forest.predict_proba(rows)[:, 1], atol=1e-12)


def test_verify_rejects_a_compiled_model_that_differs_from_the_library() -> None:
    X, y = _data()  # noqa: N806
    booster = xgb.XGBClassifier(n_estimators=30, max_depth=4, n_jobs=1).fit(X, y).get_booster()
    trees = compile_xgboost(booster)
    assert trees.verify(booster.inplace_predict) <= 1e-7
    value = trees.value.copy()
    value[np.flatnonzero(trees.left == -1)[:20]] += np.float32(0.5)  # a compiler bug: some leaves wrong
    with pytest.raises(ValueError, match="differ from the library"):
        replace(trees, value=value).verify(booster.inplace_predict)


def test_unsupported_models_are_not_compiled() -> None:
    X, y = _data()  # noqa: N806
    assert compile_estimator(LogisticRegression(max_iter=500).fit(X, y)) is None
    multi = xgb.XGBClassifier(n_estimators=5, n_jobs=1).fit(X, np.arange(len(y)) % 3)
    with pytest.raises(ValueError, match="binary:logistic"):
        compile_xgboost(multi.get_booster())
    with pytest.raises(ValueError, match="expected rows of 12 features"):
        small = xgb.XGBClassifier(n_estimators=5, n_jobs=1).fit(X, y)
        compile_xgboost(small.get_booster()).predict_proba(X[:, :5])


def _pipeline(model: object) -> Pipeline:
    encoder = FeatureEncoder(numeric=[f"x{i}" for i in range(12)]).fit()
    return Pipeline([("encode", encoder), ("model", model)])


def test_scorer_uses_the_compiled_trees_and_falls_back_to_the_library_when_they_disagree(monkeypatch) -> None:
    import pandas as pd

    from churnops import trees as trees_module

    X, y = _data()  # noqa: N806
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(12)])
    pipe = _pipeline(xgb.XGBClassifier(n_estimators=40, max_depth=4, n_jobs=1)).fit(frame, y)
    expected = pipe.predict_proba(frame)[:, 1]

    scorer = Scorer(pipe)
    assert scorer.compiled is not None and scorer.compiled.n_trees == 40
    np.testing.assert_allclose(scorer.predict_proba_frame(frame), expected, atol=1e-7)

    original = trees_module.compile_xgboost

    def broken(booster):  # a compiler that gets the trees wrong
        trees = original(booster)
        return replace(trees, value=np.zeros_like(trees.value))

    monkeypatch.setattr(trees_module, "compile_xgboost", broken)
    fallback = Scorer(pipe)
    assert fallback.compiled is None  # verification caught it: scoring stays on XGBoost itself
    np.testing.assert_allclose(fallback.predict_proba_frame(frame), expected, atol=1e-7)
    records = frame.head(3).to_dict(orient="records")
    np.testing.assert_allclose(fallback.predict_proba_records(records), expected[:3], atol=1e-7)


def test_pointer_and_complete_layouts_score_identically(monkeypatch) -> None:
    from churnops import trees as trees_module

    X, y = _data()  # noqa: N806
    booster = xgb.XGBClassifier(n_estimators=60, max_depth=5, n_jobs=1).fit(X, y).get_booster()
    complete = compile_xgboost(booster)
    monkeypatch.setattr(trees_module, "COMPLETE_MAX_DEPTH", 0)
    pointers = replace(complete)  # rebuilt: too deep for a complete layout now
    assert complete.layout is not None and complete.layout.depth == 5 and pointers.layout is None
    rows = _rows_with_missing(_data(seed=9)[0], 10)
    np.testing.assert_array_equal(pointers.predict_proba(rows), complete.predict_proba(rows))
    np.testing.assert_array_equal(pointers.sum_leaves(rows), complete.sum_leaves(rows))


def _saabas_by_sklearn(forest: RandomForestClassifier, X: np.ndarray) -> np.ndarray:  # noqa: N803
    """Path attribution computed from scikit-learn's own decision paths (the reference for the kernel)."""
    out = np.zeros(X.shape)
    for est in forest.estimators_:
        t = est.tree_
        value = t.value[:, 0, 1] / t.value[:, 0, :].sum(axis=1)
        paths = est.decision_path(X.astype(np.float32))
        for r in range(X.shape[0]):
            nodes = paths.indices[paths.indptr[r] : paths.indptr[r + 1]]  # root to leaf, in order
            for parent, child in zip(nodes[:-1], nodes[1:], strict=True):
                out[r, t.feature[parent]] += value[child] - value[parent]
    return out / len(forest.estimators_)


@pytest.mark.parametrize("cls", [RandomForestClassifier, ExtraTreesClassifier])
@pytest.mark.parametrize("max_depth", [None, 4])
def test_forest_path_contributions_add_up_to_the_probability_and_follow_sklearns_paths(
    cls: type, max_depth: int | None
) -> None:
    X, y = _data()  # noqa: N806
    forest = cls(n_estimators=30, max_depth=max_depth, min_samples_leaf=2, random_state=0, n_jobs=1).fit(X, y)
    trees = compile_sklearn_forest(forest)
    X_new, _ = _data(n=200, seed=6)  # noqa: N806
    contributions, bias = trees.path_contributions(X_new)
    assert contributions.shape == X_new.shape
    proba = forest.predict_proba(X_new)[:, 1]
    np.testing.assert_allclose(bias + contributions.sum(axis=1), proba, atol=1e-12)
    np.testing.assert_allclose(contributions, _saabas_by_sklearn(forest, X_new), atol=1e-12)
    never_split = np.setdiff1d(np.arange(X.shape[1]), trees.feature[trees.left != -1])
    assert np.all(contributions[:, never_split] == 0)


def test_scorer_explains_forests_by_path_contributions_and_boosters_by_their_own_shap() -> None:
    import pandas as pd

    X, y = _data()  # noqa: N806
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(12)])
    forest = Scorer(_pipeline(RandomForestClassifier(n_estimators=20, max_depth=6, random_state=0,
                                                     n_jobs=1)).fit(frame, y))
    assert forest.explains
    got = forest.contributions_encoded(forest.encoder.transform(frame.head(50)))
    np.testing.assert_allclose(got, forest.compiled.path_contributions(X[:50])[0])
    booster = Scorer(_pipeline(xgb.XGBClassifier(n_estimators=30, max_depth=4, n_jobs=1)).fit(frame, y))
    shap = booster.contributions_encoded(booster.encoder.transform(frame.head(50)), threads=2)
    margin = booster.estimator.get_booster().inplace_predict(X[:50], predict_type="margin")
    bias = booster._booster.predict(xgb.DMatrix(X[:1]), pred_contribs=True)[0, -1]
    np.testing.assert_allclose(bias + shap.sum(axis=1), margin, rtol=1e-5, atol=1e-5)
    config = json.loads(booster._booster.save_config())  # the serving path's one thread is back
    assert config["learner"]["generic_param"]["nthread"] == "1"
