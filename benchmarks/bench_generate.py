"""Synthetic data generation speed and memory at 100k and 1M rows, side by side in one run.

    .venv/bin/python benchmarks/bench_generate.py [--sizes 100000,1000000] [--seed 42] [--json]

For each size, in its own process (so peak memory is per size): `generate()` (the table in memory) and
`write_csv()` (the CSV, atomically, in a temporary directory deleted afterwards), each timed as wall-clock
and as the process's CPU time. On a shared machine wall-clock includes waiting for a core; CPU time is
what the work costs, so both are printed together with the load average when the run started.
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


def one_size(rows: int, seed: int) -> dict[str, float]:
    from churnops.data.generate import generate, write_csv
    from churnops.settings import load_settings

    schema = load_settings(home=REPO, env={}).schema
    wall, cpu = time.perf_counter(), time.process_time()
    frame = generate(schema, rows, seed)
    gen_wall, gen_cpu = time.perf_counter() - wall, time.process_time() - cpu
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "customers.csv"
        wall, cpu = time.perf_counter(), time.process_time()
        write_csv(frame, out)
        write_wall, write_cpu = time.perf_counter() - wall, time.process_time() - cpu
        size = out.stat().st_size
    return {
        "rows": rows,
        "generate_wall_s": round(gen_wall, 2), "generate_cpu_s": round(gen_cpu, 2),
        "write_wall_s": round(write_wall, 2), "write_cpu_s": round(write_cpu, 2),
        "total_wall_s": round(gen_wall + write_wall, 2), "total_cpu_s": round(gen_cpu + write_cpu, 2),
        "csv_mb": round(size / 1e6, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # child process
    args = parser.parse_args()

    if args.one is not None:
        print(json.dumps(one_size(args.one, args.seed)))
        return

    load = os.getloadavg()
    results = []
    for rows in (int(s) for s in args.sizes.split(",")):
        child = subprocess.run([sys.executable, __file__, "--one", str(rows), "--seed", str(args.seed)],
                               check=True, capture_output=True, text=True,
                               env={**os.environ, "CHURNOPS_LOG_LEVEL": "WARNING"})
        results.append(json.loads(child.stdout.strip().splitlines()[-1]))
    if args.json:
        print(json.dumps({"load_average": load, "cpus": os.cpu_count(), "results": results}, indent=2))
        return
    print(f"load average at start {load[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'rows':>10} {'generate wall/cpu s':>20} {'write csv wall/cpu s':>21} {'total wall/cpu s':>17} "
          f"{'csv MB':>7} {'peak RSS MB':>12}")
    for r in results:
        print(f"{r['rows']:>10,} {r['generate_wall_s']:>11.2f} / {r['generate_cpu_s']:<6.2f} "
              f"{r['write_wall_s']:>12.2f} / {r['write_cpu_s']:<6.2f} "
              f"{r['total_wall_s']:>8.2f} / {r['total_cpu_s']:<6.2f} {r['csv_mb']:>7.1f} "
              f"{r['peak_rss_mb']:>12.0f}")


if __name__ == "__main__":
    main()
