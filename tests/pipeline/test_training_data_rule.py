"""Which table retraining uses next: the champion's. A completed run that is not promoted puts the raw
table back to the champion's data version, and says so; a table far from the champion's is flagged.

Real CLI, real DVC (cache and local remote), real MLflow store.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.pipeline.conftest import make_project, run_cli, sha

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROWS = 1500


def md5_of_pointer(home: Path) -> str:
    return yaml.safe_load((home / "data/raw/customers.csv.dvc").read_text())["outs"][0]["md5"]


def set_margin(home: Path, margin: float) -> None:
    params = yaml.safe_load((home / "params.yaml").read_text())
    params["register"]["promotion_margin"] = margin
    (home / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = make_project(tmp_path_factory.mktemp("rule") / "home")
    run_cli(home, "data", "generate", "--rows", str(ROWS), "--seed", "3", "--out", "incoming/champion.csv")
    # the same kind of customers, but churn at a quarter of the rate: a label that moved far
    run_cli(home, "data", "generate", "--rows", str(ROWS), "--seed", "5", "--churn-rate", "0.04",
            "--out", "incoming/odd.csv")
    return home


def test_a_run_that_is_not_promoted_puts_the_champions_table_back_and_says_so(home: Path) -> None:
    first = json.loads(run_cli(home, "train", "--data", "incoming/champion.csv", "--json").stdout)
    assert first["promotion"]["promoted"] is True
    champion_md5, champion_sha = first["data_version"], sha(home / "data/raw/customers.csv")
    assert first["next_training_data"]["data_version"] == champion_md5

    set_margin(home, 1.0)  # no challenger can beat the champion by a whole ROC-AUC
    try:
        proc = run_cli(home, "train", "--data", "incoming/odd.csv")
        report = json.loads((home / "reports/run_report.json").read_text())
    finally:
        set_margin(home, 0.001)

    assert report["promotion"]["promoted"] is False
    odd_md5 = report["data_version"]
    assert odd_md5 != champion_md5
    # the rule, in the report and on screen
    assert report["next_training_data"]["data_version"] == champion_md5
    assert report["next_training_data"]["this_run"] == odd_md5
    assert f"next retraining uses data version {champion_md5}" in proc.stdout
    # the raw table (what drift-triggered retraining trains on) is the champion's again
    assert md5_of_pointer(home) == champion_md5
    assert sha(home / "data/raw/customers.csv") == champion_sha
    # the rejected table is still versioned: in the cache and the remote
    assert any((home / ".dvc-storage").rglob(odd_md5[2:]))
    # and it was flagged: its label rate moved far from the champion's
    check = report["data_check"]
    assert check["flagged"] is True and check["label_rate"]["flagged"] is True
    assert check["label_rate"]["this_run"] < 0.5 * check["label_rate"]["champion_data"]
    assert "FLAGGED" in proc.stdout


def test_retraining_without_data_then_trains_on_the_champions_table(home: Path) -> None:
    report = json.loads(run_cli(home, "train", "--json").stdout)
    assert report["retrained"] is True
    assert report["data_version"] == md5_of_pointer(home)
    champion = json.loads(run_cli(home, "models", "champion", "--json").stdout)
    assert report["data_version"] == champion["data_version"]
    assert report["data_check"]["flagged"] is False  # the champion's own table is not far from itself
