"""On the reference table, with the params.yaml budgets, the best candidate reaches the product's target.

Skipped when /work/shared/data/BankChurners.csv (../shared/data from the repo) is absent. Slow: the full
search budget (about a few minutes on two idle cores; benchmarks/bench_training.py times it).
"""

from __future__ import annotations

import shutil

import pytest

from churnops.models.training import train_candidates
from churnops.settings import load_settings
from tests.churnops.models.conftest import LABEL, REPO, real_gold

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_best_candidate_reaches_auc_099_and_f1_091_without_leaking(real_data, tmp_path, mlflow_template):
    from sklearn.model_selection import train_test_split

    shutil.copyfile(mlflow_template, tmp_path / "mlflow.db")
    settings = load_settings(home=REPO, env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
                                             "CHURNOPS_ARTIFACT_ROOT": str(tmp_path / "artifacts")})
    frame = real_gold(settings.schema, real_data)
    assert not set(settings.schema.drop_columns) & set(frame.columns)
    split = settings.params.features
    train, test = train_test_split(frame, test_size=split.test_size, stratify=frame[LABEL],
                                   random_state=split.seed)

    result = train_candidates(train, test, settings, data_version="reference", git_commit="test")

    best = result.best.holdout_metrics
    summary = {c.candidate: {k: round(v, 4) for k, v in c.holdout_metrics.items()} for c in result.candidates}
    assert best["roc_auc"] >= 0.99, summary
    assert best["f1"] >= 0.91, summary
    assert best["roc_auc"] < 0.999, f"hold-out AUC {best['roc_auc']:.4f} is too good: a leak? {summary}"
