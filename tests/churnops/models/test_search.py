"""Search spaces from params.yaml, the randomized CV search, and the out-of-fold threshold."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from churnops.models.search import (
    SearchSpaceError,
    choose_threshold,
    halving_plan,
    parse_space,
    parse_spec,
    search_candidate,
    stratified_sample,
)
from churnops.settings import load_settings
from tests.churnops.models.conftest import LABEL, REPO


def _samples(dist, n=2000):
    return dist.rvs(size=n, random_state=np.random.default_rng(0))


# -- spec forms ----------------------------------------------------------------------------------
def test_log_uniform_spec_samples_within_bounds_on_a_log_scale() -> None:
    dist = parse_spec({"log_uniform": [0.01, 100.0]}, key="k")
    x = _samples(dist)
    assert x.min() >= 0.01 and x.max() <= 100.0
    # log-uniform: each decade holds about a quarter of the draws
    assert 0.2 < np.mean(x < 0.1) < 0.3 and 0.2 < np.mean(x > 10) < 0.3


def test_uniform_spec_samples_within_bounds() -> None:
    x = _samples(parse_spec({"uniform": [0.6, 1.0]}, key="k"))
    assert x.min() >= 0.6 and x.max() <= 1.0
    assert abs(x.mean() - 0.8) < 0.02


def test_int_uniform_spec_includes_both_bounds() -> None:
    x = _samples(parse_spec({"int_uniform": [3, 5]}, key="k"))
    assert set(np.unique(x)) == {3, 4, 5}


def test_choice_spec_keeps_values_including_none() -> None:
    assert parse_spec({"choice": ["balanced", None]}, key="k") == ["balanced", None]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"gaussian": [0, 1]}, "unknown search spec form 'gaussian'"),
        ({"uniform": [0, 1], "choice": [1]}, "exactly one of"),
        (5, "exactly one of"),
        ({"uniform": [1.0, 1.0]}, "low < high"),
        ({"uniform": [2.0, 1.0]}, "low < high"),
        ({"uniform": [0.0]}, "two numbers"),
        ({"uniform": ["a", "b"]}, "two numbers"),
        ({"log_uniform": [0.0, 1.0]}, "0 < low"),
        ({"int_uniform": [1.5, 4]}, "two integers"),
        ({"choice": []}, "non-empty list"),
        ({"choice": "balanced"}, "non-empty list"),
    ],
)
def test_malformed_spec_is_rejected_naming_the_key(spec, message) -> None:
    with pytest.raises(SearchSpaceError) as err:
        parse_spec(spec, key="train.search_spaces.xgboost.max_depth")
    assert "train.search_spaces.xgboost.max_depth" in str(err.value)
    assert message in str(err.value)


def test_unknown_hyperparameter_name_is_rejected_naming_key_and_candidate() -> None:
    with pytest.raises(SearchSpaceError) as err:
        parse_space("random_forest", {"n_estimators": {"choice": [10]}, "learning_rate": {"choice": [0.1]}})
    text = str(err.value)
    assert "train.search_spaces.random_forest" in text and "'learning_rate'" in text
    assert "n_estimators" in text  # lists what the estimator accepts


def test_space_keys_address_the_model_step() -> None:
    space = parse_space("logistic_regression", {"C": {"log_uniform": [0.1, 10]},
                                                 "class_weight": {"choice": ["balanced", None]}})
    assert set(space) == {"model__C", "model__class_weight"}
    assert isinstance(space["model__C"], stats._distn_infrastructure.rv_continuous_frozen)


def test_every_search_space_in_params_yaml_parses() -> None:
    settings = load_settings(home=REPO, env={})
    train = settings.params.train
    for candidate in train.candidates:
        space = parse_space(candidate, train.search_spaces[candidate])
        assert space, candidate
        # class imbalance is part of every real search space
        assert {"model__class_weight", "model__scale_pos_weight"} & set(space), candidate


# -- threshold -----------------------------------------------------------------------------------
def test_threshold_maximises_f1_by_hand() -> None:
    y = np.array([0, 0, 0, 1, 0, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.35, 0.4, 0.6, 0.7, 0.9])
    # churn if p >= t; t=0.35 -> tp 4, fp 1, fn 0 -> F1 = 8/9; t=0.6 -> tp 3, fp 0, fn 1 -> 6/7; others lower
    threshold, f1 = choose_threshold(y, p)
    assert threshold == pytest.approx(0.35)
    assert f1 == pytest.approx(8 / 9)


def test_threshold_needs_both_classes() -> None:
    with pytest.raises(ValueError, match="both classes"):
        choose_threshold([1, 1, 1], [0.2, 0.5, 0.9])


# -- the search ----------------------------------------------------------------------------------
def test_search_threshold_comes_from_out_of_fold_predictions_on_the_same_folds(
    model_settings, synthetic_split
) -> None:
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    from churnops.models.candidates import build_pipeline

    train, _ = synthetic_split(model_settings.schema, n=800)
    X, y = train[model_settings.schema.feature_columns], train[LABEL].to_numpy()
    result = search_candidate("logistic_regression", X, y, model_settings)

    cfg = model_settings.params.train
    folds = StratifiedKFold(cfg.cv_folds, shuffle=True, random_state=cfg.seed)
    oof = cross_val_predict(build_pipeline("logistic_regression", model_settings.schema, seed=cfg.seed,
                                           params=result.best_params),
                            X, y, cv=folds, method="predict_proba")[:, 1]
    np.testing.assert_allclose(result.oof_proba, oof, rtol=1e-6)
    assert result.threshold == pytest.approx(choose_threshold(y, oof)[0])
    assert len(result.cv_results) == cfg.search_iterations["logistic_regression"]
    assert result.cv_results.loc[0, "rank"] == 1
    assert result.best_params["C"] == pytest.approx(result.cv_results.loc[0, "C"])
    assert set(result.cv_metrics) == {"roc_auc", "average_precision", "f1"}
    assert result.oof_metrics["f1"] == pytest.approx(choose_threshold(y, oof)[1])


def test_search_keeps_threshold_half_when_tuning_is_off(make_model_home, tmp_path, synthetic_split) -> None:
    settings = make_model_home(tmp_path / "h", {"evaluate": {"tune_threshold": False}})
    train, _ = synthetic_split(settings.schema, n=600)
    result = search_candidate("logistic_regression", train[settings.schema.feature_columns],
                              train[LABEL], settings)
    assert result.threshold == 0.5


def test_xgboost_search_runs_single_threaded_and_refit_model_predicts_with_one_thread(
    model_settings, synthetic_split
) -> None:
    train, _ = synthetic_split(model_settings.schema, n=600)
    result = search_candidate("xgboost", train[model_settings.schema.feature_columns], train[LABEL],
                              model_settings)
    model = result.pipeline.named_steps["model"]
    assert model.get_params()["tree_method"] == "hist"
    assert model.get_params()["n_jobs"] == 1
    assert 1 <= model.get_params()["n_estimators"] <= 80  # FAST_TRAIN's only choice is the early-stopping cap


def test_release_worker_processes_leaves_no_joblib_worker_behind() -> None:
    import psutil
    from joblib import Parallel, delayed

    from churnops.models.search import release_worker_processes

    def workers() -> list[psutil.Process]:
        return [p for p in psutil.Process().children(recursive=True)
                if "popen_loky_posix" in " ".join(p.cmdline())]

    Parallel(n_jobs=2)(delayed(abs)(i) for i in range(4))
    assert workers(), "the search's n_jobs starts reusable worker processes"
    release_worker_processes()
    gone, alive = psutil.wait_procs(workers(), timeout=10)
    assert not alive


# -- a search whose cost grows no faster than the data -------------------------------------------
@pytest.mark.parametrize(
    ("n_settings", "plan"),
    [
        (12, [(12, 2222), (4, 6666), (2, 20000)]),  # 12 -> 4 -> 2: the last round on every row
        (8, [(8, 6666), (3, 20000)]),
        (5, [(5, 6666), (2, 20000)]),
        (3, [(3, 20000)]),  # at most `factor` settings: one round, a plain randomized search
        (1, [(1, 20000)]),
    ],
)
def test_halving_plan_keeps_a_third_of_the_settings_on_three_times_the_rows(n_settings, plan) -> None:
    assert halving_plan(n_settings, 20000, factor=3, min_rows=1000) == plan


def test_halving_plan_rounds_never_go_below_min_rows() -> None:
    assert halving_plan(12, 3000, factor=3, min_rows=1000) == [(12, 1000), (4, 1000), (2, 3000)]


def test_stratified_sample_keeps_the_churn_rate_and_is_reproducible() -> None:
    y = (np.arange(10_000) % 8 == 0).astype(int)
    keep = stratified_sample(y, 1000, seed=3)
    assert len(keep) == 1000 and len(set(keep)) == 1000
    assert y[keep].mean() == pytest.approx(y.mean(), abs=0.002)
    np.testing.assert_array_equal(keep, stratified_sample(y, 1000, seed=3))
    np.testing.assert_array_equal(stratified_sample(y, 20_000, seed=3), np.arange(10_000))


def _budget(make_model_home, tmp_path, search: dict, iterations: dict, spaces: dict | None = None):
    return make_model_home(tmp_path / "h", {"train": {
        "search": search, "search_iterations": iterations, **({"search_spaces": spaces} if spaces else {})}})


def test_search_sees_at_most_max_rows_and_the_refit_uses_every_row(
    make_model_home, tmp_path, synthetic_split
) -> None:
    from churnops.models.candidates import build_pipeline

    settings = _budget(make_model_home, tmp_path, {"max_rows": 300, "min_rows": 100},
                       {"logistic_regression": 2})
    train, _ = synthetic_split(settings.schema, n=1200)
    X, y = train[settings.schema.feature_columns], train[LABEL].to_numpy()
    result = search_candidate("logistic_regression", X, y, settings)

    assert result.search_rows == 300 and len(result.oof_proba) == 300
    assert set(result.cv_results["rows"]) == {300}
    by_hand = build_pipeline("logistic_regression", settings.schema, seed=settings.params.train.seed,
                             params=result.best_params).fit(X, y)  # all 900 training rows
    np.testing.assert_allclose(result.pipeline.named_steps["model"].coef_,
                               by_hand.named_steps["model"].coef_, rtol=1e-6)


def test_successive_halving_promotes_the_best_settings_of_each_round_to_more_rows(
    make_model_home, tmp_path, synthetic_split
) -> None:
    settings = _budget(make_model_home, tmp_path, {"max_rows": 900, "min_rows": 100, "halving_factor": 3},
                       {"logistic_regression": 9},
                       {"logistic_regression": {"C": {"log_uniform": [0.0001, 100.0]},
                                                "class_weight": {"choice": ["balanced", None]}}})
    train, _ = synthetic_split(settings.schema, n=1200)
    result = search_candidate("logistic_regression", train[settings.schema.feature_columns], train[LABEL],
                              settings)
    table = result.cv_results
    assert result.rounds == 2 and len(table) == 9  # one row per drawn setting, at the last round it reached
    assert sorted(table.groupby("round").size().to_dict().items()) == [(1, 6), (2, 3)]
    assert set(table.loc[table["round"] == 1, "rows"]) == {300}
    assert set(table.loc[table["round"] == 2, "rows"]) == {900}
    assert list(table["round"][:3]) == [2, 2, 2]  # the finalists rank first, the winner first of all
    assert result.best_params["C"] == pytest.approx(table.loc[0, "C"])
    best_ap = result.cv_metrics["average_precision"]["mean"]
    assert best_ap == pytest.approx(table.loc[0, "average_precision_mean"])


def test_xgboost_stops_adding_trees_on_the_validation_fold_and_refits_with_the_trees_it_kept(
    make_model_home, tmp_path, synthetic_split
) -> None:
    settings = _budget(make_model_home, tmp_path, {"early_stopping_rounds": 5}, {"xgboost": 1},
                       {"xgboost": {"n_estimators": {"choice": [3000]}, "learning_rate": {"choice": [0.5]},
                                    "max_depth": {"choice": [6]}}})
    train, _ = synthetic_split(settings.schema, n=800)
    result = search_candidate("xgboost", train[settings.schema.feature_columns], train[LABEL], settings)
    trees = result.pipeline.named_steps["model"].get_params()["n_estimators"]
    assert trees == result.best_params["n_estimators"]
    assert 1 <= trees < 300  # without early stopping: 3,000 trees
    assert result.pipeline.named_steps["model"].get_booster().num_boosted_rounds() == trees


def test_random_forest_trees_draw_at_most_max_rows_when_the_data_has_more(
    make_model_home, tmp_path, synthetic_split
) -> None:
    settings = _budget(make_model_home, tmp_path, {"max_rows": 400, "min_rows": 100}, {"random_forest": 1})
    train, _ = synthetic_split(settings.schema, n=1200)
    X, y = train[settings.schema.feature_columns], train[LABEL]
    big = search_candidate("random_forest", X, y, settings)
    assert big.pipeline.named_steps["model"].max_samples == 400 == big.best_params["max_samples"]
    small = search_candidate("random_forest", X.iloc[:400], y.iloc[:400], settings)
    assert small.pipeline.named_steps["model"].max_samples is None  # no more rows than the search saw


def test_search_logs_progress_with_candidate_round_setting_elapsed_and_eta(
    model_settings, synthetic_split, caplog
) -> None:
    import logging

    train, _ = synthetic_split(model_settings.schema, n=600)
    with caplog.at_level(logging.INFO, logger="churnops.progress"):
        search_candidate("logistic_regression", train[model_settings.schema.feature_columns], train[LABEL],
                         model_settings, position="1/3")
    lines = [r.fields for r in caplog.records if r.name == "churnops.progress"]
    assert lines, "no progress line"
    last = lines[-1]
    assert last["task"] == "search logistic_regression" and last["candidate"] == "logistic_regression"
    assert last["position"] == "1/3" and last["round"] == "1/1"
    assert last["done"] == last["total"] == 2 * model_settings.params.train.cv_folds
    assert last["setting"] in {"1/2", "2/2"} and last["of_settings"] == 2
    assert last["elapsed_s"] >= 0 and last["eta_s"] == 0
