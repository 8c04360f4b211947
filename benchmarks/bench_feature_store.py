"""Feature-store push speed, side by side with redis-benchmark on the same server in the same run.

    .venv/bin/python benchmarks/bench_feature_store.py [--rows 1000000] [--loop-sample 20000]

On a redis-server of its own (fresh, no persistence; or --redis-url), in one run:

1. ``redis-benchmark -P 64 -t hset`` (the stock HSET test: one field into one existing hash);
2. ``redis-benchmark -P 64`` with the push's own command shape: ``HSET <ns>:fs:v:<v>:c:<random id>
   features <packed bytes> event_time <t>`` (a new hash per customer) - what the server can absorb;
3. ``FeatureStore.push`` of ``--rows`` generated customers into an empty database (customers/s, end to
   end: packing, pipelined writes, meta, version switch; nothing to clean up);
3b. a replacing ``FeatureStore.push``: a second version of the same customers (one numeric column changed)
   over the first, so the removal of the previous version's keys after the switch (by its id list) is
   included;
4. a per-key unpipelined loop (one ``HSET`` round trip per customer, the same packed values) on a sample
   of ``--loop-sample`` customers (customers/s);
5. redis-py's own pipeline (``pipeline.hset`` per customer, executed per chunk) on the same sample, for
   reference;
6. lookup latency: ``get`` of one customer and ``get_many`` of 100, p50/p99 over 2,000 calls.

Targets (issue 3): push >= 0.3x redis-benchmark's HSET rate; push >= 20x the unpipelined loop.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_benchmark(port: int, requests: int, command: list[str] | None = None) -> float:
    """requests/s reported by redis-benchmark -P 64 (the stock HSET test, or `command`)."""
    args = ["redis-benchmark", "-p", str(port), "-P", "64", "-n", str(requests), "-q"]
    args += (["-r", "100000000", *command] if command else ["-t", "hset"])
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    final = out.replace("\r", "\n").strip().splitlines()[-1]
    match = re.search(r"([\d.]+) requests per second", final)
    if not match:
        raise RuntimeError(f"cannot read redis-benchmark output: {final!r}")
    return float(match.group(1))


def customers(settings: Any, rows: int) -> Any:
    """`rows` generated customers (calibrated generator) with unique ids."""
    from churnops.data.generate import generate

    schema = settings.schema
    table = generate(schema, rows, seed=11)
    frame = table[[schema.id_column, *schema.feature_columns]].copy()
    frame[schema.id_column] = np.arange(700_000_000, 700_000_000 + rows)
    return frame


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return ordered[len(ordered) // 2] * 1e3, ordered[int(len(ordered) * 0.99)] * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--loop-sample", type=int, default=20_000)
    parser.add_argument("--redis-url", default=None,
                        help="use this Redis (its db is FLUSHED) instead of a private one")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    for tool in ("redis-benchmark", "redis-server"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (apt-get install -y redis-server redis-tools)")

    import redis

    from churnops.feature_store import FeatureStore, Layout, connect, customer_key, ids_key
    from churnops.settings import load_settings

    root = Path(tempfile.mkdtemp(prefix="bench-fs-"))
    proc = None
    if args.redis_url is None:
        port = free_port()
        proc = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no",
                                 "--dir", str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"redis://127.0.0.1:{port}/0"
        time.sleep(0.5)
    else:
        url = args.redis_url
        port = redis.Redis.from_url(url).connection_pool.connection_kwargs.get("port", 6379)
    results: dict[str, Any] = {"rows": args.rows, "loop_sample": args.loop_sample, "cpus": os.cpu_count()}
    try:
        settings = load_settings(home=REPO, env={"REDIS_URL": url})
        cfg = settings.params.feature_store
        client = connect(url, connect_timeout_s=cfg.connect_timeout_s, socket_timeout_s=cfg.push_timeout_s)
        client.flushdb()
        print(f"generating {args.rows:,} customers ...", flush=True)
        frame = customers(settings, args.rows)
        layout = Layout.from_schema(settings.schema)
        packed = layout.encode(frame)
        blob_size = layout.size

        measures: dict[str, dict[str, float]] = {}

        def measure(name: str, rows: int, work: Any, setup: Any = None) -> float:
            """Run `work` on an empty database (after `setup`, not measured); record customers (or
            requests) per second, and client / Redis CPU per row."""
            client.flushdb()
            if setup is not None:
                setup()
            info = client.info("cpu")
            redis0 = info["used_cpu_user"] + info["used_cpu_sys"]
            child0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu0, t0 = time.process_time(), time.perf_counter()
            reported = work()
            wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            child1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu += (child1.ru_utime + child1.ru_stime) - (child0.ru_utime + child0.ru_stime)
            info = client.info("cpu")
            redis_cpu = info["used_cpu_user"] + info["used_cpu_sys"] - redis0
            rate = reported if reported is not None else rows / wall
            measures[name] = {"rate": rate, "rows": rows, "wall_s": wall,
                              "client_cpu_us_per_row": cpu / rows * 1e6,
                              "redis_cpu_us_per_row": redis_cpu / rows * 1e6}
            print(f"{name:<44}{rate:12,.0f} /s   client CPU {cpu / rows * 1e6:6.1f} us/row   "
                  f"Redis CPU {redis_cpu / rows * 1e6:6.1f} us/row", flush=True)
            return rate

        n_bench = 1_000_000
        shaped_cmd = ["HSET", customer_key(cfg.namespace, "bench", "__rand_int__"), "features",
                      "x" * blob_size, "event_time", repr(time.time())]
        stock = measure("redis-benchmark -P 64 HSET (stock)", n_bench, lambda: redis_benchmark(port, n_bench))
        shaped = measure("redis-benchmark -P 64 HSET (customer shape)", min(args.rows, n_bench),
                         lambda: redis_benchmark(port, min(args.rows, n_bench), shaped_cmd))

        store = FeatureStore(client, settings.schema, namespace=cfg.namespace, chunk_size=cfg.chunk_size,
                             push_timeout_s=cfg.push_timeout_s, url=url)
        holder: dict[str, Any] = {}

        def push() -> None:
            holder["result"] = store.push(frame)

        def id_list_parts(version: str) -> list[str]:
            names = [ids_key(cfg.namespace, version, k) for k in range(1024)]
            return names[:client.exists(*names)]

        push_rate = measure("FeatureStore.push", args.rows, push)
        result = holder["result"]
        bytes_per_customer = client.info("memory")["used_memory"] / result.rows
        id_list_bytes = sum(client.memory_usage(k, samples=0) or 0 for k in id_list_parts(result.version))
        id_list_bytes_per_customer = id_list_bytes / result.rows
        print(f"  of which writing the hashes: {result.write_seconds:.1f} s of {result.seconds:.1f} s "
              f"({result.rows / result.write_seconds:,.0f} customers/s while writing)", flush=True)

        changed_column = next(iter(settings.schema.numeric))
        replacement = frame.copy()
        replacement[changed_column] = replacement[changed_column] + 1  # a new version of every customer

        def replace() -> None:
            holder["replaced"] = store.push(replacement)

        def first_version() -> None:
            holder["first_parts"] = len(id_list_parts(store.push(frame).version))

        replace_rate = measure("FeatureStore.push (replacing a version)", args.rows, replace,
                               setup=first_version)
        replaced = holder["replaced"]
        expected_removed = result.rows + 1 + holder["first_parts"]  # customers, meta, id list parts
        if replaced.previous != result.version or replaced.removed_keys != expected_removed:
            raise RuntimeError(f"the replacing push did not replace the first version: {replaced.to_dict()}")
        print(f"  of which writing the hashes: {replaced.write_seconds:.1f} s of {replaced.seconds:.1f} s; "
              f"{replaced.removed_keys:,} keys of the previous version removed (by its id list)", flush=True)

        sample = min(args.loop_sample, args.rows)
        ids = frame[settings.schema.id_column].to_numpy()[:sample]
        blobs = [packed[i].tobytes() for i in range(sample)]
        et = repr(time.time())

        def loop() -> None:
            prefix = customer_key(cfg.namespace, "loop", "")
            for cid, blob in zip(ids, blobs, strict=True):
                client.hset(f"{prefix}{cid}", mapping={"features": blob, "event_time": et})

        def pipelined() -> None:
            prefix = customer_key(cfg.namespace, "pipe", "")
            pipe = client.pipeline(transaction=False)
            for i, (cid, blob) in enumerate(zip(ids, blobs, strict=True)):
                pipe.hset(f"{prefix}{cid}", mapping={"features": blob, "event_time": et})
                if i % cfg.chunk_size == cfg.chunk_size - 1:
                    pipe.execute()
            pipe.execute()

        loop_rate = measure(f"per-key unpipelined HSET loop ({sample:,})", sample, loop)
        pipe_rate = measure(f"redis-py pipeline, chunks of {cfg.chunk_size} ({sample:,})", sample, pipelined)
        stock_after = measure("redis-benchmark -P 64 HSET (stock, again)", n_bench,
                              lambda: redis_benchmark(port, n_bench))
        client.flushdb()
        store.push(frame)  # for the lookups below
        print(f"memory: {bytes_per_customer:.0f} bytes per customer in Redis (of which the id list: "
              f"{id_list_bytes_per_customer:.1f})", flush=True)

        lookups = connect(url, connect_timeout_s=cfg.connect_timeout_s, socket_timeout_s=cfg.read_timeout_s)
        reader = FeatureStore(lookups, settings.schema, namespace=cfg.namespace)
        rng = np.random.default_rng(0)
        all_ids = frame[settings.schema.id_column].to_numpy()
        one, many = [], []
        for _ in range(2000):
            cid = int(all_ids[rng.integers(len(all_ids))])
            t = time.perf_counter()
            reader.get(cid)
            one.append(time.perf_counter() - t)
        for _ in range(500):
            batch = [int(x) for x in all_ids[rng.integers(len(all_ids), size=100)]]
            t = time.perf_counter()
            reader.get_many(batch)
            many.append(time.perf_counter() - t)
        one_p50, one_p99 = percentiles(one)
        many_p50, many_p99 = percentiles(many)
        print(f"get one customer                            p50 {one_p50:.3f} ms  p99 {one_p99:.3f} ms")
        print(f"get_many 100 customers                      p50 {many_p50:.3f} ms  p99 {many_p99:.3f} ms")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)

    stock_mean = (stock + stock_after) / 2
    ratios = {"push_vs_stock_hset": push_rate / stock_mean, "push_vs_customer_shape": push_rate / shaped,
              "push_vs_unpipelined_loop": push_rate / loop_rate,
              "push_vs_redis_py_pipeline": push_rate / pipe_rate,
              "replacing_push_vs_stock_hset": replace_rate / stock_mean,
              "replacing_push_vs_unpipelined_loop": replace_rate / loop_rate}
    results.update(measures=measures, ratios=ratios,
                   push_seconds=result.seconds, push_write_seconds=result.write_seconds,
                   replacing_push_seconds=replaced.seconds,
                   replacing_push_write_seconds=replaced.write_seconds,
                   replacing_push_removed_keys=replaced.removed_keys, bytes_per_customer=bytes_per_customer,
                   id_list_bytes_per_customer=id_list_bytes_per_customer,
                   get_p50_ms=one_p50, get_p99_ms=one_p99, get_many_100_p50_ms=many_p50,
                   get_many_100_p99_ms=many_p99, load_average=os.getloadavg())
    print()
    verdict = "PASS" if push_rate / stock_mean >= 0.3 else "FAIL"
    print(f"push / redis-benchmark stock HSET      = {push_rate / stock_mean:.2f} "
          f"(target >= 0.3; stock rate: "
          f"mean of the runs before and after): {verdict}")
    print(f"push / redis-benchmark customer shape  = {push_rate / shaped:.2f}")
    print(f"push / unpipelined loop                = {push_rate / loop_rate:.1f}x (target >= 20x): "
          f"{'PASS' if push_rate / loop_rate >= 20 else 'FAIL'}")
    print(f"push / redis-py pipeline               = {push_rate / pipe_rate:.1f}x")
    print(f"replacing push / stock HSET            = {replace_rate / stock_mean:.2f} "
          f"({replace_rate:,.0f} customers/s, {replaced.seconds:.1f} s end to end)")
    print(f"replacing push / unpipelined loop      = {replace_rate / loop_rate:.1f}x")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
