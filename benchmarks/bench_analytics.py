"""Analytics at scale: mart refresh time and the dashboard's page data-load times for a 1M-customer run.

    .venv/bin/python benchmarks/bench_analytics.py [--rows 1000000] [--database sqlite,postgresql]

In one run:

1. generated customers (``--rows``, cached under benchmarks/out/) scored by an XGBoost model (300 trees,
   depth 5, fitted on 20,000 generated rows) and its Isolation Forest, as batch scoring does; two scoring
   runs, the second with 300,000 customers made riskier (it has movement). For each run, once: the scores,
   then the score fact (:func:`churnops.analytics.marts.build_fact`) with every customer's risk drivers
   (``--driver-method``, default params.yaml's ``exact``: the model's SHAP values, as ``?explain=true``;
   timed apart) and the actions;
2. for each database (a SQLite file of its own; a throwaway database on the local PostgreSQL): both runs
   written with the core's own transaction (:func:`churnops.analytics.marts.write_run`: fact, customer
   dimension, every mart and the BI views) and exported (CSV + Parquet), each timed;
3. page data loads: each dashboard page's queries (:class:`~churnops.analytics.read.MartReader`), run
   cold once and then warm 5 times (median), as the page issues them: overview (runs, movement summary,
   top actions), segments (no filter and two filters, a breakdown and the totals), customer (dimension
   row + history of one customer), anomalies (top 500), actions (top 50), and a BI tool's reads of the
   views (latest KPI, latest segments, top 50 of ``v_retention_actions``).

Target (issue 11): each page's queries under 1 s. The machine's load average is printed at the start and
at the end: the figures are only comparable on the same machine at the same load.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out"
PG_ADMIN = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def customers(schema: Any, rows: int) -> pd.DataFrame:
    from churnops.data.generate import generate

    path = OUT / f"analytics-customers-{rows}.parquet"
    if path.is_file():
        return pd.read_parquet(path)
    frame = generate(schema, rows, seed=21)
    frame[schema.id_column] = np.arange(10**8, 10**8 + rows)  # unique ids at any size
    OUT.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)
    return frame


def model(schema: Any) -> SimpleNamespace:
    from sklearn.pipeline import Pipeline
    from xgboost import XGBClassifier

    from churnops.data.generate import generate
    from churnops.features import FeatureEncoder
    from churnops.outliers import fit_outlier_detector
    from churnops.scoring import Scorer

    train = generate(schema, 20_000, seed=5)
    y = (train[schema.target.column] == schema.target.positive).astype(int)
    pipe = Pipeline([("encode", FeatureEncoder.from_schema(schema)),
                     ("model", XGBClassifier(n_estimators=300, max_depth=5, learning_rate=0.08, n_jobs=2))])
    pipe.fit(train[schema.feature_columns], y)
    detector = fit_outlier_detector(train[schema.feature_columns], schema, seed=5)
    return SimpleNamespace(scorer=Scorer(pipe), detector=detector)


def home_for(url: str | None, root: Path, driver_method: str) -> Any:
    from churnops.settings import load_settings

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["batch"]["chunk_size"] = 50_000
    params["analytics"]["driver_method"] = driver_method
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return load_settings(home=root, env={"CHURNOPS_DATABASE_URL": url} if url else {})


def build_run(settings: Any, m: SimpleNamespace, frame: pd.DataFrame, run_id: str, minutes: int,
              timings: dict[str, float]) -> tuple[Any, pd.DataFrame, pd.DataFrame]:
    """(meta, features, fact) of a scoring run: scores, then the fact with every customer's drivers (timed
    apart) and the actions. Database-independent: built once, written to each database."""
    from churnops.analytics import marts as marts_module
    from churnops.analytics.marts import RunMeta, build_fact
    from pipeline.batch import score_frame

    features = frame[[settings.schema.id_column, *settings.schema.feature_columns]]
    t = time.perf_counter()
    scores = score_frame(settings, SimpleNamespace(scorer=m.scorer), m.detector, features, 50_000)
    timings[f"{run_id} score (model + outliers)"] = time.perf_counter() - t
    meta = RunMeta(run_id, datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=minutes), "1", "bench")
    drivers_s: list[float] = []
    original = marts_module._drivers

    def timed(*args: Any) -> Any:  # the drivers' share of building the fact
        t0 = time.perf_counter()
        try:
            return original(*args)
        finally:
            drivers_s.append(time.perf_counter() - t0)

    marts_module._drivers = timed
    try:
        t = time.perf_counter()
        fact = build_fact(settings, meta, features, scores, m.scorer)
        total = time.perf_counter() - t
    finally:
        marts_module._drivers = original
    method = settings.params.analytics.driver_method
    timings[f"{run_id} drivers of all {len(fact):,} customers ({method})"] = drivers_s[0]
    high = int((scores.risk_level == "High").sum())
    timings[f"{run_id} rest of the fact (actions of {high:,} High, expected loss)"] = total - drivers_s[0]
    for k in list(timings)[-3:]:
        print(f"  {k:<62} {timings[k]:8.1f} s (load {_load()})", flush=True)
    return meta, features, fact


def write_run(settings: Any, built: tuple[Any, pd.DataFrame, pd.DataFrame], timings: dict[str, float]) -> Any:
    from churnops import database
    from churnops.analytics.exports import export_marts
    from churnops.analytics.marts import write_run as write
    from churnops.analytics.tables import tables

    meta, features, fact = built
    t = time.perf_counter()
    engine = database.engine_for(settings)
    with database.transaction(engine, what="bench") as conn:
        marts = write(conn, settings, tables(settings), meta, fact, features, 30, 50_000)
    engine.dispose()
    timings[f"{meta.run_id} marts transaction (fact + dimension + marts + views)"] = time.perf_counter() - t
    t = time.perf_counter()
    export_marts(settings, meta, marts)
    timings[f"{meta.run_id} BI exports (CSV + Parquet)"] = time.perf_counter() - t
    for k in list(timings)[-2:]:
        print(f"  {k:<62} {timings[k]:8.1f} s (load {_load()})", flush=True)
    return marts


def drivers_side_by_side(schema: Any, m: SimpleNamespace, frame: pd.DataFrame, n: int) -> dict[str, float]:
    """Exact SHAP vs approximate contributions on the same `n` customers (seconds each)."""
    from churnops.analytics.drivers import top_drivers

    sample = frame.iloc[:n]
    out = {}
    for method in ("approx", "exact"):
        t = time.perf_counter()
        top_drivers(m.scorer, schema, sample, 3, approx=method == "approx")
        out[f"{method}_s"] = time.perf_counter() - t
    out["customers"] = len(sample)
    print(f"drivers of {len(sample):,} customers: exact {out['exact_s']:.1f} s, "
          f"approx {out['approx_s']:.1f} s (load {_load()})", flush=True)
    return out


def page_loads(settings: Any, run_id: str, customer_id: str, repeat: int = 5) -> dict[str, dict[str, float]]:
    import sqlalchemy as sa

    from churnops import database
    from churnops.analytics.read import MartReader

    pages = {
        "overview": lambda r: (r.runs(), r.movement_summary(run_id), r.actions(run_id, 10)),
        "segments (no filter)": lambda r: (r.breakdown(run_id, "customer_age_band", {}),
                                           r.totals(run_id, {})),
        "segments (2 filters)": lambda r: (
            r.breakdown(run_id, "income_category", {"gender": ["F"], "card_category": ["Blue", "Silver"]}),
            r.totals(run_id, {"gender": ["F"], "card_category": ["Blue", "Silver"]})),
        "customer (profile + history)": lambda r: (r.customer(customer_id), r.history(customer_id)),
        "anomalies (top 500)": lambda r: r.anomalies(run_id, 500),
        "actions (top 50)": lambda r: r.actions(run_id, 50),
        "BI views (kpi, segments, top 50 actions)": lambda r: [
            database.read_frame(r.engine, sa.text(q)) for q in (
                "SELECT * FROM v_latest_kpi", "SELECT * FROM v_latest_segments",
                "SELECT * FROM v_retention_actions ORDER BY action_rank LIMIT 50")],
    }
    out = {}
    with MartReader.open(settings) as reader:
        for name, load in pages.items():
            t = time.perf_counter()
            load(reader)
            cold = time.perf_counter() - t
            warm = []
            for _ in range(repeat):
                t = time.perf_counter()
                load(reader)
                warm.append(time.perf_counter() - t)
            out[name] = {"cold_s": cold, "warm_median_s": statistics.median(warm)}
    return out


def main() -> None:
    import sqlalchemy as sa

    from churnops.settings import load_settings

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--database", default="sqlite,postgresql")
    ap.add_argument("--driver-method", choices=["exact", "approx"], default="exact",
                    help="analytics.driver_method for the runs (default: params.yaml's default, exact)")
    ap.add_argument("--driver-sample", type=int, default=20_000,
                    help="customers on which both driver methods are timed side by side")
    args = ap.parse_args()
    print(f"load average at start: {_load()} ({os.cpu_count()} cores)", flush=True)
    schema = load_settings(home=REPO).schema
    t = time.perf_counter()
    frame = customers(schema, args.rows)
    print(f"{len(frame):,} customers ready in {time.perf_counter() - t:.1f} s", flush=True)
    m = model(schema)
    second = frame.copy()
    idx = second.index[: min(300_000, len(second) // 3)]
    second.loc[idx, "Total_Trans_Ct"] = (second.loc[idx, "Total_Trans_Ct"] * 0.6).round()
    second.loc[idx, "Contacts_Count_12_mon"] = np.minimum(second.loc[idx, "Contacts_Count_12_mon"] + 2, 6)
    report: dict[str, Any] = {"rows": len(frame), "load_start": _load(), "databases": {},
                              "driver_method": args.driver_method,
                              "drivers_side_by_side": drivers_side_by_side(schema, m, frame,
                                                                           args.driver_sample)}
    tmp = Path(tempfile.mkdtemp(prefix="bench-analytics-"))
    built_timings: dict[str, float] = {}
    base = home_for(None, tmp / "build", args.driver_method)
    print(f"\n[scores and facts] load {_load()}", flush=True)
    runs = [build_run(base, m, frame, "run-1", 0, built_timings),
            build_run(base, m, second, "run-2", 60, built_timings)]
    report["build_s"] = built_timings
    report["load_after_build"] = _load()
    try:
        for db in args.database.split(","):
            url, drop = None, None
            if db == "postgresql":
                name = f"churnops_bench_{uuid.uuid4().hex[:8]}"
                admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
                with admin.connect() as conn:
                    conn.execute(sa.text(f"CREATE DATABASE {name}"))
                url = f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
                drop = (admin, name)
            settings = home_for(url, tmp / db, args.driver_method)
            timings: dict[str, float] = {}
            try:
                print(f"\n[{db}] load {_load()}", flush=True)
                for built in runs:
                    write_run(settings, built, timings)
                customer = str(frame[schema.id_column].iloc[len(frame) // 2])
                pages = page_loads(settings, "run-2", customer)
                for k, v in pages.items():
                    print(f"  page {k:<40} cold {v['cold_s'] * 1000:8.1f} ms  warm median "
                          f"{v['warm_median_s'] * 1000:8.1f} ms", flush=True)
                report["databases"][db] = {"refresh_s": timings, "pages": pages, "load_end": _load()}
            finally:
                if drop:
                    admin, name = drop
                    with admin.connect() as conn:
                        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    admin.dispose()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report["load_end"] = _load()
    print(f"\nload average at end: {_load()}")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "analytics.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {OUT / 'analytics.json'}")


if __name__ == "__main__":
    main()
