"""Analytics building blocks: bands, reasons in words, action rules, settings checks, the SQL adapter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from churnops.analytics.actions import change_in_words, phrase, recommend
from churnops.analytics.segments import band, band_labels
from churnops.settings import AnalyticsSettings, SettingsError, load_settings

REPO = Path(__file__).resolve().parents[3]


def test_bands_hold_their_lower_edge_and_name_missing_values_unknown() -> None:
    edges = [30, 40, 50]
    assert band_labels(edges) == ["<30", "30-40", "40-50", "50+"]
    assert band_labels([2500, 10000]) == ["<2,500", "2,500-10,000", "10,000+"]
    got = band(pd.Series([18, 29.9, 30, 39, 40, 50, 99, np.nan]), edges)
    assert list(got) == ["<30", "<30", "30-40", "30-40", "40-50", "50+", "50+", "Unknown"]


def test_a_change_ratio_reads_as_up_or_down_in_percent() -> None:
    assert change_in_words(0.6) == "down 40%"
    assert change_in_words(1.25) == "up 25%"
    assert change_in_words(1.001) == "unchanged"
    reasons = {"Total_Ct_Chng_Q4_Q1": "transactions {change} Q4 vs Q1",
               "Contacts_Count_12_mon": "{value:.0f} contacts in 12 months"}
    assert phrase("Total_Ct_Chng_Q4_Q1", 0.6, reasons) == "transactions down 40% Q4 vs Q1"
    assert phrase("Contacts_Count_12_mon", 5.0, reasons) == "5 contacts in 12 months"
    assert phrase("Credit_Limit", 1500.0, reasons) == "Credit_Limit 1500"  # no phrase configured


def _cfg(**over) -> AnalyticsSettings:
    doc = {
        "default_action": "Call",
        "actions": [
            {"name": "service", "action": "Service call", "priority": 1,
             "drivers": ["Contacts_Count_12_mon"]},
            {"name": "engage", "action": "Engagement offer", "priority": 2,
             "drivers": ["Total_Ct_Chng_Q4_Q1", "Total_Trans_Ct"]},
            {"name": "reactivate", "action": "Reactivation", "priority": 2,
             "drivers": ["Months_Inactive_12_mon"]},
        ],
        "reasons": {"Total_Ct_Chng_Q4_Q1": "transactions {change} Q4 vs Q1",
                    "Contacts_Count_12_mon": "{value:.0f} contacts in 12 months"},
    }
    doc.update(over)
    return AnalyticsSettings.model_validate(doc)


def test_the_best_priority_rule_among_the_drivers_wins_and_ties_go_to_the_stronger_driver() -> None:
    schema = load_settings(home=REPO).schema
    frame = pd.DataFrame({"Total_Ct_Chng_Q4_Q1": [0.6, 0.6, 0.6, 1.0], "Contacts_Count_12_mon": [5, 5, 1, 1],
                          "Months_Inactive_12_mon": [3, 3, 3, 1], "Total_Trans_Ct": [20, 20, 20, 20],
                          "Customer_Age": [40, 40, 40, 61]})
    names = np.array([
        ["Total_Ct_Chng_Q4_Q1", "Contacts_Count_12_mon", None],  # service call outranks the stronger driver
        ["Months_Inactive_12_mon", "Total_Ct_Chng_Q4_Q1", None],  # same priority: the stronger driver's rule
        ["Total_Ct_Chng_Q4_Q1", "Months_Inactive_12_mon", None],
        ["Customer_Age", None, None],  # no rule: the default action
    ], dtype=object)
    recs = recommend(names, frame, schema, _cfg())
    assert [r.action for r in recs] == ["Service call", "Reactivation", "Engagement offer", "Call"]
    assert recs[0].reason == "transactions down 40% Q4 vs Q1; 5 contacts in 12 months"
    assert recs[3].action_name == "default"


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"value_column": "Gender"}, "analytics.value_column 'Gender' is not a numeric column"),
        ({"value_column": "Revenue"}, "analytics.value_column 'Revenue' is not a numeric column"),
        ({"bands": {"Customer_Age": [40, 30]}}, "ascending edges"),
        ({"bands": {"Gender": [1, 2]}}, "analytics.bands: 'Gender' is not a numeric column"),
        ({"actions": [{"name": "x", "action": "X", "priority": 1, "drivers": ["Nope"]}]},
         "drivers ['Nope'] are neither feature columns nor ratios"),
        ({"reasons": {"Nope": "{value}"}}, "analytics.reasons: ['Nope']"),
    ],
)
def test_analytics_settings_name_the_bad_key(tmp_path: Path, section: dict, message: str) -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["analytics"].update(section)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(SettingsError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_settings(home=tmp_path)


def test_a_database_that_is_down_gives_a_sentence_without_the_password() -> None:
    from churnops import database

    engine = database.create_engine("postgresql+psycopg2://churn:s3cret@127.0.0.1:1/marts")
    with pytest.raises(database.DatabaseError) as info:
        database.has_table(engine, "mart_run_kpi")
    assert "cannot reach the database" in str(info.value) and "s3cret" not in str(info.value)
    assert "127.0.0.1:1" in str(info.value)
    with pytest.raises(database.DatabaseError, match="not a database URL"):
        database.create_engine("not a url")


def _without(params: dict, numeric: list[str]) -> dict:
    """`params` with numeric columns removed from the schema, and the ratios that used them."""
    schema = params["schema"]
    for col in numeric:
        del schema["numeric"][col]
    schema["ratios"] = {k: v for k, v in schema["ratios"].items() if not set(v) & set(numeric)}
    return params


def test_another_schema_works_by_editing_the_schema_only(tmp_path: Path) -> None:
    params = _without(yaml.safe_load((REPO / "params.yaml").read_text()),
                      ["Total_Trans_Amt", "Customer_Age", "Months_Inactive_12_mon", "Avg_Open_To_Buy"])
    assert not {"value_column", "bands", "actions", "reasons"} & set(params["analytics"])  # the defaults
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    cfg = load_settings(home=tmp_path, env={}).params.analytics
    assert cfg.value_column is None  # no revenue at risk; every other figure stays
    assert set(cfg.bands) == {"Months_on_book", "Credit_Limit"}
    rules = {r.name: r.drivers for r in cfg.actions}
    assert "reactivation_campaign" not in rules  # its only driver is gone: the rule is off
    assert "Avg_Open_To_Buy" not in rules["credit_review"] and "Credit_Limit" in rules["credit_review"]
    assert rules["service_recovery"] == ["Contacts_Count_12_mon"]  # its ratio went with the column
    assert "Customer_Age" not in cfg.reasons
    said = " | ".join(cfg.skipped)
    for name in ("'Total_Trans_Amt'", "band of 'Customer_Age'", "'reactivation_campaign'", "'credit_review'"):
        assert name in said
    # the reference schema itself skips nothing
    assert load_settings(home=REPO, env={}).params.analytics.skipped == ()


@pytest.mark.parametrize(("section", "message"), [
    ({"value_column": "Total_Trans_Amt"}, "analytics.value_column 'Total_Trans_Amt' is not a numeric column"),
    ({"bands": {"Customer_Age": [30, 40]}}, "analytics.bands: 'Customer_Age' is not a numeric column"),
    ({"actions": [{"name": "x", "action": "X", "priority": 1, "drivers": ["Avg_Open_To_Buy"]}]},
     "drivers ['Avg_Open_To_Buy'] are neither"),
])
def test_names_set_in_params_must_fit_the_schema(tmp_path: Path, section: dict, message: str) -> None:
    params = _without(yaml.safe_load((REPO / "params.yaml").read_text()),
                      ["Total_Trans_Amt", "Customer_Age", "Avg_Open_To_Buy"])
    params["analytics"].update(section)  # written by the user: a name the schema lacks is a typo to fix
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(SettingsError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_settings(home=tmp_path, env={})
