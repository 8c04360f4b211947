"""The registry against a real MLflow SQLite store: promotion gate, aliases, rollback, loading, the CLI.

The module builds one story (three training runs on the same hold-out):
  run 1, labels shuffled (a useless model)  -> v1, first model: becomes champion
  run 2, real labels                        -> v2, beats v1 on the hold-out: promoted, @previous = v1
  run 3, labels shuffled again              -> v3, worse than v2: stays challenger, reason recorded
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from churnops import registry
from churnops.models.evaluation import classification_metrics
from churnops.models.training import train_candidates
from churnops.settings import load_settings
from tests.churnops.models.conftest import LABEL

pytestmark = pytest.mark.integration

CLEAN_ENV = {v: None for v in ("CHURNOPS_HOME", "CHURNOPS_PARAMS", "MLFLOW_TRACKING_URI",
                               "CHURNOPS_ARTIFACT_ROOT")}


def _shuffled(frame, seed):
    return frame.assign(**{LABEL: np.random.default_rng(seed).permutation(frame[LABEL].to_numpy())})


@pytest.fixture(scope="module")
def story(make_model_home, tmp_path_factory, synthetic_split):
    home = tmp_path_factory.mktemp("registry") / "home"
    settings = make_model_home(home, {"train": {"candidates": ["logistic_regression"]}})
    train, test = synthetic_split(settings.schema, n=1000, seed=7)
    runs, decisions = [], []
    for i, frame in enumerate([_shuffled(train, 1), train, _shuffled(train, 2)], start=1):
        result = train_candidates(frame, test, settings, data_version=f"data-{i}", git_commit=f"commit-{i}")
        runs.append(result)
        decisions.append(registry.register_best(settings, result, test))
    return SimpleNamespace(settings=settings, home=home, train=train, test=test, runs=runs,
                           decisions=decisions)


def _client(settings):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri)


def test_first_model_becomes_champion(story) -> None:
    first = story.decisions[0]
    assert first.promoted and first.challenger_version == "1"
    assert first.champion_version is None and first.champion_score is None
    assert "no champion" in first.reason


def test_better_challenger_is_promoted_and_old_champion_kept_as_previous(story) -> None:
    second = story.decisions[1]
    assert second.promoted, second.reason
    assert (second.challenger_version, second.champion_version) == ("2", "1")
    assert second.challenger_score > second.champion_score + story.settings.params.register_.promotion_margin
    mv2 = _client(story.settings).get_model_version(story.settings.params.register_.model_name, "2")
    assert mv2.tags["previous_champion"] == "1"


def test_worse_challenger_is_not_promoted_and_the_decision_is_recorded(story) -> None:
    third = story.decisions[2]
    assert not third.promoted
    assert third.champion_version == "2" and third.challenger_score < third.champion_score
    assert "does not beat champion v2" in third.reason
    assert registry.champion_version(story.settings) == "2"
    client = _client(story.settings)
    mv3 = client.get_model_version(story.settings.params.register_.model_name, "3")
    assert mv3.tags["promotion.promoted"] == "false"
    assert mv3.tags["promotion.reason"] == third.reason
    assert float(mv3.tags["promotion.champion_score"]) == pytest.approx(third.champion_score)
    parent = client.get_run(story.runs[2].parent_run_id)
    assert parent.data.tags["promotion.promoted"] == "false"
    assert parent.data.tags["promotion.reason"] == third.reason
    assert parent.data.tags["registered_version"] == "3"


def test_gate_rescores_the_champion_on_the_current_holdout(story) -> None:
    third = story.decisions[2]
    champion = registry.load_version(story.settings, "2")
    X = story.test[story.settings.schema.feature_columns]
    proba = champion.scorer.pipeline.predict_proba(X)[:, 1]
    expected = classification_metrics(story.test[LABEL], proba, champion.threshold)["roc_auc"]
    assert third.metric == "roc_auc" and third.rows == len(story.test)
    assert third.champion_score == pytest.approx(expected)


def test_gate_scores_both_models_on_the_holdout_it_is_given_not_on_recorded_metrics(story) -> None:
    from tests.churnops.models.conftest import gold_frame

    other = gold_frame(story.settings.schema, 400, seed=99)
    before = registry.champion_version(story.settings)
    decision = registry.evaluate_gate(story.settings, "3", other)
    X, y = other[story.settings.schema.feature_columns], other[LABEL]
    for version, score in (("2", decision.champion_score), ("3", decision.challenger_score)):
        model = registry.load_version(story.settings, version)
        expected = classification_metrics(y, model.scorer.predict_proba_frame(X), model.threshold)["roc_auc"]
        assert score == pytest.approx(expected)
        assert score != pytest.approx(registry.version_info(story.settings, version)["metrics"]["roc_auc"])
    assert decision.rows == 400 and registry.champion_version(story.settings) == before  # nothing moved


def test_aliases_and_version_tags(story) -> None:
    versions = {v["version"]: v for v in registry.list_versions(story.settings)}
    assert [v for v in versions] == ["3", "2", "1"]
    assert versions["2"]["aliases"] == ["champion"]
    assert versions["1"]["aliases"] == ["previous"]
    assert versions["3"]["aliases"] == ["challenger"]
    v2 = versions["2"]
    run2 = story.runs[1].best
    assert v2["candidate"] == "logistic_regression" and v2["run_id"] == run2.run_id
    assert v2["data_version"] == "data-2" and v2["git_commit"] == "commit-2"
    assert v2["params_hash"] == story.settings.params_hash
    assert v2["threshold"] == pytest.approx(run2.threshold, abs=1e-6)
    assert v2["metrics"] == pytest.approx(run2.holdout_metrics)


def test_champion_info_describes_the_champion(story) -> None:
    info = registry.champion_info(story.settings)
    assert info["version"] == "2" and "champion" in info["aliases"]
    assert info["metrics"]["roc_auc"] == pytest.approx(story.runs[1].best.holdout_metrics["roc_auc"])
    assert info["data_version"] == "data-2" and info["registered_at"]
    assert info["previous_champion"] == "1" and info["champion_since"]


def test_load_champion_returns_a_scorer_matching_the_logged_pipeline(story) -> None:
    from churnops.tracking import load_candidate_pipeline

    champion = registry.load_champion(story.settings)
    assert champion.version == "2" and champion.run_id == story.runs[1].best.run_id
    X = story.test[story.settings.schema.feature_columns]
    best = story.runs[1].best
    logged = load_candidate_pipeline(best.run_id, best.model_uri, story.settings)
    np.testing.assert_allclose(champion.scorer.predict_proba_frame(X), logged.predict_proba(X)[:, 1],
                               rtol=1e-9)
    records = X.head(10).to_dict(orient="records")
    np.testing.assert_allclose(champion.scorer.predict_proba_records(records),
                               logged.predict_proba(X.head(10))[:, 1], rtol=1e-9)
    assert champion.threshold == pytest.approx(story.runs[1].best.threshold, abs=1e-6)


def test_load_reference_returns_the_training_features(story) -> None:
    reference = registry.load_reference(story.settings, "2")
    assert list(reference.columns) == story.settings.schema.feature_columns
    assert len(reference) == len(story.train)


def test_each_version_carries_an_outlier_detector_fitted_on_its_reference(story) -> None:
    detector = registry.load_outlier_detector(story.settings, "2")
    assert detector is not None
    reference = registry.load_reference(story.settings, "2")
    scores, flags = detector.score_frame(reference.head(200))
    assert len(scores) == 200 and np.isfinite(scores).all()
    assert flags.mean() < 0.2  # training rows are mostly normal
    odd = reference.head(1).copy()
    odd["Credit_Limit"] = 900_000.0
    assert detector.score_records(odd.to_dict("records"))[0].to_dict()["is_outlier"] is True


def test_cli_champion_json(story) -> None:
    from churnops.cli import main

    out = CliRunner(env=CLEAN_ENV).invoke(main, ["--home", str(story.home), "models", "champion", "--json"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output)
    assert doc["version"] == "2" and doc["data_version"] == "data-2"
    assert doc["metrics"]["roc_auc"] == pytest.approx(story.runs[1].best.holdout_metrics["roc_auc"])


def test_cli_list_shows_versions_with_aliases(story) -> None:
    from churnops.cli import main

    out = CliRunner(env=CLEAN_ENV).invoke(main, ["--home", str(story.home), "models", "list"])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert lines[0].split()[:4] == ["version", "aliases", "candidate", "roc_auc"]
    assert lines[2].split()[:3] == ["2", "champion", "logistic_regression"]
    assert "data-2" in lines[2]


def test_failed_training_leaves_the_champion_untouched(story) -> None:
    raw = yaml.safe_load(story.settings.params_path.read_text())
    raw["train"]["search_spaces"]["logistic_regression"] = {"C": {"choice": [-1.0]}}
    broken = story.home / "broken.yaml"
    broken.write_text(yaml.safe_dump(raw))
    settings = load_settings(home=story.home, params_path=broken, env={})
    before = {v["version"]: v["aliases"] for v in registry.list_versions(story.settings)}
    with pytest.raises(Exception, match="C"):
        result = train_candidates(story.train, story.test, settings, "data-x", "commit-x")
        registry.register_best(settings, result, story.test)
    after = {v["version"]: v["aliases"] for v in registry.list_versions(story.settings)}
    assert after == before and registry.champion_version(story.settings) == "2"


def test_restore_aliases_puts_back_what_a_stopped_training_run_moved(story) -> None:
    settings = story.settings
    client = _client(settings)
    name = settings.params.register_.model_name
    before = registry.aliases(settings)
    assert before == {"champion": "2", "previous": "1", "challenger": "3"}
    # a register step stopped after the gate moved them (and another alias went astray)
    for alias, version in (("champion", "3"), ("previous", "2"), ("challenger", "1")):
        client.set_registered_model_alias(name, alias, version)

    restored = registry.restore_aliases(settings, before, reason="training run stopped by SIGTERM")

    assert restored == {"champion": "2", "previous": "1", "challenger": "3"}
    assert registry.aliases(settings) == before
    mv3 = client.get_model_version(name, "3")  # the champion went back by a recorded rollback
    assert mv3.tags["rollback.replaced_by"] == "2"
    assert mv3.tags["rollback.reason"] == "training run stopped by SIGTERM"
    assert registry.restore_aliases(settings, before, reason="again") == {}  # nothing moved: nothing done

    # a run before the first champion: its aliases are removed; then put back as the story had them
    assert registry.restore_aliases(settings, {}, reason="first run stopped") == {
        "champion": None, "previous": None, "challenger": None}
    assert registry.aliases(settings) == {}
    assert registry.restore_aliases(settings, before, reason="story") == before
    assert registry.aliases(settings) == before


def test_rollback_restores_the_previous_champion_and_records_why(story) -> None:
    # runs last: it moves @champion and leaves it where it found it
    from churnops.cli import main

    settings = story.settings
    result = registry.rollback(settings, reason="v2 misbehaves in production")
    assert (result.from_version, result.to_version, result.previous) == ("2", "1", None)
    assert registry.champion_version(settings) == "1"
    assert registry.load_champion(settings).version == "1"
    client = _client(settings)
    name = settings.params.register_.model_name
    mv2 = client.get_model_version(name, "2")
    assert mv2.tags["rollback.reason"] == "v2 misbehaves in production"
    assert mv2.tags["rollback.replaced_by"] == "1"
    assert json.loads(client.get_registered_model(name).tags["last_rollback"])["to"] == "1"
    assert "previous" not in client.get_registered_model(name).aliases

    # v1 replaced no champion: a further rollback needs an explicit version
    with pytest.raises(registry.RegistryError, match="--to VERSION"):
        registry.rollback(settings)

    out = CliRunner(env=CLEAN_ENV).invoke(
        main, ["--home", str(story.home), "models", "rollback", "--to", "2", "--reason", "fixed upstream"])
    assert out.exit_code == 0, out.output
    assert "v1 -> v2" in out.output
    assert registry.champion_version(settings) == "2"
    assert client.get_registered_model(name).aliases["previous"] == 1


def test_no_champion_is_a_clear_error(model_settings, tmp_path) -> None:
    from churnops.cli import main

    assert registry.champion_info(model_settings) is None
    assert registry.champion_version(model_settings) is None
    assert registry.list_versions(model_settings) == []
    with pytest.raises(registry.NoChampionError, match="no @champion"):
        registry.load_champion(model_settings)
    with pytest.raises(registry.NoChampionError):
        registry.rollback(model_settings)
    out = CliRunner(env=CLEAN_ENV).invoke(main, ["--home", str(model_settings.home), "models", "champion"])
    assert out.exit_code == 1 and "no @champion" in out.output
    out = CliRunner(env=CLEAN_ENV).invoke(main, ["--home", str(model_settings.home), "models", "rollback"])
    assert out.exit_code == 1 and "no @champion" in out.output


def test_champion_that_cannot_score_the_new_schema_is_replaced(make_model_home, tmp_path, synthetic_split):
    home = tmp_path / "home"
    settings = make_model_home(home, {"train": {"candidates": ["logistic_regression"]}})
    train, test = synthetic_split(settings.schema, n=500, seed=11)
    first = registry.register_best(settings, train_candidates(train, test, settings, "d1", "g1"), test)
    assert first.promoted

    raw = yaml.safe_load(settings.params_path.read_text())
    del raw["schema"]["numeric"]["Avg_Open_To_Buy"]  # the contract drops a column (the schema only)
    (home / "params_v2.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    settings_v2 = load_settings(home=home, params_path=home / "params_v2.yaml", env={})
    train2, test2 = (f.drop(columns=["Avg_Open_To_Buy"]) for f in (train, test))
    result = train_candidates(train2, test2, settings_v2, "d2", "g2")
    decision = registry.register_best(settings_v2, result, test2)
    assert decision.promoted and decision.champion_version == "1" and decision.champion_score is None
    assert "cannot score the current hold-out" in decision.reason and "Avg_Open_To_Buy" in decision.reason
    assert registry.champion_version(settings_v2) == "2"


def test_champion_scores_rows_once_encoded_and_with_a_detector_of_another_encoding(story) -> None:
    from churnops.outliers import fit_outlier_detector

    champion = registry.load_champion(story.settings)
    records = registry.load_reference(story.settings, "2").head(30).to_dict("records")
    proba, anomalies = champion.score_records(records)
    np.testing.assert_array_equal(proba, champion.scorer.predict_proba_records(records))
    assert anomalies == champion.outliers.score_records(records)
    # a detector fitted without the ratio features encodes differently: it gets the raw rows instead
    schema = story.settings.schema.model_copy(update={"ratios": {}})
    other = fit_outlier_detector(registry.load_reference(story.settings, "2"), schema, seed=1)
    mixed = registry.ChampionModel(version="x", run_id="r", scorer=champion.scorer, info={}, outliers=other)
    assert not mixed._shares_encoding
    assert mixed.score_records(records)[1] == other.score_records(records)
