"""Pages of the analytics dashboard: overview, segments, customers, anomalies, model & drift.

Every figure comes from a pre-aggregated mart or an indexed lookup
(:class:`churnops.analytics.read.MartReader`) and the model registry; queries are cached for ``CACHE_S``
seconds. Whatever goes wrong (no run yet, a database that is down, a registry that cannot be read) shows
as a sentence on the page, never a traceback.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from churnops import database
from churnops.analytics.read import MartReader
from churnops.analytics.tables import tables
from churnops.logs import get_logger
from churnops.redaction import redact_url
from churnops.settings import Settings, SettingsError, load_settings

log = get_logger(__name__)

PAGES = ("Overview", "Segments", "Customers", "Anomalies", "Model & drift")
LEVELS = ("High", "Medium", "Low")
CACHE_S = 30


# -- plumbing ------------------------------------------------------------------------------------
@st.cache_resource(show_spinner=False)
def _reader(url: str, params_path: str, home: str) -> MartReader:
    settings = load_settings(home=home, params_path=params_path)
    return MartReader(database.engine_for(settings), tables(settings))


@st.cache_data(ttl=CACHE_S, show_spinner=False)
def _query(_reader: MartReader, url: str, name: str, *args: Any) -> Any:
    """A cached MartReader query (`url` keys the cache; the reader itself is not hashed)."""
    return getattr(_reader, name)(*args)


def _pretty(name: str) -> str:
    return name.replace("_", " ").capitalize()


def _money(value: Any) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:,.0f}"


def _pct(value: Any) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1%}"


def _bar(frame: pd.DataFrame, column: str, title: str, order: list[str], fmt: str) -> alt.Chart:
    return (alt.Chart(frame, title=title).mark_bar()
            .encode(x=alt.X("segment:N", sort=order, title=None, axis=alt.Axis(labelAngle=0)),
                    y=alt.Y(f"{column}:Q", title=None, axis=alt.Axis(format=fmt)),
                    tooltip=["segment", alt.Tooltip(f"{column}:Q", format=fmt), "customers"]))


class Page:
    """What every page gets: the settings, the marts, the kept runs and the chosen run."""

    def __init__(self, settings: Settings, reader: MartReader, runs: pd.DataFrame, run_id: str | None):
        self.settings, self.reader, self.runs, self.run_id = settings, reader, runs, run_id
        self.url = settings.database_url

    def q(self, name: str, *args: Any) -> Any:
        return _query(self.reader, self.url, name, *args)

    @property
    def kpi(self) -> pd.Series:
        return self.runs.set_index("run_id").loc[self.run_id]

    @property
    def has_value(self) -> bool:
        return self.settings.analytics.value_column is not None


# -- pages ---------------------------------------------------------------------------------------
def overview(page: Page) -> None:
    st.header("Churn risk overview")
    k = page.kpi
    position = list(page.runs.run_id).index(page.run_id)
    prev = page.runs.iloc[position - 1] if position > 0 else None
    st.caption(f"Run {page.run_id} · scored {k.scored_at} · model version {k.model_version} · "
               f"data version {k.data_version or 'unknown'}")

    def delta(col: str, fmt: Callable[[Any], str]) -> str | None:
        return None if prev is None or pd.isna(prev[col]) else fmt(k[col] - prev[col])

    cols = st.columns(6)
    cols[0].metric("Customers", f"{int(k.customers):,}")
    cols[1].metric("Expected churners", f"{k.expected_churners:,.0f}", delta("expected_churners",
                   lambda d: f"{d:+,.0f}"), delta_color="inverse")
    cols[2].metric("Churn rate", _pct(k.churn_rate), delta("churn_rate", lambda d: f"{d:+.1%}"),
                   delta_color="inverse")
    cols[3].metric("High risk", f"{int(k.high):,}", delta("high", lambda d: f"{d:+,.0f}"),
                   delta_color="inverse")
    cols[4].metric("Revenue at risk", _money(k.revenue_at_risk),
                   delta("revenue_at_risk", lambda d: f"{d:+,.0f}") if page.has_value else None,
                   delta_color="inverse")
    cols[5].metric("Anomalies", f"{int(k.anomalies):,}")
    if not page.has_value or pd.isna(k.revenue_at_risk):
        st.info("Revenue at risk is not computed: `analytics.value_column` is not set in params.yaml "
                "(every other figure is).")
    left, right = st.columns(2)
    levels = pd.DataFrame({"risk level": list(LEVELS), "customers": [int(k.high), int(k.medium), int(k.low)]})
    left.altair_chart(alt.Chart(levels, title="Customers by risk level").mark_bar().encode(
        x=alt.X("risk level:N", sort=list(LEVELS)), y="customers:Q",
        color=alt.Color("risk level:N", sort=list(LEVELS), legend=None)), width="stretch")
    if len(page.runs) > 1:
        trend = page.runs[["scored_at", "churn_rate", "high", "revenue_at_risk"]].copy()
        right.altair_chart(alt.Chart(trend, title="Churn rate across runs").mark_line(point=True).encode(
            x=alt.X("scored_at:T", title=None), y=alt.Y("churn_rate:Q", axis=alt.Axis(format="%"))),
            width="stretch")
        if page.has_value:
            st.altair_chart(alt.Chart(trend, title="Revenue at risk across runs").mark_line(point=True)
                            .encode(x=alt.X("scored_at:T", title=None), y="revenue_at_risk:Q"),
                            width="stretch")
    else:
        right.info("Trends across runs appear from the second scoring run on.")
    st.subheader("Movement since the previous run")
    if k.previous_run_id is None or pd.isna(k.previous_run_id):
        st.write("This is the first kept run: nothing to compare with.")
    else:
        c1, c2 = st.columns(2)
        c1.metric("Riskier", f"{int(k.moved_up):,}")
        c2.metric("Less risky", f"{int(k.moved_down):,}")
        summary = page.q("movement_summary", page.run_id)
        if not summary.empty:
            st.dataframe(summary.rename(columns={"previous_level": "from", "risk_level": "to"}),
                         hide_index=True)
    st.subheader("Top recommended actions")
    actions = page.q("actions", page.run_id, 10)
    if actions.empty:
        st.write("No customer at an action risk level in this run.")
    else:
        st.dataframe(actions[["action_rank", "customer_id", "churn_probability", "expected_loss",
                              "recommended_action", "action_reason"]], hide_index=True)


def segments(page: Page) -> None:
    st.header("Segments")
    dims = page.reader.dimensions
    filters: dict[str, list[str]] = {}
    with st.expander("Filters", expanded=True):
        cols = st.columns(4)
        for i, d in enumerate(dims):
            filters[d.name] = cols[i % 4].multiselect(_pretty(d.name), list(d.labels), key=f"filter_{d.name}")
    names = [d.name for d in dims]
    first_band = next((i for i, d in enumerate(dims) if d.edges), 0)
    by = st.selectbox("Break down by", names, index=first_band, format_func=_pretty, key="breakdown")
    chosen = {k: v for k, v in filters.items() if v}
    frame = page.q("breakdown", page.run_id, by, chosen)
    totals = page.q("totals", page.run_id, chosen)
    cols = st.columns(4)
    cols[0].metric("Customers", f"{int(totals['customers']):,}")
    cols[1].metric("Expected churners", f"{totals['expected_churners']:,.0f}")
    cols[2].metric("Churn rate", _pct(totals["churn_rate"]))
    cols[3].metric("Revenue at risk", _money(totals["revenue_at_risk"]))
    if frame.empty:
        st.warning("No customer matches these filters.")
        return
    if len(frame) == 1:
        st.info(f"All matching customers fall in one {_pretty(by).lower()} segment: "
                f"{frame.segment.iloc[0]}.")
    order = list(frame.segment)
    left, right = st.columns(2)
    left.altair_chart(_bar(frame, "churn_rate", f"Churn rate by {_pretty(by).lower()}", order, ".1%"),
                      width="stretch")
    if page.has_value:
        right.altair_chart(_bar(frame, "revenue_at_risk", f"Revenue at risk by {_pretty(by).lower()}", order,
                                ",.0f"), width="stretch")
    else:
        right.info("Revenue at risk needs `analytics.value_column` in params.yaml.")
    shown = frame[["segment", "customers", "expected_churners", "churn_rate", "high", "medium", "low",
                   "anomalies", "revenue_at_risk"]]
    st.dataframe(shown, hide_index=True)


def customers(page: Page) -> None:
    st.header("Customer explorer")
    default = st.query_params.get("customer", "")
    customer_id = st.text_input("Customer id", value=default, key="customer_id").strip()
    if not customer_id:
        st.write("Enter a customer id, or pick one of the run's highest expected losses:")
        st.dataframe(page.q("actions", page.run_id, 20)[["customer_id", "risk_level", "churn_probability",
                                                         "expected_loss", "recommended_action"]],
                     hide_index=True)
        return
    history = page.q("history", customer_id)
    if history.empty:
        st.warning(f"No customer {customer_id!r} in the kept scoring runs.")
        return
    current = history[history.run_id == page.run_id]
    row = (current if not current.empty else history).iloc[-1]
    if current.empty:
        st.info(f"Customer {customer_id} was not scored in run {page.run_id}; showing run {row.run_id}.")
    cols = st.columns(4)
    cols[0].metric("Churn probability", f"{row.churn_probability:.1%}")
    cols[1].metric("Risk level", row.risk_level)
    cols[2].metric("Expected loss", _money(row.expected_loss))
    cols[3].metric("Anomaly", "yes" if row.anomaly else "no", help=f"score {row.anomaly_score:.3f}")
    if row.recommended_action:
        st.success(f"**{row.recommended_action}** — {row.action_reason}")
    if row.top_drivers:
        drivers = pd.DataFrame({"driver": row.top_drivers.split(", "),
                                "effect": [float(x) for x in row.driver_effects.split(", ")]})
        st.write("Risk drivers (the model's own contributions, strongest first: log-odds of churn; for a "
                 "random forest, share of the probability):")
        st.dataframe(drivers, hide_index=True)
    if row.anomaly and row.out_of_range:
        st.warning(f"Out of the training range: {row.out_of_range}")
    profile = page.q("customer", customer_id)
    if profile:
        st.write("Segments: " + " · ".join(f"{_pretty(k)} **{v}**" for k, v in profile.items()
                                          if k not in ("customer_id", "run_id")))
    st.altair_chart(alt.Chart(history, title="Churn probability across runs").mark_line(point=True).encode(
        x=alt.X("scored_at:T", title=None), y=alt.Y("churn_probability:Q", axis=alt.Axis(format="%")),
        tooltip=["run_id", "churn_probability", "risk_level"]), width="stretch")
    st.dataframe(history[["run_id", "scored_at", "churn_probability", "risk_level", "anomaly",
                          "recommended_action", "model_version"]], hide_index=True)


def anomalies(page: Page, limit: int = 500) -> None:
    st.header("Anomalies")
    k = page.kpi
    st.metric("Flagged customers", f"{int(k.anomalies):,}")
    flagged = page.q("anomalies", page.run_id, limit)
    if flagged.empty:
        st.success("No customer of this run looks unusual to the champion's outlier detector.")
        return
    columns = (flagged.out_of_range.dropna().str.split("; ").explode().str.split("=").str[0])
    if not columns.empty:
        counts = columns.value_counts().rename_axis("column").reset_index(name="customers")
        st.altair_chart(alt.Chart(counts, title="Values out of the training range, by column").mark_bar()
                        .encode(x=alt.X("column:N", sort="-y"), y="customers:Q"), width="stretch")
    else:
        st.write("Every flagged customer is unusual for its combination of values; none is out of range.")
    st.caption(f"The {min(limit, len(flagged))} most anomalous customers (Isolation Forest score, "
               f"highest first)")
    st.dataframe(flagged, hide_index=True)


def _drift_reports(settings: Settings) -> list[dict[str, Any]]:
    docs = []
    root = settings.reports_dir
    for path in root.rglob("drift.json") if root.is_dir() else []:
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        docs.append({**doc, "_path": str(path)})
    return sorted(docs, key=lambda d: str(d.get("created_at") or ""), reverse=True)


def model_and_drift(settings: Settings) -> None:
    from churnops import registry

    st.header("Model & drift")
    try:
        champion = registry.champion_info(settings)
        versions = registry.list_versions(settings)
    except Exception as exc:  # the registry is an outside system: say what failed, keep the page
        log.warning("dashboard.registry_unreadable", error=str(exc))
        where = redact_url(settings.mlflow_tracking_uri)
        st.error(f"The model registry at {where} cannot be read: {exc}")
        champion, versions = None, []
    if champion is None:
        st.info("No @champion yet: train one with `churnops train`.")
    else:
        st.subheader(f"Champion: version {champion['version']} ({champion['candidate']})")
        st.caption(f"champion since {champion.get('champion_since') or 'unknown'} · data version "
                   f"{champion.get('data_version')} · threshold {champion.get('threshold')}")
        metrics = pd.DataFrame([champion["metrics"]])
        st.dataframe(metrics, hide_index=True)
    if versions:
        rows = [{"version": v["version"], "aliases": ", ".join(v["aliases"]), "candidate": v["candidate"],
                 "registered": v["registered_at"], "champion since": v["champion_since"],
                 "promoted": v["promotion"].get("promoted"), "reason": v["promotion"].get("reason"),
                 **{m: round(x, 4) for m, x in v["metrics"].items()}} for v in versions]
        st.subheader("Promotion history")
        st.dataframe(pd.DataFrame(rows), hide_index=True)
    st.subheader("Drift checks")
    reports = _drift_reports(settings)
    if not reports:
        st.info(f"No drift report under {settings.reports_dir} yet (`churnops drift check` writes one).")
        return
    latest = reports[0]
    verdict = "DRIFT" if latest.get("drift") else "no drift"
    st.write(f"Latest check ({latest.get('created_at')}): **{verdict}** — {latest.get('message', '')}")
    if latest.get("actions"):
        st.write("Actions taken: " + json.dumps(latest["actions"]))
    features = pd.DataFrame(latest.get("features") or [])
    if not features.empty:
        keep = [c for c in ("feature", "test", "p_value", "effect_size", "drift") if c in features]
        st.dataframe(features[keep].sort_values("effect_size", ascending=False), hide_index=True)
    history = pd.DataFrame([{"checked": r.get("created_at"), "status": r.get("status"),
                             "drifted": ", ".join(r.get("drifted_features") or []),
                             "window": r.get("window_size"), "report": r["_path"]} for r in reports])
    st.dataframe(history, hide_index=True)


RUN_PAGES: dict[str, Callable[[Page], None]] = {
    "Overview": overview, "Segments": segments, "Customers": customers, "Anomalies": anomalies}


# -- the app -------------------------------------------------------------------------------------
def main() -> None:
    st.set_page_config(page_title="churnops · churn risk", layout="wide")
    st.sidebar.title("churnops")
    wanted = st.query_params.get("page", PAGES[0])
    name = st.sidebar.radio("Page", PAGES, index=PAGES.index(wanted) if wanted in PAGES else 0, key="page")
    try:
        settings = load_settings()
    except SettingsError as exc:
        st.error(f"The settings cannot be read: {exc}")
        return
    try:
        if name == "Model & drift":
            model_and_drift(settings)
            return
        reader = _reader(settings.database_url, str(settings.params_path), str(settings.home))
        runs = _query(reader, settings.database_url, "runs")
        if runs.empty:
            st.header(name)
            st.info(f"No scoring run in {redact_url(settings.database_url)} yet: run `churnops score` "
                    f"(or the churn_batch_scoring DAG), then reload this page.")
            return
        ids = list(runs.run_id)
        run_id = st.sidebar.selectbox("Scoring run", ids[::-1], index=0, key="run")
        st.sidebar.caption(f"{len(ids)} kept run(s); marts in {redact_url(settings.database_url)}")
        RUN_PAGES[name](Page(settings, reader, runs, run_id))
    except database.DatabaseError as exc:
        st.error(f"The analytics marts cannot be read: {exc}")
    except Exception as exc:  # never a traceback in the page: say what failed, log the details
        log.exception("dashboard.page_failed", page=name)
        st.error(f"The {name} page failed: {type(exc).__name__}: {exc}")
