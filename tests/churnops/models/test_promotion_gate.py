"""The promotion gate knows noise: a paired comparison (DeLong's test) on the same hold-out rows, against a
real MLflow registry, on constructed cases.

  v1: labels shuffled (a useless model)          -> first model: champion
  v2: real labels, sample A                      -> clearly better than v1: promoted
  v3: real labels, sample B of the same customers -> a same-quality retrain: its hold-out ROC-AUC is higher
                                                    than v2's by more than the 0.001 margin, but within the
                                                    hold-out's noise: kept
  v3 again on a hold-out with 12 positives       -> the gate refuses to decide: undecided, champion stays
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner

from churnops import registry
from churnops.cli import main
from churnops.models.training import train_candidates
from tests.churnops.models.conftest import LABEL, gold_frame

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def gate(make_model_home, tmp_path_factory):
    from sklearn.model_selection import train_test_split

    home = tmp_path_factory.mktemp("gate") / "home"
    settings = make_model_home(home, {"train": {"candidates": ["logistic_regression"]}})
    frame = gold_frame(settings.schema, 2000, seed=11)
    train, test = train_test_split(frame, test_size=0.25, stratify=frame[LABEL], random_state=11)
    train, test = train.reset_index(drop=True), test.reset_index(drop=True)
    shuffled = train.assign(**{LABEL: np.random.default_rng(1).permutation(train[LABEL].to_numpy())})
    decisions = []
    for i, rows in enumerate([shuffled, gold_frame(settings.schema, 1500, seed=14),
                              gold_frame(settings.schema, 1500, seed=13)], start=1):
        result = train_candidates(rows, test, settings, data_version=f"data-{i}", git_commit=f"commit-{i}")
        decisions.append(registry.register_best(settings, result, test))
    return SimpleNamespace(settings=settings, home=home, test=test, decisions=decisions)


def test_clearly_better_challenger_is_promoted_with_a_significant_difference(gate) -> None:
    better = gate.decisions[1]
    assert better.promoted and better.decision == "promoted", better.reason
    cmp = better.comparison
    assert cmp["method"] == "delong" and cmp["ci_low"] > 0 and cmp["p_value"] < 1e-6
    assert cmp["difference"] == pytest.approx(better.challenger_score - better.champion_score)
    assert better.positives == int(gate.test[LABEL].sum()) >= 30


def test_same_quality_retrain_is_not_promoted_though_it_beats_the_margin(gate) -> None:
    retrain = gate.decisions[2]
    margin = gate.settings.params.register_.promotion_margin
    assert retrain.challenger_score - retrain.champion_score > margin  # a fixed margin alone would promote
    assert not retrain.promoted and retrain.decision == "kept"
    cmp = retrain.comparison
    assert cmp["ci_low"] < 0 < cmp["ci_high"] and cmp["p_value"] > 0.05
    assert "within the hold-out's noise" in retrain.reason and "95% CI" in retrain.reason
    assert registry.champion_version(gate.settings) == "2"


def test_tiny_hold_out_makes_the_gate_refuse_to_decide(gate) -> None:
    test = gate.test
    tiny = pd_concat(test[test[LABEL] == 1].head(12), test[test[LABEL] == 0].head(200))
    decision = registry.promote(gate.settings, "3", tiny)
    assert decision.decision == "undecided" and not decision.promoted and decision.comparison is None
    assert "12 positive" in decision.reason and "min_positives 30" in decision.reason
    assert registry.champion_version(gate.settings) == "2"
    tags = registry.version_info(gate.settings, "3")["promotion"]
    assert tags["decision"] == "undecided" and tags["reason"] == decision.reason
    assert "difference" not in tags  # the earlier decision's comparison is not left behind


def test_models_commands_show_the_difference_its_interval_and_the_decision(gate) -> None:
    env = {"CHURNOPS_HOME": None, "CHURNOPS_PARAMS": None, "MLFLOW_TRACKING_URI": None,
           "CHURNOPS_ARTIFACT_ROOT": None}
    runner = CliRunner(env=env)
    listed = runner.invoke(main, ["--home", str(gate.home), "models", "list"], catch_exceptions=False)
    assert listed.exit_code == 0, listed.output
    rows = {line.split()[0]: line for line in listed.output.splitlines()[1:]}
    cmp = gate.decisions[1].comparison
    assert (f"promoted {cmp['difference']:+.5f} [{cmp['ci_low']:+.5f}, {cmp['ci_high']:+.5f}]"
            in rows["2"])
    assert "undecided" in rows["3"]
    champion = runner.invoke(main, ["--home", str(gate.home), "models", "champion"], catch_exceptions=False)
    assert f"promotion: promoted {cmp['difference']:+.5f} [{cmp['ci_low']:+.5f}" in champion.output
    assert "95% CI" in champion.output


def pd_concat(*frames):
    import pandas as pd

    return pd.concat(frames, ignore_index=True)
