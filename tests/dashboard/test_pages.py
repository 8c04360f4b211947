"""Every dashboard page through Streamlit's own harness (AppTest), figures checked against values computed
here from the model's probabilities; bad input (no run, one segment, no value column, database down) gives
a sentence on the page, never an exception."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tests.dashboard.conftest import expected, riskier, write_run

REPO = Path(__file__).resolve().parents[2]
APP = str(REPO / "dashboard" / "app.py")

pytestmark = pytest.mark.integration


def _app(page: str | None = None):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=120)
    if page:
        at.query_params["page"] = page
    return at.run()


def _metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def _clean(at) -> None:
    assert not at.exception, [e.message for e in at.exception]


def _number(text: str) -> float:
    return float(text.replace(",", "").rstrip("%"))


def test_overview_shows_the_runs_kpis_trend_movement_and_actions(make_home, model) -> None:
    home = make_home()
    first = model.customers
    second = riskier(first, 300)
    write_run(home, model, first, "night-1", minutes=0)
    write_run(home, model, second, "night-2", minutes=60)
    at = _app()
    _clean(at)
    exp = expected(model, second)
    shown = _metrics(at)
    assert shown["Customers"] == f"{len(second):,}"
    assert shown["Expected churners"] == f"{exp.p.sum():,.0f}"
    assert shown["Churn rate"] == f"{exp.p.mean():.1%}"
    assert shown["High risk"] == f"{(exp.level == 'High').sum():,}"
    assert shown["Revenue at risk"] == f"{exp.loss.sum():,.0f}"
    before = expected(model, first)
    up = int((before.level.map({"Low": 0, "Medium": 1, "High": 2}).to_numpy()
              < exp.level.map({"Low": 0, "Medium": 1, "High": 2}).to_numpy()).sum())
    assert up > 0 and shown["Riskier"] == f"{up:,}"
    charts = at.get("vega_lite_chart")
    assert len(charts) >= 3  # risk levels, churn-rate trend, revenue trend
    assert "night-2" in at.caption[0].value
    assert not at.error


def test_segments_filter_and_breakdown_match_pandas(make_home, model) -> None:
    home = make_home()
    write_run(home, model, model.customers, "night-1")
    at = _app("Segments")
    _clean(at)
    exp = expected(model, model.customers)
    assert _metrics(at)["Customers"] == f"{len(exp):,}"
    at.multiselect(key="filter_gender").set_value(["F"])
    at.multiselect(key="filter_card_category").set_value(["Blue", "Silver"])
    at.selectbox(key="breakdown").set_value("income_category")
    at.run()
    _clean(at)
    subset = exp[(exp.Gender == "F") & exp.Card_Category.isin(["Blue", "Silver"])]
    shown = _metrics(at)
    assert shown["Customers"] == f"{len(subset):,}"
    assert shown["Expected churners"] == f"{subset.p.sum():,.0f}"
    assert shown["Revenue at risk"] == f"{subset.loss.sum():,.0f}"
    table = at.dataframe[0].value.set_index("segment")
    by_income = subset.groupby("Income_Category").p.agg(["size", "sum"])
    assert table.customers.to_dict() == by_income["size"].to_dict()
    for segment, total in by_income["sum"].items():
        assert math.isclose(table.loc[segment, "expected_churners"], total, rel_tol=1e-9)
    assert len(at.get("vega_lite_chart")) == 2


def test_customer_explorer_shows_score_drivers_action_and_history(make_home, model) -> None:
    home = make_home()
    write_run(home, model, model.customers, "night-1", minutes=0)
    write_run(home, model, riskier(model.customers, 300), "night-2", minutes=60)
    exp = expected(model, riskier(model.customers, 300))
    high = exp[exp.level == "High"].sort_values("loss", ascending=False).iloc[0]
    at = _app("Customers")
    _clean(at)
    assert len(at.dataframe) == 1  # the highest expected losses to pick from
    at.text_input(key="customer_id").set_value(str(high.CLIENTNUM)).run()
    _clean(at)
    shown = _metrics(at)
    assert shown["Churn probability"] == f"{high.p:.1%}"
    assert shown["Risk level"] == "High"
    assert shown["Expected loss"] == f"{high.loss:,.0f}"
    assert at.success and "—" in at.success[0].value  # the action and its reason in words
    history = at.dataframe[-1].value
    assert list(history.run_id) == ["night-1", "night-2"]
    at.text_input(key="customer_id").set_value("no-such-customer").run()
    _clean(at)
    assert "No customer 'no-such-customer'" in at.warning[0].value


def test_anomalies_page_lists_flagged_customers_and_values_out_of_range(make_home, model) -> None:
    home = make_home()
    customers = model.customers.copy()
    customers.loc[customers.index[:3], "Credit_Limit"] = 900_000  # far beyond the training range
    write_run(home, model, customers, "night-1")
    at = _app("Anomalies")
    _clean(at)
    flagged, _ = model.detector.score_frame(customers[model.schema.feature_columns])[1], None
    assert _metrics(at)["Flagged customers"] == f"{int(flagged.sum()):,}"
    table = at.dataframe[0].value
    assert set(customers.CLIENTNUM[:3].astype(str)) <= set(table.customer_id)
    assert table.out_of_range.str.contains("Credit_Limit=900000", na=False).sum() == 3


def test_model_and_drift_page_without_a_champion_or_report_says_so(make_home) -> None:
    make_home()
    at = _app("Model & drift")
    _clean(at)
    texts = " ".join(i.value for i in at.info)
    assert "No @champion yet" in texts and "No drift report" in texts


def test_model_and_drift_page_shows_the_latest_drift_check(make_home, model) -> None:
    from churnops.settings import load_settings
    from monitoring.detect import DriftConfig, DriftDetector
    from monitoring.report import write_reports

    home = make_home()
    settings = load_settings(home=home)
    cols = model.schema.feature_columns
    reference = model.customers[cols].iloc[:1500]
    current = model.customers[cols].iloc[1500:].copy()
    current["Total_Trans_Ct"] = current["Total_Trans_Ct"] * 0.5  # a real shift
    detector = DriftDetector.from_schema(reference, model.schema,
                                         DriftConfig.from_settings(settings.params.monitoring))
    result = detector.check(current)
    write_reports(result, settings.reports_dir / "drift")
    at = _app("Model & drift")
    _clean(at)
    assert any("**DRIFT**" in m.value for m in at.markdown)
    features = at.dataframe[0].value
    assert features.iloc[0].feature == "Total_Trans_Ct" and bool(features.iloc[0].drift)


@pytest.mark.parametrize("page", ["Overview", "Segments", "Customers", "Anomalies"])
def test_no_scoring_run_yet_says_what_to_run(make_home, page: str) -> None:
    make_home()
    at = _app(page)
    _clean(at)
    assert "No scoring run" in at.info[0].value and "churnops score" in at.info[0].value


@pytest.mark.parametrize("page", ["Overview", "Segments", "Customers", "Anomalies"])
def test_a_database_that_is_down_gives_a_sentence_not_a_traceback(make_home, page: str) -> None:
    make_home(database_url="postgresql+psycopg2://churn:s3cret@127.0.0.1:1/marts")
    at = _app(page)
    _clean(at)
    message = at.error[0].value
    assert "cannot be read" in message and "127.0.0.1:1" in message and "s3cret" not in message


def test_a_run_with_one_segment_and_no_value_column(make_home, model) -> None:
    home = make_home({"value_column": None})
    customers = model.customers.copy()
    customers["Card_Category"] = "Blue"
    write_run(home, model, customers, "night-1")
    at = _app()
    _clean(at)
    assert _metrics(at)["Revenue at risk"] == "—"
    assert any("value_column" in i.value for i in at.info)
    at = _app("Segments")
    at.selectbox(key="breakdown").set_value("card_category").run()
    _clean(at)
    assert any("one card category segment: Blue" in i.value for i in at.info)
    assert _metrics(at)["Revenue at risk"] == "—"
    assert at.dataframe[0].value.customers.tolist() == [len(customers)]
