"""Drift check: false alarms, power, the effect-size floor, and cost, side by side in one run.

    .venv/bin/python benchmarks/bench_drift.py [--windows 200] [--quick] [--skip-cost] [--skip-stats]

Statistics (monitoring.detect with the params.yaml settings: Bonferroni at 0.05, numeric floor 0.1 sd
(Wasserstein-1 / reference std), category floor 0.05, every one of the 19 features tested in every window):

- sources: ``real`` = BankChurners, reference = 8,101 random rows (the size of the training split),
  windows drawn without replacement from the 2,026 held-out rows; ``real-resampled`` = windows resampled
  with replacement from the reference rows themselves (for windows larger than the held-out rows);
  ``generated`` = the calibrated generator (churnops.data.generate), reference 8,101 fresh rows, every
  window fresh rows;
- a "mean shift of d sigma" adds d x (reference standard deviation) to every value of one feature;
- targets: false alarms <= 5% over no-drift windows of 500 rows; power >= 95% for 0.3 sigma at 500 rows;
  no alarm in >= 95% of windows for 0.05 sigma at 10,000 rows.

Cost: the whole check (reference encoding, 19 tests, effect sizes) on 10k and 1M current rows against a
20,000-row reference (the largest reference a model carries), next to a bare ``scipy.stats.ks_2samp`` loop
over the 14 numeric columns of the same frames (and that loop plus chi-squared on the 5 categorical columns).

Outliers: the compiled Isolation Forest (churnops.outliers) one row at a time, as /predict calls it, next to
scikit-learn's ``IsolationForest.score_samples`` on the same row.

Writes benchmarks/out/drift/results.json (sections of a partial run replace only themselves) and the
power-curve plot benchmarks/drift_power_curve.png.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "BankChurners.csv"
OUT = REPO / "benchmarks" / "out" / "drift"
PLOT = REPO / "benchmarks" / "drift_power_curve.png"
sys.path.insert(0, str(REPO))
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

HEADLINE = "Total_Trans_Amt"  # the strongest churn driver; peaked, so KS sees its shifts early
BELL = "Total_Amt_Chng_Q4_Q1"  # bell-shaped: the hardest case for KS, shown in the curve too
TRAIN_ROWS = 8101  # the stratified 80% training split of the 10,127-row table


def settings():
    from churnops.settings import load_settings

    return load_settings(home=REPO)


def config(backend: str = "scipy"):
    from monitoring.detect import DriftConfig

    return DriftConfig.from_settings(settings().params.monitoring, backend=backend)


def continuous(schema) -> list[str]:
    return [c for c, spec in schema.numeric.items() if not spec.integer]


# -- window sources ----------------------------------------------------------------------------

class Source:
    name = ""

    def reference(self) -> pd.DataFrame: ...

    def window(self, n: int, i: int) -> pd.DataFrame: ...


class Real(Source):
    name = "real"

    def __init__(self, schema) -> None:
        table = pd.read_csv(REAL)[schema.feature_columns]
        order = np.random.default_rng(0).permutation(len(table))
        self.ref = table.iloc[order[:TRAIN_ROWS]].reset_index(drop=True)
        self.held = table.iloc[order[TRAIN_ROWS:]].reset_index(drop=True)

    def reference(self) -> pd.DataFrame:
        return self.ref

    def window(self, n: int, i: int) -> pd.DataFrame:
        if n > len(self.held):
            raise ValueError(f"only {len(self.held)} held-out rows")
        idx = np.random.default_rng(1000 + i).choice(len(self.held), n, replace=False)
        return self.held.iloc[idx].reset_index(drop=True)


class RealResampled(Real):
    name = "real-resampled"

    def window(self, n: int, i: int) -> pd.DataFrame:
        idx = np.random.default_rng(2000 + i).integers(0, len(self.ref), n)
        return self.ref.iloc[idx].reset_index(drop=True)


class Generated(Source):
    name = "generated"

    def __init__(self, schema) -> None:
        from churnops.data.generate import generate

        self.schema = schema
        self._generate = generate
        self.ref = generate(schema, TRAIN_ROWS, seed=1)[schema.feature_columns]
        self._cache: dict[tuple[int, int], pd.DataFrame] = {}

    def reference(self) -> pd.DataFrame:
        return self.ref

    def window(self, n: int, i: int) -> pd.DataFrame:
        key = (n, i)
        if key not in self._cache:
            self._cache[key] = self._generate(self.schema, n, seed=10_000 + 1000 * i + n % 997)[
                self.schema.feature_columns]
        return self._cache[key]


def shifted(frame: pd.DataFrame, column: str, sigmas: float, sd: float) -> pd.DataFrame:
    if sigmas == 0:
        return frame
    out = frame.copy()
    out[column] = out[column].astype(np.float64) + sigmas * sd
    return out


def rates(detector, source: Source, n: int, column: str, sigmas: float, windows: int) -> dict:
    sd = float(source.reference()[column].std())
    alarms = named = 0
    for i in range(windows):
        result = detector.check(shifted(source.window(n, i), column, sigmas, sd))
        alarms += result.drift
        named += column in result.drifted_features
    return {"source": source.name, "rows": n, "feature": column, "shift_sd": sigmas, "windows": windows,
            "alarm_rate": alarms / windows, "feature_named_rate": named / windows}


def statistics(windows: int, quick: bool) -> dict:
    from monitoring.detect import DriftDetector

    schema = settings().schema
    cfg = config("scipy")
    out: dict = {"config": cfg.__dict__, "targets": [], "per_feature": [], "curve": [], "agreement": {}}
    real, generated = Real(schema), Generated(schema)
    resampled = RealResampled(schema)
    resampled.ref, resampled.held = real.ref, real.held
    sources: dict[str, Source] = {"real": real, "real-resampled": resampled, "generated": generated}
    detectors = {s.name: DriftDetector.from_schema(s.reference(), schema, cfg) for s in (real, generated)}
    detectors["real-resampled"] = detectors["real"]
    # The curve also shows windows below min_window (which the check refuses) to show why 500 is the minimum.
    detectors["curve"] = DriftDetector.from_schema(generated.reference(), schema, replace(cfg, min_window=50))
    sources["curve"] = generated

    def run(src: str, n: int, col: str, d: float, w: int = windows) -> dict:
        t = time.perf_counter()
        r = rates(detectors[src], sources[src], n, col, d, w)
        r["seconds"] = round(time.perf_counter() - t, 1)
        print(json.dumps(r), flush=True)
        return r

    # 1. the three targets, on every source where they can be measured
    for src in ("real", "real-resampled", "generated"):
        out["targets"].append({"target": "false alarms, no drift, 500 rows", **run(src, 500, HEADLINE, 0.0)})
        out["targets"].append({"target": "power, 0.3 sd, 500 rows", **run(src, 500, HEADLINE, 0.3)})
    for src in ("real-resampled", "generated"):
        out["targets"].append({"target": "no alarm, 0.05 sd, 10,000 rows",
                               **run(src, 10_000, HEADLINE, 0.05)})

    # 2. every continuous feature: power at 0.3 sd / 500 rows, alarms at 0.05 sd / 10k rows
    per_feature_windows = max(20, windows // (4 if quick else 2))
    for col in continuous(schema):
        if col == HEADLINE:
            continue
        out["per_feature"].append(run("real", 500, col, 0.3, per_feature_windows))
        out["per_feature"].append(run("generated", 10_000, col, 0.05, per_feature_windows // 2))

    # 3. power curve over shift and window size (generated data), for the headline and the bell-shaped feature
    sizes = [100, 250, 500, 1000, 2500] if quick else [100, 250, 500, 1000, 2500, 10_000]
    shifts = [0.0, 0.05, 0.1, 0.2, 0.3, 0.5]
    for col in (HEADLINE, BELL):
        for n in sizes:
            for d in shifts:
                w = windows if n <= 2500 else max(20, windows // 2)
                out["curve"].append(run("curve", n, col, d, w))

    # 4. the alibi backend takes the same decisions on the same windows
    out["agreement"] = agreement(real, schema, min(windows, 100))
    return out


def agreement(source: Source, schema, windows: int) -> dict:
    from monitoring.detect import DriftDetector

    t = time.perf_counter()
    alibi = DriftDetector.from_schema(source.reference(), schema, config("alibi"))
    import_s = time.perf_counter() - t
    scipy_ = DriftDetector.from_schema(source.reference(), schema, config("scipy"))
    sd = float(source.reference()[HEADLINE].std())
    same = total = 0
    max_rel = 0.0
    for d in (0.0, 0.3):
        for i in range(windows):
            w = shifted(source.window(500, i), HEADLINE, d, sd)
            a, s = alibi.check(w), scipy_.check(w)
            total += 1
            same += [f.drift for f in a.features] == [f.drift for f in s.features] and a.status == s.status
            for fa, fs in zip(a.features, s.features, strict=True):
                max_rel = max(max_rel, abs(fa.statistic - fs.statistic) / max(abs(fs.statistic), 1e-12))
    res = {"windows": total, "identical_decisions": same, "max_relative_statistic_difference": max_rel,
           "alibi_first_use_s": round(import_s, 1)}
    print(json.dumps(res), flush=True)
    return res


# -- cost ----------------------------------------------------------------------------------------

def cost(repeats_small: int = 5, repeats_large: int = 3) -> dict:
    from scipy.stats import chi2_contingency, ks_2samp

    from churnops.data.generate import generate
    from monitoring.detect import check_drift
    from monitoring.report import render_html

    schema = settings().schema
    numeric, categorical = list(schema.numeric), list(schema.categorical)
    ref = generate(schema, 20_000, seed=1)[schema.feature_columns]
    results = []
    cfgs = {"scipy": config("scipy"), "alibi": config("alibi")}
    check_drift(ref, ref.iloc[:1000], schema, cfgs["alibi"])  # pay alibi-detect's import once, outside
    for n, repeats in ((10_000, repeats_small), (1_000_000, repeats_large)):
        cur = generate(schema, n, seed=7)[schema.feature_columns]

        def bare_ks(cur: pd.DataFrame = cur) -> None:
            for c in numeric:
                ks_2samp(ref[c].to_numpy(), cur[c].to_numpy())

        def bare_ks_chi2(cur: pd.DataFrame = cur) -> None:
            bare_ks(cur)
            for c in categorical:
                counts = pd.concat([ref[c].value_counts(), cur[c].value_counts()], axis=1).fillna(0)
                chi2_contingency(counts.to_numpy().T)

        def ours(backend: str, cur: pd.DataFrame = cur):
            return lambda: check_drift(ref, cur, schema, cfgs[backend])

        timings: dict[str, list[float]] = {}
        candidates = {"bare ks_2samp loop (14 numeric)": bare_ks,
                      "bare ks_2samp + chi2 loop (19)": bare_ks_chi2,
                      "check, scipy backend (19)": ours("scipy"),
                      "check, alibi backend (19)": ours("alibi")}
        for _ in range(repeats):  # interleaved, so load changes hit every candidate alike
            for name, fn in candidates.items():
                t = time.perf_counter()
                fn()
                timings.setdefault(name, []).append(time.perf_counter() - t)
        result = check_drift(ref, cur, schema, cfgs["scipy"])
        t = time.perf_counter()
        render_html(result, ref, cur)
        html_s = time.perf_counter() - t
        best = {k: min(v) for k, v in timings.items()}
        base = best["bare ks_2samp loop (14 numeric)"]
        row = {"current_rows": n, "reference_rows": len(ref), "best_of": repeats,
               "seconds": {k: round(v, 4) for k, v in best.items()},
               "ratio_to_bare_ks": {k: round(v / base, 2) for k, v in best.items()},
               "html_report_s": round(html_s, 3)}
        print(json.dumps(row), flush=True)
        results.append(row)
    return {"rows": results, "load_average": os.getloadavg()}


def outlier_cost(rows: int = 200) -> dict:
    """The compiled Isolation Forest vs scikit-learn's score_samples, one row at a time (as /predict)."""
    from sklearn.ensemble import IsolationForest

    from churnops.data.generate import generate
    from churnops.features import FeatureEncoder
    from churnops.outliers import fit_outlier_detector

    schema = settings().schema
    ref = generate(schema, 20_000, seed=1)[schema.feature_columns]
    detector = fit_outlier_detector(ref, schema, seed=42)
    enc = FeatureEncoder.from_schema(schema).fit()
    forest = IsolationForest(n_estimators=100, max_samples=256, contamination=0.01, random_state=42,
                             n_jobs=1).fit(enc.transform(ref))
    records = ref.iloc[:rows].to_dict("records")
    X = enc.transform(ref.iloc[:rows])  # noqa: N806

    def per_row(fn) -> float:
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            for i in range(rows):
                fn(i)
            best = min(best, (time.perf_counter() - t) / rows)
        return best

    compiled = per_row(lambda i: detector.score_records(records[i:i + 1]))
    sklearn_ = per_row(lambda i: forest.score_samples(X[i:i + 1]))
    big = generate(schema, 10_000, seed=3)[schema.feature_columns]
    t = time.perf_counter()
    detector.score_frame(big)
    frame_s = time.perf_counter() - t
    res = {"compiled_ms_per_row": round(compiled * 1000, 3),
           "sklearn_ms_per_row": round(sklearn_ * 1000, 3),
           "compiled_10k_rows_s": round(frame_s, 3), "load_average": os.getloadavg()}
    print(json.dumps(res), flush=True)
    return res


