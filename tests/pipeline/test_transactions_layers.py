"""The data layers with `source: transactions`: the raw lines become the per-customer table of
``transactions.schema``, validated by the customer table's rules, split in time (no DVC, no training)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from churnops.data.validate import validate_table
from churnops.transactions.generate import RetailerProfile, generate_to_file
from pipeline.layers import GoldPaths, StageError, featurize_stage, read_raw, validate_stage


@pytest.fixture
def settings(settings_factory):
    settings = settings_factory({"source": "transactions"})
    generate_to_file(settings.raw_path, settings.params.transactions.columns,
                     profile=RetailerProfile(customers=600), seed=9)
    return settings


def test_validate_and_featurize_build_the_schema_table_and_hold_out_the_latest_cutoff(settings) -> None:
    validate_stage(settings)
    paths = featurize_stage(settings)

    schema = settings.schema
    validated = pd.read_parquet(settings.validated_path)
    assert list(validated.columns) == schema.required_columns
    assert set(validated[schema.target.column]) == {"churned", "active"}
    report = json.loads((settings.reports_dir / "validation.json").read_text())
    assert report["ok"] and report["stats"]["cutoff"]["distinct"] == 5
    assert json.loads((settings.reports_dir / "transactions_validation.json").read_text())["ok"]

    gold = pd.read_parquet(paths.customers)
    train, test = pd.read_parquet(paths.train), pd.read_parquet(paths.test)
    assert len(train) + len(test) == len(gold) == len(validated)
    assert test["cutoff"].nunique() == 1 and (train["cutoff"] < test["cutoff"].iloc[0]).all()
    assert GoldPaths.of(settings).customers == paths.customers


def test_the_customer_table_rules_see_a_customer_twice_at_one_cutoff_and_bad_dates(settings) -> None:
    frame = read_raw(settings, settings.raw_path)
    assert frame[settings.schema.time_column].nunique() == 5
    frame = pd.concat([frame, frame.iloc[[0]]], ignore_index=True)  # the same customer, same cut-off
    frame.loc[3, "cutoff"] = "2011-13-40"
    report = validate_table(frame, settings.schema, settings.params.validate_)

    assert not report.ok
    assert {i.rule for i in report.errors} == {"duplicate_id", "not_a_date"}
    assert "with the same cutoff" in report.find("duplicate_id")[0].message
    # the same customer at several cut-offs is fine
    assert report.find("duplicate_id")[0].rows == 2


def test_bad_transactions_stop_the_stage_and_leave_the_layer(settings) -> None:
    validate_stage(settings)
    before = settings.validated_path.read_bytes()
    lines = pd.read_csv(settings.raw_path, dtype=str, keep_default_na=False)
    lines.loc[4, "InvoiceDate"] = "2099-01-01 10:00:00"
    lines.to_csv(settings.raw_path, index=False)

    with pytest.raises(StageError, match="future_date"):
        validate_stage(settings)
    assert settings.validated_path.read_bytes() == before


def test_the_demo_switches_the_source_line_of_params_yaml_and_keeps_the_rest(make_home, tmp_path) -> None:
    from churnops.settings import load_settings
    from pipeline.demo import switch_source
    from tests.conftest import REPO

    home = tmp_path / "demo-home"
    home.mkdir()
    (home / "params.yaml").write_text((REPO / "params.yaml").read_text())
    settings = load_settings(home=home, env={})
    switched = switch_source(settings, "transactions")

    assert switched.source == "transactions" and switched.model_name == "churn-classifier-transactions"
    before = (REPO / "params.yaml").read_text().splitlines()
    after = (home / "params.yaml").read_text().splitlines()
    assert [a for a, b in zip(before, after, strict=True) if a != b] == ["source: customer_table"]
    assert switch_source(switched, "transactions") is switched

    text = (home / "params.yaml").read_text()
    (home / "params.yaml").write_text(text.replace("source: transactions\n", ""))
    with pytest.raises(ValueError, match="no top-level `source:` line"):
        switch_source(load_settings(home=home, env={}), "transactions")
