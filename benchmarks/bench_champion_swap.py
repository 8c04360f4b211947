"""How long a new @champion takes to reach every serving worker, with no traffic and under /predict load.

    .venv/bin/python benchmarks/bench_champion_swap.py [--swaps 6] [--json F.json]

What it does, all in one run on this machine:

1. builds the serving benchmark's throw-away home (``bench_serving.prepare_home``: 10,000 generated
   customers, a 500-tree XGBoost champion with its outlier detector, features in a private Redis) and
   registers the same logged model a second time, so two versions take turns as @champion (each swap
   loads a version the worker does not hold: download, file check, tree compilation, verification);
2. starts ``churnops serve`` with params.yaml's production settings (nginx front, 2 sync workers,
   ``serving.reload_interval_s``);
3. moves @champion ``--swaps`` times with no traffic, then ``--swaps`` times while wrk keeps /predict
   busy (16 connections), and for each swap times, from the alias move, until the first worker and until
   every worker serves the new version (``churnops_model_workers{version}`` in /metrics, polled every
   50 ms), and reads each worker's own load time of that version from the server log (``model.loaded``
   ``load_s``: download, file check, tree compilation, a test row).

The documented bound (docs/deployment.md, "Serving replicas"): a new champion reaches every worker within
``reload_interval_s`` plus the time one worker needs to load it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
POLL_S = 0.1  # /metrics polled every 50 ms: a swap is seen up to one poll (and one request) late
LOADED = re.compile(r"model\.loaded\b.*?\bversion=(?P<version>\S+).*?\bload_s=(?P<load_s>[0-9.]+)")


def worker_load_times(log: Path, version: str) -> list[float]:
    """Every worker's ``load_s`` for `version`, in log order (``model.loaded`` lines of churnops serve)."""
    return [float(m["load_s"]) for m in map(LOADED.search, log.read_text(errors="replace").splitlines())
            if m and m["version"].strip('"') == version]


def workers_on(metrics_text: str) -> dict[str, float]:
    """``churnops_model_workers`` samples by version, from a /metrics page."""
    out: dict[str, float] = {}
    for line in metrics_text.splitlines():
        if line.startswith('churnops_model_workers{version="'):
            version = line.split('"', 2)[1]
            out[version] = out.get(version, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def time_swap(settings: Any, url: str, version: str, workers: int, timeout_s: float) -> dict[str, float]:
    """Move @champion to `version`; seconds until the first and until every worker serves it."""
    import requests
    from mlflow import MlflowClient

    uri = settings.mlflow_tracking_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    start = time.monotonic()
    client.set_registered_model_alias(settings.params.register_.model_name, "champion", version)
    first = None
    deadline = start + timeout_s
    while time.monotonic() < deadline:
        on = workers_on(requests.get(url + "/metrics", timeout=10).text).get(version, 0.0)
        now = time.monotonic() - start
        if on >= 1 and first is None:
            first = now
        if on >= workers:
            return {"first_s": first if first is not None else now, "all_s": now}
        time.sleep(POLL_S / 2)
    raise SystemExit(f"version {version} did not reach {workers} workers within {timeout_s} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--swaps", type=int, default=6, help="swaps with no traffic, and again under load")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    for tool in ("wrk", "redis-server"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (apt-get install -y {tool.split('-')[0]})")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    from benchmarks.bench_serving import lua_static, prepare_home, start_redis, start_server, stop, wait_http
    from churnops import registry
    from churnops.logs import configure_logging
    from serving.openapi import example_request

    configure_logging("WARNING")
    root = Path(tempfile.mkdtemp(prefix="bench-swap-"))
    redis_proc, redis_url = start_redis(root)
    server = None
    results: dict[str, list[dict[str, float]]] = {"no traffic": [], "under /predict load": []}
    try:
        print("preparing: data, model, registry, features ...", flush=True)
        settings, _ = prepare_home(root, redis_url, 10_000, 500, 6)
        first = registry.champion_version(settings)
        run_id = registry.version_info(settings, first)["run_id"]
        second = registry.register(settings, run_id)  # the same files as a new version: loaded afresh
        workers = settings.params.serving.workers
        interval = settings.params.serving.reload_interval_s
        server, url = start_server(settings, "serving.app:create_app", root / "serve.log", redis_url)
        wait_http(url + "/health", 180, server, root / "serve.log")
        time_swap(settings, url, first, workers, 300)  # every worker up on the first version
        versions = [second, first]
        swap = 0
        for phase in results:
            wrk = None
            if phase != "no traffic":
                script = lua_static(root / "full.lua", example_request(settings))
                wrk = subprocess.Popen(["wrk", "-t2", "-c16", f"-d{int(args.swaps * interval * 3)}s",
                                        "-s", str(script), url + "/predict"], stdout=subprocess.DEVNULL)
                time.sleep(2)
            try:
                for i in range(args.swaps):
                    version = versions[swap % 2]
                    swap += 1
                    result = time_swap(settings, url, version, workers, 120)
                    result["load_average"] = os.getloadavg()[0]
                    time.sleep(0.5)  # the workers' log lines reach the file
                    result["worker_load_s"] = max(worker_load_times(root / "serve.log", version)[-workers:])
                    result["bound_s"] = interval + result["worker_load_s"]
                    results[phase].append(result)
                    print(f"{phase:<22} swap {i + 1}: first worker {result['first_s']:5.1f} s, every worker "
                          f"{result['all_s']:5.1f} s; slowest worker's load "
                          f"{result['worker_load_s']:4.1f} s, "
                          f"bound {result['bound_s']:5.1f} s (load average {result['load_average']:.1f})",
                          flush=True)
            finally:
                if wrk is not None:
                    wrk.terminate()
                    wrk.wait(timeout=10)
    finally:
        if server is not None:
            stop(server)
        redis_proc.terminate()
        redis_proc.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)

    print(f"\nreload_interval_s {interval} s, {workers} workers; bound per swap = reload_interval_s + the "
          f"slowest worker's load time of the new version (+ {POLL_S} s polling)")
    summary: dict[str, Any] = {"reload_interval_s": interval}
    for phase, rows in results.items():
        alls = [r["all_s"] for r in rows]
        firsts = [r["first_s"] for r in rows]
        within = sum(r["all_s"] <= r["bound_s"] + POLL_S for r in rows)
        summary[phase] = {"first_median_s": statistics.median(firsts),
                          "all_median_s": statistics.median(alls),
                          "all_max_s": max(alls), "worker_load_median_s":
                          statistics.median(r["worker_load_s"] for r in rows), "within_bound": within,
                          "swaps": len(alls)}
        print(f"{phase:<22} first worker median {statistics.median(firsts):5.1f} s; every worker median "
              f"{statistics.median(alls):5.1f} s, max {max(alls):5.1f} s; worker load median "
              f"{summary[phase]['worker_load_median_s']:4.1f} s; within the bound: "
              f"{summary[phase]['within_bound']}/{len(alls)}")
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "swaps": results}, indent=2))


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
