"""Candidate pipeline shape, hold-out metrics against hand-computed values, importance and plots."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.preprocessing import StandardScaler

from churnops.features import FeatureEncoder
from churnops.models.candidates import CANDIDATES, UnknownCandidateError, build_pipeline
from churnops.models.evaluation import (
    classification_metrics,
    evaluate_proba,
    feature_importance,
    metric_key,
)
from churnops.models.plots import PLOT_FILES, write_plots
from churnops.scoring import Scorer
from tests.churnops.models.conftest import LABEL


@pytest.fixture(scope="module")
def fitted(make_model_home, tmp_path_factory, synthetic_split):
    settings = make_model_home(tmp_path_factory.mktemp("cand") / "home")
    train, test = synthetic_split(settings.schema, n=600)
    X = train[settings.schema.feature_columns]
    params = {"logistic_regression": {}, "random_forest": {"n_estimators": 30},
              "xgboost": {"n_estimators": 30}}
    pipes = {c: build_pipeline(c, settings.schema, params=params[c]).fit(X, train[LABEL]) for c in CANDIDATES}
    return settings, pipes, test


def test_candidate_pipelines_have_the_scorer_shape(model_settings) -> None:
    for candidate in CANDIDATES:
        pipe = build_pipeline(candidate, model_settings.schema)
        names = [name for name, _ in pipe.steps]
        assert names[0] == "encode" and isinstance(pipe.steps[0][1], FeatureEncoder)
        assert names[-1] == "model"
        if candidate == "logistic_regression":
            assert names == ["encode", "scale", "model"] and isinstance(pipe.steps[1][1], StandardScaler)
        else:
            assert names == ["encode", "model"]
    model = build_pipeline("xgboost", model_settings.schema).named_steps["model"]
    assert type(model).__name__ == "XGBClassifier" and model.get_params()["tree_method"] == "hist"


def test_unknown_candidate_and_hyperparameter_are_rejected(model_settings) -> None:
    with pytest.raises(UnknownCandidateError, match="'svm'"):
        build_pipeline("svm", model_settings.schema)
    with pytest.raises(ValueError, match="'depth'"):
        build_pipeline("xgboost", model_settings.schema, params={"depth": 3})


def test_scorer_probabilities_equal_pipeline_predict_proba_for_every_candidate(fitted) -> None:
    settings, pipes, test = fitted
    X = test[settings.schema.feature_columns]
    for candidate, pipe in pipes.items():
        expected = pipe.predict_proba(X)[:, 1]
        scorer = Scorer(pipe, threshold=0.4)
        np.testing.assert_allclose(scorer.predict_proba_frame(X), expected, rtol=1e-6, atol=1e-7,
                                   err_msg=candidate)
        records = X.head(20).to_dict(orient="records")
        np.testing.assert_allclose(scorer.predict_proba_records(records), expected[:20], rtol=1e-6,
                                   atol=1e-7, err_msg=candidate)


def test_metrics_match_hand_computed_values() -> None:
    y = np.array([0, 0, 1, 1, 1, 0])
    p = np.array([0.1, 0.6, 0.4, 0.8, 0.5, 0.3])
    m = classification_metrics(y, p, threshold=0.5)
    # churn if p >= 0.5: predicted [0,1,0,1,1,0] -> tp 2 (0.8, 0.5), fp 1 (0.6), fn 1 (0.4), tn 2
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["accuracy"] == pytest.approx(4 / 6)
    # AUC: of the 9 (positive, negative) pairs the positive scores higher in 7 (0.4 loses to 0.6, 0.5 to 0.6)
    assert m["roc_auc"] == pytest.approx(7 / 9)
    # AP: ranks 0.8(+) 0.6(-) 0.5(+) 0.4(+): precision at each positive 1, 2/3, 3/4 -> mean 29/36
    assert m["pr_auc"] == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)


def test_probability_equal_to_threshold_counts_as_churn() -> None:
    m = classification_metrics([0, 1], [0.2, 0.5], threshold=0.5)
    assert m["recall"] == 1.0 and m["precision"] == 1.0


def test_evaluation_confusion_matrix_and_report_layout() -> None:
    ev = evaluate_proba([0, 0, 1, 1, 1, 0], [0.1, 0.6, 0.4, 0.8, 0.5, 0.3], 0.5)
    assert ev.confusion_matrix == [[2, 1], [1, 2]]  # [[tn, fp], [fn, tp]]
    assert ev.report["churned (1)"]["support"] == 3
    assert "churned (1)" in ev.report_text
    assert set(ev.to_dict()) >= {"metrics", "confusion_matrix", "report", "threshold"}
    assert "proba" not in ev.to_dict()


def test_metric_key_maps_average_precision_to_pr_auc() -> None:
    assert metric_key("average_precision") == "pr_auc"
    assert metric_key("roc_auc") == "roc_auc"
    with pytest.raises(ValueError, match="'brier'"):
        metric_key("brier")


def test_feature_importance_is_named_after_encoded_features(fitted) -> None:
    settings, pipes, _ = fitted
    names = set(FeatureEncoder.from_schema(settings.schema).fit().feature_names_)
    lr = feature_importance(pipes["logistic_regression"])
    coef = np.abs(pipes["logistic_regression"].named_steps["model"].coef_.ravel())
    assert set(lr.index) == names and lr.iloc[0] == pytest.approx(coef.max())
    rf = feature_importance(pipes["random_forest"])
    assert set(rf.index) == names and rf.sum() == pytest.approx(1.0)
    xgb = feature_importance(pipes["xgboost"])
    assert set(xgb.index) == names and (xgb >= 0).all() and xgb.iloc[0] > 0
    # the synthetic churn signal lives mostly in Total_Trans_Ct: every model ranks it near the top
    for series in (lr, rf, xgb):
        assert "Total_Trans_Ct" in list(series.index[:5])


def test_plots_are_written_as_png(tmp_path, fitted) -> None:
    settings, pipes, test = fitted
    pipe = pipes["xgboost"]
    proba = pipe.predict_proba(test[settings.schema.feature_columns])[:, 1]
    paths = write_plots(test[LABEL], proba, 0.4, feature_importance(pipe), tmp_path / "plots", title="xgb")
    assert set(paths) == set(PLOT_FILES)
    for path in paths.values():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_curve_points_for_dvc_plots() -> None:
    from churnops.models.evaluation import curve_points

    y, p = [0, 0, 1, 1, 1, 0], [0.1, 0.6, 0.4, 0.8, 0.5, 0.3]
    points = curve_points(y, p, 0.5)
    assert points["roc"][0] == {"fpr": 0.0, "tpr": 0.0, "threshold": 1.0}
    assert points["roc"][-1]["fpr"] == 1.0 and points["roc"][-1]["tpr"] == 1.0
    assert all(0 <= q["precision"] <= 1 for q in points["precision_recall"])
    expected = [{"actual": a, "predicted": int(q >= 0.5)} for a, q in zip(y, p, strict=True)]
    assert points["confusion"] == expected
