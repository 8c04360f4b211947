"""Raw transactions -> customer features: DuckDB (the platform's path) beside pandas doing the same work.

    .venv/bin/python benchmarks/bench_transactions.py [--customers 100000] [--formats csv,parquet]
                                                      [--threads N] [--skip-pandas]

Generates a retailer (`churnops data generate --kind transactions`, ≈ 100 lines per customer: 100,000
customers ≈ 10M lines) in a temporary folder (deleted afterwards; nothing is committed), then times, each
in its own process (so max RSS is per measurement):

- ``duckdb``: the platform's path, raw file -> validated lines -> features and labels at every cut-off
  (transactions/build.py: every validation rule, the silver Parquet and the customer table written);
- ``pandas``: the same from the raw file with pandas: read, the same cleaning rules (dropped guest lines,
  duplicates, negative prices, unparseable dates, wrong quantity signs), then the aggregation of
  tests/churnops/transactions/pandas_reference.py (the oracle the SQL is tested against); its two parts
  are timed apart (``read_and_clean_s``, ``aggregation_s``).

The load average is printed with the figures: the machine is shared, so say it with any number quoted.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _settings():
    from churnops.settings import TransactionSettings

    return TransactionSettings()


def measure_duckdb(raw: Path, work: Path, threads: int | None) -> dict:
    from churnops.transactions.build import build_customer_table_from_raw

    cfg = _settings()
    started = time.perf_counter()
    result = build_customer_table_from_raw(raw, cfg, report_dir=work / "reports",
                                           clean_out=work / "clean.parquet", out=work / "customers.parquet",
                                           threads=threads)
    return {"seconds": round(time.perf_counter() - started, 2), "steps": result.seconds,
            "customer_rows": len(result.table), "lines": result.report.rows,
            "clean_lines": result.report.kept}


def _pandas_clean(raw: Path):
    import numpy as np
    import pandas as pd

    cfg = _settings()
    c = cfg.columns
    frame = pd.read_parquet(raw) if raw.suffix == ".parquet" else pd.read_csv(raw, engine="pyarrow")
    for role in ("invoice", "stock_code", "description", "customer_id", "country"):
        column = frame[getattr(c, role)]
        if pd.api.types.is_numeric_dtype(column):  # an id column read as numbers: back to text, NaN kept
            column = column.astype("Int64").astype("string")
        frame[getattr(c, role)] = column.astype(object).where(column.notna() & (column != ""), None)
    when = pd.to_datetime(frame[c.invoice_date], errors="coerce")
    quantity = pd.to_numeric(frame[c.quantity], errors="coerce")
    price = pd.to_numeric(frame[c.price], errors="coerce")
    is_return = frame[c.invoice].str.upper().str.startswith("C").fillna(False).to_numpy()
    dup = frame.duplicated().to_numpy()
    bad = (frame[c.customer_id].isna().to_numpy() | dup | (price < 0).to_numpy() | when.isna().to_numpy()
           | ((quantity <= 0).to_numpy() & ~is_return) | ((quantity > 0).to_numpy() & is_return))
    keep = ~bad
    t = ((when[keep] - pd.Timestamp(0)) / pd.Timedelta(days=1)).to_numpy()
    return pd.DataFrame({
        "customer_id": frame[c.customer_id][keep].to_numpy(),
        "invoice": frame[c.invoice][keep].to_numpy(),
        "stock_code": frame[c.stock_code][keep].to_numpy(), "quantity": quantity[keep].to_numpy(),
        "price": price[keep].to_numpy(), "is_return": is_return[keep], "t": t,
        "day_number": np.floor(t).astype("int64"),
    })


def measure_pandas(raw: Path) -> dict:
    sys.path.insert(0, str(REPO))
    from churnops.transactions.cutoffs import plan_cutoffs
    from tests.churnops.transactions.pandas_reference import pandas_features

    cfg = _settings()
    started = time.perf_counter()
    lines = _pandas_clean(raw)
    cleaned = time.perf_counter()
    first, last = lines["t"].min(), lines["t"].max()
    from datetime import date, timedelta

    day = date(1970, 1, 1)
    plan = plan_cutoffs(cfg, day + timedelta(days=int(first)), day + timedelta(days=int(last)))
    aggregate_start = time.perf_counter()
    table = pandas_features(lines, plan.all, cfg)
    done = time.perf_counter()
    return {"seconds": round(done - started, 2), "read_and_clean_s": round(cleaned - started, 2),
            "aggregation_s": round(done - aggregate_start, 2), "customer_rows": len(table),
            "clean_lines": len(lines)}


def _one(args: argparse.Namespace) -> None:
    raw, work = Path(args.raw), Path(args.work)
    if args.one == "duckdb":
        doc = measure_duckdb(raw, work, args.threads)
    else:
        doc = measure_pandas(raw)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    doc["cpu_s"] = round(usage.ru_utime + usage.ru_stime, 1)  # all threads; the process's whole life
    doc["max_rss_mb"] = round(usage.ru_maxrss / 1024)
    print(json.dumps(doc))


def _run(kind: str, raw: Path, work: Path, threads: int | None) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", kind, "--raw", str(raw),
           "--work", str(work)]
    if threads:
        cmd += ["--threads", str(threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603
    if done.returncode:
        raise SystemExit(f"{kind} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--formats", default="csv,parquet")
    parser.add_argument("--threads", type=int, default=None, help="DuckDB threads (default: all cores)")
    parser.add_argument("--skip-pandas", action="store_true")
    parser.add_argument("--one", choices=["duckdb", "pandas"], help=argparse.SUPPRESS)
    parser.add_argument("--raw", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        _one(args)
        return
    from churnops.transactions.generate import RetailerProfile, generate_to_file

    cfg = _settings()
    results: dict = {"customers": args.customers, "cores": os.cpu_count(),
                     "load_before": [round(x, 2) for x in os.getloadavg()]}
    with tempfile.TemporaryDirectory(prefix="bench-transactions-") as tmp:
        work = Path(tmp)
        for fmt in args.formats.split(","):
            raw = work / f"transactions.{fmt}"
            summary = generate_to_file(raw, cfg.columns, profile=RetailerProfile(customers=args.customers),
                                       seed=1)
            entry = {"lines": summary["rows"], "generate_s": summary["seconds"],
                     "file_mb": round(raw.stat().st_size / 1e6, 1)}
            entry["duckdb"] = _run("duckdb", raw, work, args.threads)
            if not args.skip_pandas:
                entry["pandas"] = _run("pandas", raw, work, None)
            results[fmt] = entry
            print(json.dumps({fmt: entry}), flush=True)
            raw.unlink()
    results["load_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
