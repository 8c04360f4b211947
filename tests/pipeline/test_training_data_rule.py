"""Which table retraining uses next: the champion's. A completed run that is not promoted puts the raw
table, the layers and dvc.lock back to the champion's data version, and says so; a table far from the
champion's is flagged.

Real CLI, real DVC (cache and local remote), real MLflow store.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.pipeline.conftest import make_project, run_cli, settings_of, sha

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROWS = 1500


def md5_of_pointer(home: Path) -> str:
    return yaml.safe_load((home / "data/raw/customers.csv.dvc").read_text())["outs"][0]["md5"]


def cache_object(home: Path, md5: str) -> Path:
    """Where DVC's local cache keeps data version `md5`."""
    return home / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]


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
    layers = ("data/validated/customers.parquet", "data/features/customers.parquet",
              "data/features/train.parquet", "data/features/test.parquet", "dvc.lock")
    champion_layers = {name: sha(home / name) for name in layers}
    assert first["next_training_data"]["data_version"] == champion_md5

    # the champion's table only on the DVC remote (a fresh clone, a cleaned cache): the check fetches it
    cached = cache_object(home, champion_md5)
    cached.unlink()
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
    # and so are the layers (what `features push` and `score` read) and dvc.lock, as the DAG's publish does;
    # the run's own reports stay, saying what was tried
    assert {name: sha(home / name) for name in layers} == champion_layers
    assert json.loads((home / "reports/run_report.json").read_text())["data_version"] == odd_md5
    # the rejected table is still versioned: in the cache and the remote
    assert any((home / ".dvc-storage").rglob(odd_md5[2:]))
    # and it was flagged: its label rate moved far from the champion's
    check = report["data_check"]
    assert check["compared"] is True and cached.is_file(), check
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


def test_the_data_check_fetches_the_champions_table_from_the_remote_and_says_when_it_is_gone(
        tmp_path: Path) -> None:
    """No training: a table versioned and pushed with real DVC, then dropped from the local cache."""
    from churnops.data.generate import generate_to_csv
    from pipeline.layers import check_table, to_gold
    from pipeline.training_data import data_check
    from pipeline.versioning import add_and_push

    home = make_project(tmp_path / "home")
    settings = settings_of(home)
    raw = settings.raw_path
    generate_to_csv(settings.schema, rows=800, seed=3, out=raw)
    champion_md5 = add_and_push(home, raw, settings.dvc_remote)
    odd = generate_to_csv(settings.schema, rows=800, seed=5, churn_rate=0.04, out=tmp_path / "odd.csv")
    gold = to_gold(check_table(settings, odd, report_dir=tmp_path / "report").clean, settings)
    champion = {"version": "1", "data_version": champion_md5}
    cached = cache_object(home, champion_md5)
    cached.unlink()
    workspace = {p: sha(p) for p in (raw, home / "data/raw/customers.csv.dvc")}

    check = data_check(settings, gold, champion)

    assert check["compared"] is True, check
    assert check["label_rate"]["flagged"] is True and check["flagged"] is True
    assert cached.is_file(), "fetched into the local cache"
    assert {p: sha(p) for p in workspace} == workspace, "the workspace was not touched"

    cached.unlink()
    next(Path(settings.dvc_remote).rglob(champion_md5[2:])).unlink()  # gone from the remote too

    check = data_check(settings, gold, champion)

    assert check["compared"] is False and check["flagged"] is False
    assert check["champion_data_version"] == champion_md5
    assert (f"the champion's data version {champion_md5} is neither in the DVC cache nor on the DVC remote "
            f"{settings.dvc_remote}") in check["reason"], check["reason"]