# -- plot ----------------------------------------------------------------------------------------

def plot(curve: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = pd.DataFrame(curve)
    features = list(dict.fromkeys(frame["feature"]))
    fig, axes = plt.subplots(1, len(features), figsize=(5.2 * len(features), 4.2), sharey=True)
    for ax, feature in zip(np.atleast_1d(axes), features, strict=True):
        for n, part in frame[frame["feature"] == feature].groupby("rows"):
            part = part.sort_values("shift_sd")
            style = "--" if n < 500 else "-"
            ax.plot(part["shift_sd"], part["alarm_rate"], style, marker="o", ms=3, label=f"{n:,} rows")
        ax.axhline(0.05, color="grey", ls=":", lw=1)
        ax.axhline(0.95, color="grey", ls=":", lw=1)
        ax.axvline(0.1, color="#8172b2", ls="-.", lw=0.8)
        ax.set_xlabel(f"mean shift of {feature} (reference standard deviations)", fontsize=9)
        ax.set_title(feature, fontsize=10)
        ax.set_ylim(-0.02, 1.02)
    np.atleast_1d(axes)[0].set_ylabel("share of windows with a drift alarm")
    np.atleast_1d(axes)[0].legend(fontsize=8, title="window (dashed: below min_window)", title_fontsize=7)
    fig.suptitle("Drift check on generated data: Bonferroni 0.05 over 19 features, effect floor 0.1 sd "
                 "(dash-dot); dotted: 5% and 95%", fontsize=9)
    fig.tight_layout()
    fig.savefig(PLOT, dpi=110)
    print(f"wrote {PLOT}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="fewer windows and no 10k-row curve points")
    parser.add_argument("--skip-cost", action="store_true")
    parser.add_argument("--skip-stats", action="store_true")
    parser.add_argument("--skip-outliers", action="store_true")
    args = parser.parse_args()
    from churnops.logs import configure_logging

    configure_logging("WARNING")
    OUT.mkdir(parents=True, exist_ok=True)
    doc: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "load_average_start": os.getloadavg()}
    if not args.skip_stats:
        doc["statistics"] = statistics(args.windows, args.quick)
        plot(doc["statistics"]["curve"])
    if not args.skip_cost:
        doc["cost"] = cost()
    if not args.skip_outliers:
        doc["outliers"] = outlier_cost()
    doc["load_average_end"] = os.getloadavg()
    path = OUT / "results.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**previous, **doc}, indent=2, default=str))  # a partial run keeps the rest
    print(f"wrote {OUT / 'results.json'}")


if __name__ == "__main__":
    main()
