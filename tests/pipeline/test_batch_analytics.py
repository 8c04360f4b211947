"""Analytics marts written by batch scoring, checked against figures computed here from the scores and the
gold layer, on SQLite and on the real local PostgreSQL: KPIs, segments, cells, movement, actions, retries,
a refused write, a schema without a value column, `churnops actions`."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.integration

LEVELS = ("High", "Medium", "Low")


def _settings(home: Path, url: str | None):
    from churnops.settings import load_settings

    return load_settings(home=home, env={"CHURNOPS_DATABASE_URL": url} if url else {})


def _table(settings, name: str, run_id: str | None = None) -> pd.DataFrame:
    import sqlalchemy as sa

    engine = sa.create_engine(settings.database_url)
    try:
        frame = pd.read_sql(sa.text(f"SELECT * FROM {name}"), engine)
    finally:
        engine.dispose()
    return frame if run_id is None else frame[frame.run_id == run_id].reset_index(drop=True)


def _execute(settings, statement: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(settings.database_url)
    with engine.begin() as conn:
        conn.execute(sa.text(statement))
    engine.dispose()


def _gold(settings) -> pd.DataFrame:
    gold = pd.read_parquet(settings.features_dir / "customers.parquet")
    gold["customer_id"] = gold[settings.schema.id_column].astype(str)
    return gold


def _riskier(gold: pd.DataFrame, settings, n: int) -> pd.DataFrame:
    """The gold layer with `n` customers made to look like churners (few, falling transactions, inactive)."""
    changed = gold.drop(columns="customer_id").copy()
    idx = changed.index[:n]
    changed.loc[idx, "Total_Trans_Ct"] = 12
    changed.loc[idx, "Total_Ct_Chng_Q4_Q1"] = 0.2
    changed.loc[idx, "Total_Trans_Amt"] = 900
    changed.loc[idx, "Months_Inactive_12_mon"] = 5
    changed.loc[idx, "Contacts_Count_12_mon"] = 5
    changed.loc[idx, "Total_Revolving_Bal"] = 0
    return changed


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str | None:
    if request.param == "sqlite":
        return None  # the default: a SQLite file under the home
    return request.getfixturevalue("postgres_url")


def test_marts_and_kpis_match_figures_computed_from_the_scores_and_a_retry_does_not_duplicate(
    scoring_home: Path, database_url: str | None
) -> None:
    from churnops import registry
    from pipeline.batch import score_customers

    settings = _settings(scoring_home, database_url)
    levels = settings.params.serving.risk_levels
    cfg = settings.params.analytics
    gold = _gold(settings)
    changed_path = scoring_home / "changed.parquet"
    _riskier(gold, settings, 150).to_parquet(changed_path, index=False)

    score_customers(settings, run_id="night-1")
    # a BI tool's own view on one of ours
    _execute(settings, "CREATE VIEW bi_own AS SELECT customer_id, risk_level FROM v_latest_scores")
    score_customers(settings, run_id="night-2", customers=changed_path)
    score_customers(settings, run_id="night-2", customers=changed_path)  # a retried run

    fact = _table(settings, settings.params.batch.table)
    assert fact.groupby("run_id").size().to_dict() == {"night-1": len(gold), "night-2": len(gold)}
    kpi = _table(settings, "mart_run_kpi").set_index("run_id")
    assert sorted(kpi.index) == ["night-1", "night-2"]

    changed = pd.read_parquet(changed_path)
    changed["customer_id"] = changed[settings.schema.id_column].astype(str)
    for run_id, features in (("night-1", gold), ("night-2", changed)):
        scores = fact[fact.run_id == run_id].merge(features, on="customer_id", validate="one_to_one")
        p = scores.churn_probability.to_numpy()
        level = np.array([levels.level(x) for x in p])
        row = kpi.loc[run_id]
        assert row.customers == len(features)
        assert math.isclose(row.expected_churners, p.sum(), rel_tol=1e-9)
        assert math.isclose(row.churn_rate, p.mean(), rel_tol=1e-9)
        assert [row.high, row.medium, row.low] == [int((level == lv).sum()) for lv in LEVELS]
        assert row.anomalies == int(scores.anomaly.astype(bool).sum())
        revenue = float((p * scores[cfg.value_column].to_numpy()).sum())
        assert math.isclose(row.revenue_at_risk, revenue, rel_tol=1e-9)
        assert math.isclose(row.value_total, float(scores[cfg.value_column].sum()), rel_tol=1e-9)
        assert row.model_version == registry.champion_version(settings)

        # per-segment mart: a categorical column and a band, grouped here with pandas' own tools
        segment = _table(settings, "mart_segment", run_id)
        by_gender = scores.groupby("Gender").churn_probability.agg(["size", "sum"])
        got = segment[segment.dimension == "gender"].set_index("segment")
        assert got.customers.to_dict() == by_gender["size"].to_dict()
        for g, expected in by_gender["sum"].items():
            assert math.isclose(got.loc[g, "expected_churners"], expected, rel_tol=1e-9)
        edges = cfg.bands["Customer_Age"]
        labels = ["<30", "30-40", "40-50", "50-60", "60+"]
        assert edges == [30, 40, 50, 60]
        age = pd.cut(scores.Customer_Age, [-np.inf, *edges, np.inf], right=False, labels=labels)
        by_age = scores.assign(band=age.astype(str)).groupby("band")
        got = segment[segment.dimension == "customer_age_band"].set_index("segment")
        assert got.customers.to_dict() == by_age.size().to_dict()
        high_by_age = by_age.churn_probability.apply(lambda s: int((s > levels.high).sum()))
        assert got.high.to_dict() == high_by_age.to_dict()
        assert list(got.sort_values("segment_order").index) == [b for b in labels if b in got.index]

        # segment cells: the finest grain sums to the run, and a filtered breakdown matches pandas
        cells = _table(settings, "mart_segment_cell", run_id)
        assert cells.customers.sum() == len(features)
        assert math.isclose(cells.revenue_at_risk.sum(), revenue, rel_tol=1e-9)
        from churnops.analytics.read import MartReader

        with MartReader.open(settings) as marts:
            got = marts.breakdown(run_id, "income_category", {"gender": ["F"], "card_category": ["Blue"]})
            totals = marts.totals(run_id)
        subset = scores[(scores.Gender == "F") & (scores.Card_Category == "Blue")]
        expected = subset.groupby("Income_Category").churn_probability.agg(["size", "sum"])
        assert got.set_index("segment").customers.to_dict() == expected["size"].to_dict()
        for seg, value in expected["sum"].items():
            assert math.isclose(got.set_index("segment").loc[seg, "expected_churners"], value, rel_tol=1e-9)
        assert totals["customers"] == len(features)
        assert math.isclose(totals["revenue_at_risk"], revenue, rel_tol=1e-9)

    # movement: every customer whose level changed between the runs, in the right direction
    first = fact[fact.run_id == "night-1"].set_index("customer_id")
    second = fact[fact.run_id == "night-2"].set_index("customer_id")
    rank = {"Low": 0, "Medium": 1, "High": 2}
    before, after = first.risk_level.map(rank), second.risk_level.map(rank).reindex(first.index)
    expected_up = set(first.index[after > before])
    expected_down = set(first.index[after < before])
    assert expected_up, "the changed customers should have become riskier"
    movement = _table(settings, "mart_risk_movement", "night-2")
    assert set(movement[movement.direction == "up"].customer_id) == expected_up
    assert set(movement[movement.direction == "down"].customer_id) == expected_down
    assert set(movement.previous_run_id) == {"night-1"}
    assert (kpi.loc["night-2", "moved_up"], kpi.loc["night-2", "moved_down"]) == (
        len(expected_up), len(expected_down))
    assert _table(settings, "mart_risk_movement", "night-1").empty  # nothing before the first run

    # customer dimension: one row per customer, as of the latest run
    dim = _table(settings, "dim_customer")
    assert len(dim) == dim.customer_id.nunique() == len(gold)
    assert set(dim.run_id) == {"night-2"}

    # the movement summary (the overview's table): movers per (previous level, level), counted here
    pairs = pd.DataFrame({"previous_level": first.risk_level, "risk_level": after.map(
        {v: k for k, v in rank.items()})})
    pairs = pairs[before != after]
    summary = _table(settings, "mart_movement_summary", "night-2")
    assert summary.set_index(["previous_level", "risk_level"]).customers.to_dict() == (
        pairs.groupby(["previous_level", "risk_level"]).size().to_dict())
    assert set(zip(summary.previous_level, summary.risk_level, summary.direction, strict=True)) == {
        (a, b, "up" if rank[b] > rank[a] else "down") for a, b in zip(pairs.previous_level, pairs.risk_level,
                                                                      strict=True)}

    # BI views: the latest run (night-2), checked against figures computed here
    night2 = second.reset_index().merge(changed, on="customer_id", validate="one_to_one")
    p2 = night2.churn_probability.to_numpy()
    view = _table(settings, "v_latest_kpi")
    assert list(view.run_id) == ["night-2"] and view.customers.iloc[0] == len(changed)
    assert math.isclose(view.expected_churners.iloc[0], p2.sum(), rel_tol=1e-9)
    revenue2 = float((p2 * night2[cfg.value_column]).sum())
    assert math.isclose(view.revenue_at_risk.iloc[0], revenue2, rel_tol=1e-9)
    view = _table(settings, "v_latest_scores").merge(night2[["customer_id", "Gender", "Customer_Age"]],
                                                      on="customer_id", validate="one_to_one")
    assert len(view) == len(changed) and set(view.run_id) == {"night-2"}
    assert (view.gender == view.Gender).all()
    age = pd.cut(view.Customer_Age, [-np.inf, *cfg.bands["Customer_Age"], np.inf], right=False,
                 labels=["<30", "30-40", "40-50", "50-60", "60+"])
    assert (view.customer_age_band == age.astype(str)).all()
    assert view.top_drivers.notna().mean() > 0.99
    view = _table(settings, "v_latest_segments")
    assert set(view.run_id) == {"night-2"}
    by_gender = night2.groupby("Gender").churn_probability.agg(["size", "sum"])
    got = view[view.dimension == "gender"].set_index("segment")
    assert got.customers.to_dict() == by_gender["size"].to_dict()
    for g, expected in by_gender["sum"].items():
        assert math.isclose(got.loc[g, "expected_churners"], expected, rel_tol=1e-9)
    view = _table(settings, "v_latest_movement")
    pair = ["previous_level", "risk_level"]
    pd.testing.assert_frame_equal(view.sort_values(pair).reset_index(drop=True),
                                  summary.sort_values(pair).reset_index(drop=True))
    view = _table(settings, "v_retention_actions")
    high2 = night2[night2.risk_level == "High"].sort_values(["expected_loss", "customer_id"],
                                                            ascending=[False, True])
    assert list(view.customer_id) == list(high2.customer_id)  # the view's own order: by rank
    assert list(view.action_rank) == list(range(1, len(high2) + 1))
    assert view.recommended_action.notna().all() and "gender" in view.columns
    # the BI tool's own view on ours survived both refreshes and reads the latest run
    assert len(_table(settings, "bi_own")) == len(changed)


def test_every_high_risk_customer_gets_one_action_ranked_by_expected_loss_with_the_models_drivers(
    scoring_home: Path,
) -> None:
    from churnops import registry
    from pipeline.batch import score_customers

    settings = _settings(scoring_home, None)
    cfg = settings.params.analytics
    gold = _gold(settings)
    changed_path = scoring_home / "changed.parquet"
    _riskier(gold, settings, 200).to_parquet(changed_path, index=False)
    score_customers(settings, run_id="night-1", customers=changed_path)
    fact = _table(settings, settings.params.batch.table)
    high = fact[fact.risk_level == "High"]
    assert len(high) >= 50
    assert high.recommended_action.notna().all() and high.action_reason.str.len().gt(0).all()
    assert fact[fact.risk_level != "High"].recommended_action.isna().all()
    assert fact.top_drivers.notna().mean() > 0.99  # every customer's drivers, not only those acted on
    known = {r.action for r in cfg.actions} | {cfg.default_action}
    assert set(high.recommended_action) <= known
    changed = pd.read_parquet(changed_path)
    changed["customer_id"] = changed[settings.schema.id_column].astype(str)
    merged = high.merge(changed, on="customer_id")
    expected_loss = merged.churn_probability * merged[cfg.value_column]
    assert np.allclose(merged.expected_loss, expected_loss, rtol=1e-12)
    ranked = merged.sort_values(["expected_loss", "customer_id"], ascending=[False, True])
    assert list(ranked.action_rank) == list(range(1, len(high) + 1))

    # the drivers are the model's own, as /predict?explain=true gives them (ratios named as in params.yaml)
    champion = registry.load_champion(settings)
    columns = settings.schema.feature_columns
    names = {f"{a}/{b}": name for name, (a, b) in settings.schema.ratios.items()}
    sample = merged.sort_values("action_rank").head(20)
    explained = champion.scorer.explain(sample[columns].to_dict("records"))
    for row, contributions in zip(sample.itertuples(), explained, strict=True):
        raising = [names.get(c.feature, c.feature) for c in contributions if c.effect > 0]
        assert row.top_drivers == ", ".join(raising[: cfg.top_drivers])
        # the chosen action: the best-priority rule matching one of these drivers
        matching = [r for r in cfg.actions if set(r.drivers) & set(raising[: cfg.top_drivers])]
        best = min(matching, key=lambda r: r.priority).action if matching else cfg.default_action
        assert row.recommended_action == best
    # reasons in words, from params.yaml's phrases
    contacts = merged[merged.top_drivers.str.contains("Contacts_Count_12_mon", na=False)]
    for row in contacts.head(5).itertuples():
        assert f"{row.Contacts_Count_12_mon:.0f} contacts in 12 months" in row.action_reason


def _refuse_inserts_into(settings, table: str) -> None:
    """A trigger that makes the database refuse any insert into `table` (the last write of a refresh)."""
    import sqlalchemy as sa

    engine = sa.create_engine(settings.database_url)
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(sa.text(f"CREATE TRIGGER refuse BEFORE INSERT ON {table} "
                                 f"BEGIN SELECT RAISE(ABORT, 'disk quota exceeded'); END"))
        else:
            conn.execute(sa.text("CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN "
                                 "RAISE EXCEPTION 'disk quota exceeded'; END $$ LANGUAGE plpgsql"))
            conn.execute(sa.text(f"CREATE TRIGGER refuse BEFORE INSERT ON {table} "
                                 f"FOR EACH STATEMENT EXECUTE FUNCTION refuse()"))
    engine.dispose()


def test_a_refused_refresh_leaves_the_previous_scores_and_marts_as_they_were(
    scoring_home: Path, database_url: str | None
) -> None:
    from pipeline.batch import BatchError, score_customers

    settings = _settings(scoring_home, database_url)
    score_customers(settings, run_id="good")
    names = [settings.params.batch.table, "dim_customer", "mart_run_kpi", "mart_segment",
             "mart_segment_cell", "mart_risk_movement", "mart_movement_summary"]
    before = {n: _table(settings, n) for n in names}
    _refuse_inserts_into(settings, "dim_customer")  # written last, after the scores and every mart
    with pytest.raises(BatchError, match="left as they were.*disk quota exceeded"):
        score_customers(settings, run_id="bad")
    with pytest.raises(BatchError, match="disk quota exceeded"):
        score_customers(settings, run_id="good")  # a retry of the good run that fails too
    for n in names:
        sort = [c for c in ("run_id", "customer_id", "dimension", "segment", "cell", "previous_level",
                            "risk_level") if c in before[n]]
        pd.testing.assert_frame_equal(before[n].sort_values(sort).reset_index(drop=True),
                                      _table(settings, n).sort_values(sort).reset_index(drop=True))


def test_a_schema_without_a_value_column_gets_every_other_figure(scoring_home: Path) -> None:
    from pipeline.batch import score_customers

    params = yaml.safe_load((scoring_home / "params.yaml").read_text())
    params["analytics"]["value_column"] = None
    (scoring_home / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    settings = _settings(scoring_home, None)
    result = score_customers(settings, run_id="no-value")
    kpi = _table(settings, "mart_run_kpi").iloc[0]
    assert kpi.customers == result.rows and kpi.expected_churners > 0
    assert pd.isna(kpi.revenue_at_risk) and pd.isna(kpi.value_column) and pd.isna(kpi.value_total)
    fact = _table(settings, settings.params.batch.table)
    assert fact.expected_loss.isna().all()
    actions = fact[fact.action_rank.notna()].sort_values("action_rank")
    assert list(actions.churn_probability) == sorted(actions.churn_probability, reverse=True)
    assert _table(settings, "mart_segment").revenue_at_risk.isna().all()


def test_actions_command_prints_the_top_actions_with_reasons(scoring_home: Path) -> None:
    from pipeline.batch import score_customers

    settings = _settings(scoring_home, None)
    churnops = Path(sys.executable).parent / "churnops"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHURNOPS_", "MLFLOW_"))}
    empty = subprocess.run([str(churnops), "--home", str(scoring_home), "actions", "--top", "5"],
                           capture_output=True, text=True, env=env, timeout=300)
    assert empty.returncode == 1 and "no scoring run" in empty.stderr and "Traceback" not in empty.stderr
    score_customers(settings, run_id="night-1")
    proc = subprocess.run([str(churnops), "--home", str(scoring_home), "actions", "--top", "5"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    fact = _table(settings, settings.params.batch.table)
    top = fact[fact.action_rank.notna()].sort_values("action_rank").head(5)
    lines = [ln for ln in proc.stdout.splitlines() if re.match(r"^\s*\d+\.\s", ln)]
    assert len(lines) == len(top)
    for line, row in zip(lines, top.itertuples(), strict=True):
        assert row.customer_id in line and row.recommended_action in line
        assert row.action_reason[:30] in proc.stdout


def test_each_run_exports_its_marts_as_csv_and_parquet_with_a_latest_copy(scoring_home: Path) -> None:
    import json

    from pipeline.batch import score_customers

    params = yaml.safe_load((scoring_home / "params.yaml").read_text())
    params["batch"]["keep_runs"] = 2
    (scoring_home / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    settings = _settings(scoring_home, None)
    root = settings.path(settings.params.analytics.export_dir)
    score_customers(settings, run_id="night-1")
    score_customers(settings, run_id="night-2")
    retried = score_customers(settings, run_id="night-2")  # replaces night-2's folder, not a second one
    last = score_customers(settings, run_id="night-3")  # night-1 is pruned: its folder goes too
    folders = sorted(p.name.split("__", 1)[1] for p in root.iterdir() if p.is_dir() and p.name != "latest")
    assert folders == ["night-2", "night-3"]
    assert Path(retried.exports).is_dir() and Path(last.exports).is_dir()
    marts = ["kpi", "segments", "segment_cells", "movement", "movement_summary", "actions", "customers"]
    for name in marts:
        parquet = pd.read_parquet(Path(last.exports) / f"{name}.parquet")
        csv = pd.read_csv(Path(last.exports) / f"{name}.csv")
        assert len(parquet) == len(csv) and list(parquet.columns) == list(csv.columns)
        pd.testing.assert_frame_equal(parquet, pd.read_parquet(root / "latest" / f"{name}.parquet"))
    manifest = json.loads((root / "latest" / "manifest.json").read_text())
    assert manifest["run_id"] == "night-3" and len(manifest["files"]) == 2 * len(marts)
    customers = pd.read_parquet(root / "latest" / "customers.parquet")
    fact = _table(settings, settings.params.batch.table, "night-3")
    assert sorted(customers.customer_id) == sorted(fact.customer_id)
    assert np.allclose(customers.set_index("customer_id").churn_probability.sort_index(),
                       fact.set_index("customer_id").churn_probability.sort_index())
    assert "gender" in customers.columns  # each customer's segments come along
    kpi = pd.read_parquet(root / "latest" / "kpi.parquet")
    assert list(kpi.run_id) == ["night-2", "night-3"]  # the trend of the kept runs
    assert not list(root.rglob(".*.tmp")) and not [p for p in root.rglob(".*") if p.is_file()]


def test_table_writes_round_trip_nulls_quotes_booleans_and_times(database_url: str | None, tmp_path) -> None:
    """churnops.database.insert_frame: PostgreSQL's COPY and the other databases' executemany path."""
    from datetime import UTC, datetime

    import sqlalchemy as sa

    from churnops import database

    url = database_url or f"sqlite:///{tmp_path / 'rt.db'}"
    md = sa.MetaData()
    table = sa.Table("rt", md, sa.Column("k", sa.String(16), primary_key=True), sa.Column("x", sa.Float),
                     sa.Column("flag", sa.Boolean), sa.Column("at", sa.DateTime(timezone=True)),
                     sa.Column("n", sa.Integer, nullable=True), sa.Column("text", sa.Text, nullable=True))
    at = datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)
    frame = pd.DataFrame({"k": ["a", "b", 'c,"d'], "x": [1.5, np.nan, 1 / 3], "flag": [True, False, True],
                          "at": pd.Timestamp(at), "n": pd.Series([1, pd.NA, 3], dtype="Int64"),
                          "text": [None, "", "été; 5 contacts"]})
    engine = database.create_engine(url)
    try:
        with database.transaction(engine, what="a test write") as conn:
            database.create_tables(conn, md)
            assert database.insert_frame(conn, table, frame, chunk_size=2) == 3
        back = database.read_frame(engine, sa.select(table).order_by(table.c.k))
    finally:
        engine.dispose()
    assert list(back.k) == ["a", "b", 'c,"d']
    assert back.x[0] == 1.5 and np.isnan(back.x[1]) and back.x[2] == 1 / 3  # full float precision
    assert list(back.flag) == [True, False, True]
    assert [pd.Timestamp(t).replace(tzinfo=None) for t in back["at"]] == [at.replace(tzinfo=None)] * 3
    assert back.n.isna().tolist() == [False, True, False]
    assert back.text[0] is None and back.text[1] == "" and back.text[2] == "été; 5 contacts"
