"""Serving throughput under gunicorn, side by side with a constant-JSON endpoint, measured with wrk.

    .venv/bin/python benchmarks/bench_serving.py [--duration 10] [--connections 16] [--rounds 2]
                                                 [--slow-clients 200] [--mlflow]
                                                 [--json F.json] [--plot F.png]

What it does, all in one run on this machine:

1. builds a throw-away project home: 10,000 generated customers (the demo's size), an XGBoost pipeline of
   the size training produces (500 trees, depth 6) logged and registered the way training does, promoted
   to @champion; every customer's features pushed to a Redis of its own (a private redis-server);
2. starts ``churnops serve`` (the production gunicorn configuration from params.yaml) with an app factory
   that adds routes to the real app: ``POST /bench/constant`` (a constant JSON answer: the framework's
   ceiling, through the same middleware), ``POST /bench/predict-nolog`` (/predict without the prediction
   log, to measure what logging costs), ``POST /bench/lookup-constant`` (the feature-store read of a lookup
   by id, then the constant answer) and ``POST /bench/ping-constant`` (one Redis round trip on a bare
   socket, then the constant answer: the ceiling of any lookup that asks Redis per request);
3. starts a second server with the same gunicorn configuration serving a bare Flask app whose only route
   returns the constant JSON (no middleware at all), for reference;
4. runs wrk (``-t2 -c16 --latency``) against each target in turn, ``--rounds`` times interleaved, and keeps
   each target's median round: requests/s, p50, p99.

5. with ``--slow-clients N`` (issue 17), each round then runs /predict (full payload) and /health again while
   N connections trickle their headers or bodies one byte at a time (reconnecting when dropped, as a
   slowloris attack does), and reports the workers killed during the run (gunicorn's ``WORKER TIMEOUT``
   and the master's children);
6. with ``--mlflow``, the same champion behind ``mlflow models serve`` (2 uvicorn workers,
   ``--env-manager local``), ``POST /invocations`` with the same customer, in the same rounds.

Targets (issue 3): full-payload /predict >= 0.7x the constant endpoint, by customer id >= 0.6x.
Issue 17: under N slow clients /health and /predict p99 < 50 ms and >= 0.8x their idle throughput, no worker
killed; /predict well ahead of ``mlflow models serve``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[1]
CONSTANT = {"prediction": 0, "attrition_probability": 0.23, "retention_probability": 0.77,
            "status": "Existing Customer", "risk_level": "Low", "model_version": "3"}


# -- app factories served by `churnops serve --app-factory` ---------------------------------------
def bench_app(settings: Any) -> Any:
    """The real app plus the /bench/* routes of the module doc (same hooks, same process)."""
    import copy

    from flask import Response

    from serving.app import create_app, handle_predict, request_body
    from serving.validation import parse_json

    app = create_app(settings)
    state = app.extensions["churnops"]
    body = json.dumps(CONSTANT)

    class NoLog:
        def append(self, *args: Any, **kwargs: Any) -> None:
            return None

    nolog = copy.copy(state)
    nolog.plog = NoLog()

    def constant() -> Response:
        return Response(body, mimetype="application/json")

    def lookup_constant() -> Response:
        """The body read and parsed as /predict does, the customer read from the feature store."""
        from flask import request

        data = parse_json(request_body(request.environ, state.max_body))
        state.store.get_many([data["customer_id"]])
        return Response(body, mimetype="application/json")

    redis_address = urlsplit(settings.redis_url)
    raw: dict[str, socket.socket] = {}

    def ping_constant() -> Response:
        """One round trip to Redis on a bare socket (no client library), then the constant JSON: the most
        any design that asks Redis once per request can reach here."""
        sock = raw.get("sock")
        if sock is None:
            address = (redis_address.hostname, redis_address.port or 6379)
            sock = raw["sock"] = socket.create_connection(address)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(b"*1\r\n$4\r\nPING\r\n")
        if sock.recv(64) != b"+PONG\r\n":
            raise RuntimeError("Redis did not answer PONG")
        return Response(body, mimetype="application/json")

    app.add_url_rule("/bench/constant", "bench_constant", constant, methods=["POST"])
    app.add_url_rule("/bench/ping-constant", "bench_ping_constant", ping_constant, methods=["POST"])
    app.add_url_rule("/bench/lookup-constant", "bench_lookup_constant", lookup_constant, methods=["POST"])
    app.add_url_rule("/bench/predict-nolog", "bench_predict_nolog", lambda: handle_predict(nolog),
                     methods=["POST"])
    return app


def bare_constant_app(settings: Any) -> Any:
    """A bare Flask app answering the constant JSON (no metrics, no model): the framework alone."""
    from flask import Flask, Response

    app = Flask("bench_constant")
    body = json.dumps(CONSTANT)

    @app.post("/bench/constant")
    def constant() -> Response:
        return Response(body, mimetype="application/json")

    return app


# -- set-up -----------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout_s: float, proc: subprocess.Popen, log: Path) -> None:
    import requests

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if requests.get(url, timeout=2).status_code < 500:
                return
        except requests.RequestException:
            pass
        time.sleep(0.25)
    raise SystemExit(f"{url} did not answer within {timeout_s} s:\n{log.read_text()[-3000:]}")


def prepare_home(root: Path, redis_url: str, rows: int, trees: int, depth: int) -> tuple[Any, list[str]]:
    """A project home with a registered XGBoost champion and the customers' features pushed."""
    import mlflow
    import yaml
    from mlflow import MlflowClient
    from sklearn.pipeline import Pipeline
    from xgboost import XGBClassifier

    from churnops import registry, tracking
    from churnops.data.generate import generate
    from churnops.feature_store import FeatureStore
    from churnops.features import FeatureEncoder
    from churnops.outliers import fit_from_settings
    from churnops.settings import load_settings

    home = root / "home"
    home.mkdir(parents=True)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    (home / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    settings = load_settings(home=home, env={"REDIS_URL": redis_url})
    schema = settings.schema
    table = generate(schema, rows, seed=42)
    X = table[schema.feature_columns]  # noqa: N806
    y = (table[schema.target.column] == schema.target.positive).astype(int).to_numpy()
    model = XGBClassifier(n_estimators=trees, max_depth=depth, learning_rate=0.05, n_jobs=2, random_state=0)
    pipeline = Pipeline([("encode", FeatureEncoder.from_schema(schema)), ("model", model)]).fit(X, y)
    experiment = tracking.configure_tracking(settings)
    with mlflow.start_run(experiment_id=experiment) as run:
        info = tracking.log_model(pipeline, X, settings)
        # the Isolation Forest training logs with every model: /predict scores it too (`anomaly`)
        detector = fit_from_settings(X, settings).save(root / "isolation_forest.npz")
        mlflow.log_artifact(str(detector), artifact_path=str(Path(tracking.OUTLIER_ARTIFACT).parent))
        mlflow.log_param("threshold", 0.5)
        mlflow.set_tags({tracking.TAG_MODEL_URI: info.model_uri, tracking.TAG_MODEL_ID: info.model_id,
                         "candidate": "xgboost"})
    version = registry.register(settings, run.info.run_id)
    uri = settings.mlflow_tracking_uri
    MlflowClient(tracking_uri=uri, registry_uri=uri).set_registered_model_alias(
        settings.params.register_.model_name, "champion", version)
    FeatureStore.from_settings(settings).push(table[[schema.id_column, *schema.feature_columns]])
    ids = table[schema.id_column].astype(str).tolist()
    return settings, ids


def start_server(settings: Any, factory: str, log: Path, redis_url: str,
                 extra: tuple[str, ...] = ()) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "CHURNOPS_HOME": str(settings.home), "REDIS_URL": redis_url, "PYTHONPATH": str(REPO),
           "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    cmd = [str(Path(sys.executable).parent / "churnops"), "serve", "--host", "127.0.0.1", "--port", str(port),
           "--app-factory", factory, *extra]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    return proc, f"http://127.0.0.1:{port}"


def start_redis(root: Path) -> tuple[subprocess.Popen, str]:
    """A private redis-server (no persistence) on a free port, ready; its URL."""
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no",
                             "--dir", str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    return proc, f"redis://127.0.0.1:{port}/0"


def stop(proc: subprocess.Popen) -> None:
    from pipeline.processes import stop_process_group

    stop_process_group(proc)


# -- slow clients -----------------------------------------------------------------------------------
class SlowClients:
    """`n` connections that trickle a request one byte every `interval_s` (half of them headers, half a
    declared body) and reconnect whenever the server drops them, as a slowloris attack does."""

    def __init__(self, host: str, port: int, n: int, interval_s: float = 0.5) -> None:
        self.address = (host, port)
        self.n = n
        self.interval_s = interval_s
        self.stop = threading.Event()
        self.reconnects = 0
        self.thread = threading.Thread(target=self._run, name="slow-clients", daemon=True)

    def _open(self, i: int) -> socket.socket | None:
        try:
            sock = socket.create_connection(self.address, timeout=5)
            if i % 2:
                sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")
            else:
                sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 100000\r\n\r\n{")
            return sock
        except OSError:
            return None

    def _run(self) -> None:
        socks = [self._open(i) for i in range(self.n)]
        while not self.stop.wait(self.interval_s):
            for i, sock in enumerate(socks):
                try:
                    if sock is None:
                        raise OSError("not connected")
                    sock.send(b"X" if i % 2 else b" ")
                except OSError:
                    if sock is not None:
                        sock.close()
                    self.reconnects += 1
                    socks[i] = self._open(i)
        for sock in socks:
            if sock is not None:
                sock.close()

    def __enter__(self) -> SlowClients:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


def children(master_pid: int) -> set[int]:
    return {int(pid) for pid in Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()}


def start_mlflow_serve(settings: Any, log: Path) -> tuple[subprocess.Popen, str]:
    """`mlflow models serve` on the same @champion, 2 workers, this environment."""
    port = free_port()
    uri = f"models:/{settings.params.register_.model_name}@champion"
    bin_dir = str(Path(sys.executable).parent)  # it runs `uvicorn` by name
    env = {**os.environ, "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
           "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    cmd = [str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", uri,
           "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"]
    proc = subprocess.Popen(cmd, cwd=settings.home, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    return proc, f"http://127.0.0.1:{port}"


# -- wrk --------------------------------------------------------------------------------------------
def lua_static(path: Path, body: dict[str, Any]) -> Path:
    text = json.dumps(body).replace("\\", "\\\\").replace("'", "\\'")
    path.write_text("wrk.method = 'POST'\n"
                    "wrk.headers['Content-Type'] = 'application/json'\n"
                    f"wrk.body = '{text}'\n")
    return path


def lua_ids(path: Path, ids: list[str]) -> Path:
    listing = ",".join(json.dumps(i) for i in ids)
    path.write_text(
        f"local ids = {{{listing}}}\n"
        "local n = 0\n"
        "local headers = {['Content-Type'] = 'application/json'}\n"
        "request = function()\n"
        "  n = n + 1\n"
        "  return wrk.format('POST', nil, headers, '{\"customer_id\": \"' .. ids[(n % #ids) + 1] .. '\"}')\n"
        "end\n")
    return path


_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    if not m:
        raise ValueError(f"cannot read latency {text!r}")
    return float(m.group(1)) * _UNIT[m.group(2)]


def worker_cpu_s(master_pid: int) -> float:
    """CPU seconds (user + system) used so far by the gunicorn workers of `master_pid`."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
    for pid in children:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def run_wrk(url: str, script: Path | None, duration: int, connections: int, threads: int,
            master_pid: int | None = None) -> dict[str, float]:
    cpu0 = worker_cpu_s(master_pid) if master_pid else 0.0
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency",
                          *(["-s", str(script)] if script else []), url],
                         capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    requests_done = int(re.search(r"(\d+) requests in", out).group(1))
    cpu_us = ((worker_cpu_s(master_pid) - cpu0) / requests_done * 1e6 if master_pid and requests_done
              else float("nan"))
    return {"rps": rps, "p50_ms": p50, "p99_ms": p99, "non_2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": errors.group(0) if errors else "", "worker_cpu_us": cpu_us}


# -- where a request's time goes (in-process, same model) -------------------------------------------
def breakdown(settings: Any, body: dict[str, Any], n: int = 2000) -> dict[str, float]:
    """CPU microseconds per call of each step of the full-payload path, on the registered champion, and of
    one Redis round trip (what a lookup by id adds at least)."""
    import orjson

    from churnops import registry
    from churnops.feature_store import connect
    from serving.validation import RequestValidator, parse_json

    champion = registry.load_champion(settings)
    scorer = champion.scorer
    validator = RequestValidator(settings.schema, settings.params.serving.max_batch)
    raw = json.dumps(body).encode()
    record = validator.parse(parse_json(raw)).items[0].record
    matrix = scorer.matrix([record])
    redis_client = connect(settings.redis_url, connect_timeout_s=1, socket_timeout_s=1)
    steps = {
        "parse + validate": lambda: validator.parse(parse_json(raw)),
        "encode (FeatureEncoder.encode_records)": lambda: scorer.encoder.encode_records([record]),
        "model: compiled trees (churnops.trees)": lambda: scorer._proba(matrix),
        "model: Booster.inplace_predict, 1 thread": lambda: scorer._library_proba(matrix),
        "outlier detector (compiled Isolation Forest)": lambda: champion.outliers.score_encoded(matrix),
        "whole scoring (ChampionModel.score_records)": lambda: champion.score_records([record]),
        "response JSON": lambda: orjson.dumps(CONSTANT),
        "one Redis round trip (PING)": redis_client.ping,
    }
    out = {}
    for name, step in steps.items():
        step()
        started = time.process_time()
        for _ in range(n):
            step()
        out[name] = (time.process_time() - started) / n * 1e6
    out["trees"] = float(scorer._booster.num_boosted_rounds()) if scorer._booster is not None else 0.0
    return out


# -- plot -------------------------------------------------------------------------------------------
def plot_results(doc: dict[str, Any], path: Path) -> Path:
    """Requests/s of every target, each round as a dot and the median as a bar, with the targets' lines
    (0.7x and 0.6x of the same app's constant route)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = doc["runs"]
    names = list(runs)
    base = doc["summary"]["constant JSON (same app)"]["rps"]
    fig, ax = plt.subplots(figsize=(9, 0.55 * len(names) + 1.6))
    for y, name in enumerate(names):
        median = doc["summary"][name]["rps"]
        ax.barh(y, median, color="#4c72b0" if name.startswith("/predict") else "#aaaaaa")
        ax.scatter([r["rps"] for r in runs[name]], [y] * len(runs[name]), color="black", s=12, zorder=3)
        right = max(median, *(r["rps"] for r in runs[name]))
        ax.text(right, y, f"  {median / base:.2f}x, p50 {doc['summary'][name]['p50_ms']:.1f} ms, "
                          f"p99 {doc['summary'][name]['p99_ms']:.1f} ms", va="center", fontsize=8)
    for ratio, style, align in ((0.7, "--", "left"), (0.6, ":", "right")):
        ax.axvline(ratio * base, color="#c44e52", linestyle=style, linewidth=1)
        ax.text(ratio * base, -0.6, f" {ratio}x constant ", color="#c44e52", fontsize=8, ha=align)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("requests/s (bar: median of the rounds; dots: each round)")
    args = doc.get("args", {})
    ax.set_title(f"churnops serve, gunicorn 2 sync workers, {os.cpu_count()} CPUs; "
                 f"wrk -c{args.get('connections')} -d{args.get('duration')}s", fontsize=9)
    ax.set_xlim(0, max(r["rps"] for rs in runs.values() for r in rs) * 1.5)
    ax.set_ylim(len(names) - 0.5, -0.9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# -- main -------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the median is kept")
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--trees", type=int, default=500)
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--plot", type=Path, default=None, help="also draw the results to this PNG")
    parser.add_argument("--slow-clients", type=int, default=0,
                        help="also measure /predict and /health while this many slow clients trickle")
    parser.add_argument("--mlflow", action="store_true", help="also measure `mlflow models serve`")
    parser.add_argument("--direct", action="store_true",
                        help="also measure /predict on gunicorn alone (--front none), idle and slow clients")
    args = parser.parse_args()
    for tool in ("wrk", "redis-server"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (apt-get install -y {tool.split('-')[0]})")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    from churnops.logs import configure_logging

    configure_logging("WARNING")
    root = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    redis_proc, redis_url = start_redis(root)
    servers: list[subprocess.Popen] = []
    try:
        print("preparing: data, model, registry, features ...", flush=True)
        settings, ids = prepare_home(root, redis_url, args.rows, args.trees, args.depth)
        app_proc, app_url = start_server(settings, "benchmarks.bench_serving:bench_app", root / "app.log",
                                         redis_url)
        servers.append(app_proc)
        bare_proc, bare_url = start_server(settings, "benchmarks.bench_serving:bare_constant_app",
                                           root / "bare.log", redis_url)
        servers.append(bare_proc)
        wait_http(app_url + "/health", 180, app_proc, root / "app.log")
        wait_http(bare_url + "/nothing", 180, bare_proc, root / "bare.log")

        from serving.openapi import example_request

        body = example_request(settings)
        static = lua_static(root / "full.lua", body)
        by_id = lua_ids(root / "ids.lua", ids[:2000])
        targets: dict[str, tuple[str, Path | None, int]] = {
            "constant JSON (same app)": (app_url + "/bench/constant", static, app_proc.pid),
            "/predict full payload": (app_url + "/predict", static, app_proc.pid),
            "/predict by customer_id": (app_url + "/predict", by_id, app_proc.pid),
            "/predict full, log off": (app_url + "/bench/predict-nolog", static, app_proc.pid),
            "lookup by id + constant": (app_url + "/bench/lookup-constant", by_id, app_proc.pid),
            "raw Redis PING + constant": (app_url + "/bench/ping-constant", static, app_proc.pid),
            "constant JSON (bare Flask)": (bare_url + "/bench/constant", static, bare_proc.pid),
        }
        if args.slow_clients:
            targets["/health"] = (app_url + "/health", None, app_proc.pid)
        if args.direct:
            direct_proc, direct_url = start_server(settings, "benchmarks.bench_serving:bench_app",
                                                   root / "direct.log", redis_url, ("--front", "none"))
            servers.append(direct_proc)
            wait_http(direct_url + "/health", 180, direct_proc, root / "direct.log")
            targets["/predict full payload, --front none"] = (direct_url + "/predict", static,
                                                              direct_proc.pid)
        if args.mlflow:
            mlflow_proc, mlflow_url = start_mlflow_serve(settings, root / "mlflow.log")
            servers.append(mlflow_proc)
            wait_http(mlflow_url + "/ping", 300, mlflow_proc, root / "mlflow.log")
            schema = settings.schema
            record = {col: body[schema.api_field(col)] for col in schema.feature_columns}
            mlflow_script = lua_static(root / "mlflow.lua", {"dataframe_records": [record]})
            targets["mlflow models serve /invocations"] = (mlflow_url + "/invocations", mlflow_script, 0)
        import requests

        for name, (url, _, _) in targets.items():  # warm up every route and check it answers 200
            if name == "/health":
                response = requests.get(url, timeout=10)
            elif name.startswith("mlflow"):
                response = requests.post(url, json={"dataframe_records": [record]}, timeout=60)
            else:
                payload = body if "id" not in name else {"customer_id": ids[0]}
                response = requests.post(url, json=payload, timeout=10)
            if response.status_code != 200:
                raise SystemExit(f"{name}: {response.status_code} {response.text[:300]}")
        slow_names = ["/predict full payload", "/health"] if args.slow_clients else []
        if args.slow_clients and args.direct:  # last: slow clients may leave its workers killed
            slow_names.append("/predict full payload, --front none")
        workers_before = children(app_proc.pid)
        slow_reconnects = 0
        steps = breakdown(settings, body)
        for name, us in steps.items():
            if name != "trees":
                print(f"in-process: {name:<42} {us:8.1f} us", flush=True)
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in targets}
        runs.update({f"{name} | {args.slow_clients} slow clients": [] for name in slow_names})
        load: list[tuple[float, float, float]] = []
        for r in range(args.rounds):
            load.append(os.getloadavg())
            for name, (url, script, pid) in targets.items():
                result = run_wrk(url, script, args.duration, args.connections, args.threads, pid or None)
                runs[name].append(result)
                print(f"round {r + 1} {name:<28} {result['rps']:8.0f} req/s  p50 {result['p50_ms']:6.2f} ms"
                      f"  p99 {result['p99_ms']:6.2f} ms  worker CPU {result['worker_cpu_us']:6.0f} us/req  "
                      f"non-2xx {result['non_2xx']} {result['socket_errors']}", flush=True)
            if not slow_names:
                continue
            for name in slow_names:
                url, script, pid = targets[name]
                with SlowClients("127.0.0.1", int(urlsplit(url).port), args.slow_clients) as slow:
                    time.sleep(2)  # every slow connection open and trickling
                    try:
                        result = run_wrk(url, script, args.duration, args.connections, args.threads, pid)
                    except (subprocess.CalledProcessError, AttributeError) as exc:  # no answer at all
                        print(f"round {r + 1} {name} + slow clients: wrk measured nothing ({exc})")
                        result = {"rps": 0.0, "p50_ms": float("nan"), "p99_ms": float("nan"), "non_2xx": 0,
                                  "socket_errors": "no response", "worker_cpu_us": float("nan")}
                runs[f"{name} | {args.slow_clients} slow clients"].append(result)
                print(f"round {r + 1} {name} + {args.slow_clients} slow clients {result['rps']:8.0f} "
                      f"req/s  p50 {result['p50_ms']:6.2f} ms  p99 {result['p99_ms']:6.2f} ms  "
                      f"non-2xx {result['non_2xx']} {result['socket_errors']}", flush=True)
                if name == "/predict full payload":
                    slow_reconnects += slow.reconnects
        workers_after = children(app_proc.pid)
        worker_timeouts = (root / "app.log").read_text(errors="replace").count("WORKER TIMEOUT")
        direct_timeouts = ((root / "direct.log").read_text(errors="replace").count("WORKER TIMEOUT")
                           if args.direct else None)
    finally:
        for proc in servers:
            stop(proc)
        redis_proc.terminate()
        redis_proc.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)

    summary = {}
    for name, results in runs.items():
        rps = statistics.median(r["rps"] for r in results)
        summary[name] = {"rps": rps, "p50_ms": statistics.median(r["p50_ms"] for r in results),
                         "p99_ms": statistics.median(r["p99_ms"] for r in results),
                         "worker_cpu_us": statistics.median(r["worker_cpu_us"] for r in results),
                         "non_2xx": sum(r["non_2xx"] for r in results)}
    base = summary["constant JSON (same app)"]["rps"]
    bare = summary["constant JSON (bare Flask)"]["rps"]
    print(f"\nmedian of {args.rounds} rounds, wrk -t{args.threads} -c{args.connections} -d{args.duration}s, "
          f"gunicorn workers={settings.params.serving.workers} threads={settings.params.serving.threads}, "
          f"{os.cpu_count()} CPUs")
    print(f"{'target':<44}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'vs const':>10}{'vs bare':>9}"
          f"{'CPU us/req':>12}")
    for name, s in summary.items():
        print(f"{name:<44}{s['rps']:9.0f}{s['p50_ms']:9.2f}{s['p99_ms']:9.2f}{s['rps'] / base:10.2f}"
              f"{s['rps'] / bare:9.2f}{s['worker_cpu_us']:12.0f}")
    full = summary["/predict full payload"]["rps"] / base
    by_id_ratio = summary["/predict by customer_id"]["rps"] / base
    print(f"\nfull payload / constant = {full:.2f} (target >= 0.7): {'PASS' if full >= 0.7 else 'FAIL'}")
    print(f"by customer_id / constant = {by_id_ratio:.2f} (target >= 0.6): "
          f"{'PASS' if by_id_ratio >= 0.6 else 'FAIL'}; the lookup alone allows at most "
          f"{summary['lookup by id + constant']['rps'] / base:.2f}, one bare-socket Redis round trip "
          f"{summary['raw Redis PING + constant']['rps'] / base:.2f}")
    for name in slow_names:
        slow = summary[f"{name} | {args.slow_clients} slow clients"]
        idle = summary[name]
        print(f"{name} with {args.slow_clients} slow clients: {slow['rps'] / idle['rps']:.2f}x its idle "
              f"req/s (target >= 0.8), p99 {slow['p99_ms']:.1f} ms (target < 50): "
              f"{'PASS' if slow['rps'] >= 0.8 * idle['rps'] and slow['p99_ms'] < 50 else 'FAIL'}")
    if slow_names:
        print(f"workers killed (nginx front): {worker_timeouts} WORKER TIMEOUT, master's children "
              f"{'unchanged' if workers_after == workers_before else 'changed'}; slow connections dropped by "
              f"the server and reopened: {slow_reconnects}")
        if direct_timeouts is not None:
            print(f"workers killed (gunicorn alone, --front none): {direct_timeouts} WORKER TIMEOUT")
    if args.mlflow:
        lead = summary["/predict full payload"]["rps"] / summary["mlflow models serve /invocations"]["rps"]
        print(f"/predict full payload vs mlflow models serve: {lead:.1f}x the requests/s")
    doc = {"summary": summary, "runs": runs, "breakdown_us": steps, "load_average": os.getloadavg(),
           "load_average_per_round": load,
           "args": {k: v for k, v in vars(args).items() if k not in ("json", "plot")}}
    if slow_names:
        doc["slow_clients"] = {"worker_timeouts": worker_timeouts, "reconnects": slow_reconnects,
                               "workers_unchanged": workers_after == workers_before,
                               "direct_worker_timeouts": direct_timeouts}
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2))
    if args.plot:
        print(f"plot: {plot_results(doc, args.plot)}")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
