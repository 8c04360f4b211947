"""Ingest + validation speed and memory at 10k, 100k and 1M rows, side by side in one run.

    .venv/bin/python benchmarks/bench_validation.py [--sizes 10000,100000,1000000] [--data PATH]

Tables are built in a temporary directory (deleted afterwards) by repeating the real BankChurners table
with fresh unique ids and Credit_Limit perturbed by ±10 %, so every table is valid and nothing is
committed. Each size runs in its own process so peak memory (max RSS) is per size.
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
REAL = REPO.parent / "shared" / "data" / "BankChurners.csv"


def build(source: Path, rows: int, out: Path) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv

    base = pacsv.read_csv(source, convert_options=pacsv.ConvertOptions(
        column_types={}, strings_can_be_null=False, auto_dict_encode=False))
    base = base.cast(pa.schema([pa.field(n, pa.string()) for n in base.column_names]))
    reps = -(-rows // base.num_rows)
    table = pa.concat_tables([base] * reps).slice(0, rows)
    rng = np.random.default_rng(0)
    ids = pa.array((np.arange(rows) + 100_000_000).astype(str))
    limit = np.asarray(table["Credit_Limit"].to_numpy(), dtype=float) * rng.uniform(0.9, 1.1, rows)
    table = table.set_column(table.column_names.index("CLIENTNUM"), "CLIENTNUM", ids)
    table = table.set_column(table.column_names.index("Credit_Limit"), "Credit_Limit",
                             pa.array(np.round(limit, 1).astype(str)))
    pacsv.write_csv(table, out)


def measure(path: Path) -> dict:
    from churnops.data.ingest import read_table
    from churnops.data.validate import validate_table
    from churnops.settings import load_settings

    settings = load_settings(home=REPO)
    t0, c0 = time.perf_counter(), time.process_time()
    frame = read_table(path, settings.schema)
    t1, c1 = time.perf_counter(), time.process_time()
    report = validate_table(frame, settings.schema, settings.params.validate_, source=str(path))
    t2, c2 = time.perf_counter(), time.process_time()
    assert report.ok, report.to_text()
    return {"rows": len(frame), "mb": round(path.stat().st_size / 1e6, 1),
            "read_s": round(t1 - t0, 2), "read_cpu_s": round(c1 - c0, 2),
            "validate_s": round(t2 - t1, 2), "validate_cpu_s": round(c2 - c1, 2),
            "total_s": round(t2 - t0, 2), "total_cpu_s": round(c2 - c0, 2),
            "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--data", type=Path, default=REAL)
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)  # child process: measure one file
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one)))
        return
    if not args.data.is_file():
        sys.exit(f"reference data not found: {args.data} (pass --data)")
    results = []
    with tempfile.TemporaryDirectory(prefix="churnops-bench-") as tmp:
        for size in (int(s) for s in args.sizes.split(",")):
            path = Path(tmp) / f"customers_{size}.csv"
            build(args.data, size, path)
            out = subprocess.run([sys.executable, __file__, "--one", str(path)], check=True,
                                 capture_output=True, text=True).stdout
            results.append(json.loads(out.strip().splitlines()[-1]))
            path.unlink()
    base = results[0]["total_cpu_s"] / results[0]["rows"]
    with open("/proc/loadavg") as fh:
        load = fh.read().split()[:3]
    print(f"load average at the end: {' '.join(load)} on {os.cpu_count()} cores "
          "(wall time suffers from other processes; CPU time much less)")
    print("| rows | CSV MB | read_table wall / CPU s | validate_table wall / CPU s | total wall / CPU s "
          "| CPU µs/row | CPU per row vs smallest | max RSS MB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        per_row = r["total_cpu_s"] / r["rows"]
        print(f"| {r['rows']:,} | {r['mb']} | {r['read_s']} / {r['read_cpu_s']} | "
              f"{r['validate_s']} / {r['validate_cpu_s']} | {r['total_s']} / {r['total_cpu_s']} | "
              f"{per_row * 1e6:.1f} | {per_row / base:.2f} | {r['max_rss_mb']} |")

if __name__ == "__main__":
    main()
