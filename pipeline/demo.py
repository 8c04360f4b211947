"""`churnops demo`: the whole loop on demo data, with embedded defaults, in one command.

generate a demo table -> version it with DVC and run the training pipeline -> push every customer's features
to Redis -> start the server -> send real predictions (full payload, by customer id, a batch) -> start a
local Airflow -> send a drifted batch through /predict -> run the drift check on what the server saw (alert
+ retraining trigger) -> follow the `churn_training` run the drift check triggered to its promotion decision.

The server and the drift check run as the real `churnops serve` / `churnops drift check` processes, and
Airflow as the real `airflow standalone` of `churnops airflow up` (:mod:`pipeline.airflow_local`), exactly as
an operator would start them; the drift check triggers the training DAG over Airflow's REST API as in
production (:mod:`monitoring.retrain`, through :mod:`churnops.airflow_rest`, the client the demo uses
too). If Airflow cannot start, the demo says why and runs the drift check with ``--no-retrain``.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pandas as pd
import requests

from churnops.airflow_rest import (
    ENV_PASSWORD,
    ENV_URL,
    ENV_USER,
    AirflowAPI,
    AirflowAPIError,
    AirflowUnreachable,
)
from churnops.logs import get_logger
from churnops.redaction import redact_url
from churnops.settings import Settings
from pipeline.processes import free_port, port_free, stop_process_group

log = get_logger(__name__)

RETRAIN_TIMEOUT_S = 900.0  # how long the demo follows the retraining run (a loaded 2-core machine: ~5 min)
TRAINING_DAG = "churn_training"


class DemoError(RuntimeError):
    """The demo cannot go on; the message says what to do."""


def _say(text: str) -> None:
    print(f"\n=== {text}", flush=True)


def _churnops() -> str:
    exe = Path(sys.executable).parent / "churnops"
    return str(exe) if exe.exists() else "churnops"


def _env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env["CHURNOPS_HOME"] = str(settings.home)
    env["CHURNOPS_PARAMS"] = str(settings.params_path)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def ensure_redis(settings: Settings) -> str:
    """Make sure Redis answers at REDIS_URL; start a local redis-server when it does not and one exists."""
    import redis

    from churnops.feature_store import connect

    url = settings.redis_url
    try:
        connect(url, connect_timeout_s=1, socket_timeout_s=1).ping()
        return url
    except redis.RedisError:
        pass
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 6379
    binary = shutil.which("redis-server")
    if binary is None or host not in ("127.0.0.1", "localhost", "::1"):
        raise DemoError(
            f"no Redis answers at {redact_url(url)}. Start one, e.g. `redis-server --daemonize yes "
            f"--port {port} --save '' --appendonly no` (Debian: `apt-get install redis-server`), "
            "or set REDIS_URL.")
    workdir = settings.home / ".redis"
    workdir.mkdir(exist_ok=True)
    subprocess.run([binary, "--daemonize", "yes", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                    "--appendonly", "no", "--dir", str(workdir), "--logfile", str(workdir / "redis.log")],
                   check=True)
    for _ in range(50):
        try:
            connect(url, connect_timeout_s=1, socket_timeout_s=1).ping()
            log.info("demo.redis_started", port=port)
            return url
        except redis.RedisError:
            time.sleep(0.1)
    raise DemoError(f"started redis-server on port {port} but it does not answer; see {workdir}/redis.log")


@contextmanager
def running_server(settings: Settings, port: int, timeout_s: float = 180) -> Iterator[str]:
    """`churnops serve` in its own process group, stopped on exit; yields its base URL."""
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([_churnops(), "serve", "--host", "127.0.0.1", "--port", str(port)],
                            env=_env(settings), start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise DemoError(f"`churnops serve` exited with {proc.returncode} before answering")
            try:
                if requests.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise DemoError(f"the server did not become healthy within {timeout_s:.0f} s")
            time.sleep(0.5)
        yield base
    finally:
        stop_process_group(proc)


# -- Airflow: the retraining the drift check triggers -----------------------------------------------------
@dataclass
class DemoAirflow:
    """The local Airflow the demo started: where it answers, its login, and the instance to stop."""

    url: str
    user: str
    password: str
    local: Any  # pipeline.airflow_local.LocalAirflow the demo started; None: an Airflow it only uses
    params_path: Path  # the settings file its tasks read: the project's own (one budget everywhere)
    start_s: float
    pid: int | None = None  # the standalone's process group

    def api(self) -> AirflowAPI:
        return AirflowAPI(self.url, self.user, self.password, timeout_s=15)

    def check_env(self) -> dict[str, str]:
        """What `churnops drift check` needs to trigger retraining here (monitoring/retrain.py)."""
        return {ENV_URL: self.url, ENV_USER: self.user, ENV_PASSWORD: self.password}


def _airflow_port() -> int:
    """CHURNOPS_AIRFLOW_PORT when set (as `churnops airflow up`), else 8080 when free, else any free port."""
    from pipeline.airflow_local import ENV_PORT

    if os.environ.get(ENV_PORT):
        return int(os.environ[ENV_PORT])
    return 8080 if port_free(8080) else free_port()


def start_airflow(settings: Settings, serving_url: str | None, port: int | None = None,
                  timeout_s: float = 600) -> tuple[DemoAirflow | None, str]:
    """Start `airflow standalone` for the demo's home (the code of `churnops airflow up`) and unpause the
    training DAG. Returns (the instance, "") or (None, why it could not start): never raises."""
    from pipeline.airflow_local import LocalAirflow

    started = time.monotonic()
    local = None
    running = False  # stop it on a failure after it started, never one that ran before the demo
    try:
        local = LocalAirflow.from_env(settings.home, port=port or _airflow_port())
        params_path = settings.params_path
        # tasks inherit this environment: the project's params.yaml (the same search budget as every other
        # training: benchmarks/RESULTS.md, "Whole pipeline"), and the server to confirm a new
        # champion on (GET /model), as CHURNOPS_SERVING_URL does in production
        local.extra_env = {"CHURNOPS_PARAMS": str(params_path),
                           **({"CHURNOPS_SERVING_URL": serving_url} if serving_url else {})}
        info = local.start(wait_dags=[settings.params.monitoring.retrain.dag_id],
                           progress=lambda msg: print(f"... {msg}", flush=True), timeout_s=timeout_s)
        airflow = DemoAirflow(info["url"], info["user"], info["password"], local, params_path,
                              time.monotonic() - started, info["pid"])
        running = True
        # new DAGs start paused; an operator unpauses the training DAG once (the UI's toggle)
        airflow.api().unpause(settings.params.monitoring.retrain.dag_id)
    except Exception as exc:  # the demo goes on without retraining; the message says why
        if running and local is not None:
            try:
                local.stop()
            except Exception as stop_exc:  # reported; the demo goes on
                log.warning("demo.airflow_stop_failed", error=str(stop_exc))
        why = str(exc) if isinstance(exc, AirflowAPIError) else f"{type(exc).__name__}: {exc}"
        log.warning("demo.airflow_failed", error=why)
        return None, why
    log.info("demo.airflow_started", url=airflow.url, seconds=round(airflow.start_s, 1),
             params=str(params_path))
    return airflow, ""


def stop_airflow(airflow: DemoAirflow) -> None:
    """SIGTERM to the standalone's process group (SIGKILL after a minute), as `churnops airflow down`."""
    started = time.monotonic()
    airflow.local.stop(timeout_s=60)
    log.info("demo.airflow_stopped", seconds=round(time.monotonic() - started, 1))


def follow_retraining(settings: Settings, airflow: DemoAirflow, drift_json: Path,
                      timeout_s: float = RETRAIN_TIMEOUT_S) -> dict[str, Any]:
    """Wait for the training run the drift check triggered (its id is in drift.json's actions); print its
    state, its tasks and the promotion gate's decision. Never raises: problems come back as `error`."""
    try:
        action = (json.loads(drift_json.read_text()).get("actions") or {}).get("retrain")
    except (OSError, ValueError) as exc:
        return {"status": "unknown", "error": f"cannot read the drift report {drift_json}: {exc}"}
    if not action:
        return {"status": "not_triggered", "error": "the drift check triggered no retraining "
                f"(no actions.retrain in {drift_json})"}
    if action.get("status") != "triggered":
        why = action.get("error") or action.get("reason")
        print(f"retraining {action.get('status')}: {why}")
        if action.get("status") == "suppressed":
            print("  (at most one retraining per monitoring.retrain.cooldown_s; `churnops drift triggers` "
                  "lists the decisions)")
        return {"status": action.get("status"), "error": why}

    dag_id, run_id = action.get("dag_id") or settings.params.monitoring.retrain.dag_id, action["dag_run_id"]
    out: dict[str, Any] = {"status": "triggered", "dag_id": dag_id, "dag_run_id": run_id,
                           "url": f"{airflow.url}/dags/{dag_id}/runs/{run_id}"}
    print(f"drift triggered {dag_id} run {run_id} over the Airflow REST API; following it "
          f"(up to {timeout_s:.0f} s, --retrain-timeout)")
    api = airflow.api()
    seen: dict[str, str] = {}
    started = time.monotonic()

    def _show(_run: dict[str, Any]) -> None:
        try:
            tis = api.task_instances(dag_id, run_id)
        except AirflowUnreachable:
            return  # a busy API server: the next poll shows the states
        for ti in tis:
            state = ti.get("state")
            if state and seen.get(ti["task_id"]) != state:
                seen[ti["task_id"]] = state
                print(f"  {time.monotonic() - started:6.0f} s  {ti['task_id']:<20} {state}", flush=True)

    try:
        final = api.wait_for_run(dag_id, run_id, timeout_s=timeout_s, poll_s=3, on_poll=_show)
        out["state"] = final["state"]
        out["seconds"] = round(time.monotonic() - started, 1)
        out["tasks"] = {ti["task_id"]: ti.get("state") for ti in api.task_instances(dag_id, run_id)}
        if final["state"] == "success":
            report = api.xcom(dag_id, run_id, "report") or {}
            registry = report.get("registry") or {}
            promotion = registry.get("promotion") or {}
            out.update(registered_version=registry.get("registered_version"),
                       champion=registry.get("champion"), promoted=bool(promotion.get("promoted")),
                       gate_reason=promotion.get("reason"))
    except AirflowAPIError as exc:
        out.update(state=out.get("state", "unknown"), error=str(exc))
    counts: dict[str, int] = {}
    for state in (out.get("tasks") or {}).values():
        counts[str(state)] = counts.get(str(state), 0) + 1
    print(f"\nretraining run {run_id}: {str(out.get('state')).upper()}"
          + (f" after {out['seconds']:.0f} s" if "seconds" in out else ""))
    if counts:
        print("  tasks: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    if "promoted" in out:
        if out["promoted"]:
            out["outcome"] = f"new @champion: version {out['champion']}"
        else:
            out["outcome"] = f"not promoted: the promotion gate kept version {out['champion']}"
        print(f"  outcome: {out['outcome']} ({out.get('gate_reason')})")
    elif out.get("state") == "failed":
        failed = [t for t, s in out.get("tasks", {}).items() if s in ("failed", "upstream_failed")]
        out["outcome"] = f"failed tasks: {', '.join(failed) or '?'}"
        logs = f"{airflow.local.home / 'logs'} or the UI" if airflow.local is not None else "the UI"
        print(f"  {out['outcome']}; task logs: {logs}")
    if out.get("error"):
        print(f"  {out['error']}")
    print(f"  run in the UI: {out['url']}  (login {airflow.user} / {airflow.password})")
    log.info("demo.retraining", dag_run_id=run_id, state=out.get("state"), seconds=out.get("seconds"),
             outcome=out.get("outcome"))
    return out


def payload(row: pd.Series, settings: Settings) -> dict[str, Any]:
    """A gold-layer row as an application sends it (API field names, JSON types)."""
    schema = settings.schema
    body: dict[str, Any] = {}
    for col in schema.feature_columns:
        value = row[col]
        body[schema.api_field(col)] = value.item() if hasattr(value, "item") else value
    return body


def _show(title: str, response: requests.Response) -> dict[str, Any]:
    doc = response.json()
    print(f"--- {title} -> HTTP {response.status_code}")
    print(json.dumps(doc, indent=2)[:1500])
    return doc


def score_for_analytics(settings: Settings) -> dict[str, Any]:
    """Batch scoring of every customer: the scores, the analytics marts and the BI exports the dashboard
    reads; prints the run's figures and the dashboard command."""
    from pipeline.batch import score_customers

    print("batch scoring every customer: scores, analytics marts (KPIs, segments, actions), BI exports")
    result = score_customers(settings, top_n=5)
    kpi = result.kpi
    print(f"run {result.run_id}: {result.rows} customers, expected churners {kpi['expected_churners']:,.0f} "
          f"(churn rate {kpi['churn_rate']:.1%}), revenue at risk "
          f"{'-' if kpi['revenue_at_risk'] is None else format(kpi['revenue_at_risk'], ',.0f')}, "
          f"{kpi['actions']} recommended actions\n  BI exports: {result.exports}\n"
          f"  dashboard: {dashboard_command(settings)}")
    return result.to_dict()


def dashboard_command(settings: Settings) -> str:
    return f"{shlex.quote(_churnops())} --home {shlex.quote(str(settings.home))} dashboard --port 8501"


def run_demo(settings: Settings, *, rows: int | None = None, seed: int | None = None,
             drift: bool = True, airflow: bool = True, keep_airflow: bool = False,
             retrain_timeout_s: float = RETRAIN_TIMEOUT_S, airflow_port: int | None = None) -> dict[str, Any]:
    """The whole loop; returns what each step produced (the tests read it).

    With `drift` and `airflow`, a local Airflow runs the retraining the drift check triggers; it is stopped
    at the end unless `keep_airflow`. CHURNOPS_AIRFLOW_URL set: that Airflow is used as it is (nothing is
    started, the run is followed with CHURNOPS_AIRFLOW_USER / CHURNOPS_AIRFLOW_PASSWORD).
    """
    from churnops.feature_store import FeatureStore
    from pipeline.run import run_training, summarise_report

    demo = settings.params.data.demo
    rows, seed = rows or demo.rows, demo.seed if seed is None else seed
    incoming = settings.home / "data" / "incoming"
    transactions = settings.source == "transactions"

    if transactions:
        _say(f"1/6 generating the invoice lines of {rows} demo customers (seed {seed}; source: transactions)")
        table = _demo_lines(settings, incoming / "demo-transactions.csv", rows, seed)
    else:
        from churnops.data.generate import generate_to_csv

        _say(f"1/6 generating {rows} demo customers (seed {seed})")
        table = generate_to_csv(settings.schema, rows=rows, seed=seed, out=incoming / "demo-customers.csv")
    print(table)

    _say("2/6 versioning with DVC and running the training pipeline (validate -> features -> train -> "
         "evaluate -> register)")
    report = run_training(settings, table)
    print(summarise_report(report))

    _say("3/6 pushing every customer's features to the Redis feature store; batch scoring them")
    ensure_redis(settings)
    pushed = FeatureStore.from_settings(settings).push_current(settings)
    print(json.dumps(pushed.to_dict(), indent=2, default=str))
    scoring = score_for_analytics(settings)

    _say("4/6 starting the server and sending predictions")
    test = pd.read_parquet(settings.features_dir / "test.parquet")
    churner = test[test["churn"] == 1].iloc[0]
    stayer = test[test["churn"] == 0].iloc[0]
    results: dict[str, Any] = {"report": report, "scoring": scoring}
    with running_server(settings, free_port()) as base:
        results["full_payload"] = _show("full payload (a customer who churned)",
                                        requests.post(f"{base}/predict", json=payload(churner, settings)))
        cid = _known_customer(settings) if transactions else str(stayer[settings.schema.id_column])
        results["by_id"] = _show(f"by customer id {cid} (features from Redis), with explanation",
                                 requests.post(f"{base}/predict?explain=true", json={"customer_id": cid}))
        batch = [payload(r, settings) for _, r in test.head(3).iterrows()]
        results["batch"] = _show("a batch of 3", requests.post(f"{base}/predict", json={"instances": batch}))
        if drift:
            results.update(_drift_and_retraining(settings, base, seed, airflow=airflow,
                                                 keep_airflow=keep_airflow, timeout_s=retrain_timeout_s,
                                                 port=airflow_port))
    return results


def _demo_lines(settings: Settings, out: Path, customers: int, seed: int, drift: Any = None) -> Path:
    """A demo retailer's invoice lines (transactions.generate's period), written to `out`."""
    from churnops.transactions.generate import RetailerProfile, generate_to_file

    cfg = settings.params.transactions
    profile = RetailerProfile(customers=customers, start=cfg.generate.start, end=cfg.generate.end)
    generate_to_file(out, cfg.columns, profile=profile, seed=seed, drift=drift)
    return out


def _known_customer(settings: Settings) -> str:
    """A customer whose current features the feature store holds (transactions)."""
    from churnops.transactions.build import current_features

    return str(current_features(settings)[settings.schema.id_column].iloc[0])


def _drifted_rows(settings: Settings, seed: int) -> pd.DataFrame:
    """1,000 drifted customers: fewer purchases and bigger transactions (a customer table's columns moved
    by DriftSpec; a retailer buying at 40% of the rate with baskets twice as large, as current features)."""
    incoming = settings.home / "data" / "incoming"
    if settings.source == "transactions":
        from churnops.transactions.build import current_customer_table
        from churnops.transactions.generate import TransactionDrift

        lines = _demo_lines(settings, incoming / "demo-drifted-transactions.csv", 1000, seed + 1,
                            drift=TransactionDrift(purchase_rate=0.4, basket_size=2.0))
        return current_customer_table(lines, settings.params.transactions, settings.schema)
    from churnops.data.generate import DriftSpec, generate_to_csv

    spec = DriftSpec.parse(shifts=("Total_Trans_Ct=-0.8", "Total_Trans_Amt=-0.5"),
                           mixes=("Card_Category=Blue:0.5,Silver:0.3,Gold:0.15,Platinum:0.05",), scales=())
    drifted = generate_to_csv(settings.schema, rows=1000, seed=seed + 1, drift=spec,
                              out=incoming / "demo-drifted.csv")
    return pd.read_csv(drifted)


def switch_source(settings: Settings, source: str) -> Settings:
    """Set ``source:`` in the home's params.yaml (that line only; comments stay) and reload the settings."""
    import re

    from churnops.io import write_text_atomic
    from churnops.settings import load_settings

    if settings.source == source:
        return settings
    text = settings.params_path.read_text()
    changed, count = re.subn(r"(?m)^source:\s*\S+", f"source: {source}", text, count=1)
    if count != 1:
        raise ValueError(f"{settings.params_path} has no top-level `source:` line to switch to {source}")
    write_text_atomic(settings.params_path, changed)
    _say(f"params.yaml: source: {settings.source} -> {source} (the whole loop runs on it; set it back by "
         f"hand or with `churnops demo --source {settings.source}`)")
    return load_settings(home=settings.home, params_path=settings.params_path)


def _drift_and_retraining(settings: Settings, base: str, seed: int, *, airflow: bool, keep_airflow: bool,
                          timeout_s: float, port: int | None) -> dict[str, Any]:
    """Steps 5 and 6: Airflow up, a drifted batch through /predict, the drift check, the retraining run."""
    results: dict[str, Any] = {}
    external = os.environ.get(ENV_URL)
    af: DemoAirflow | None = None
    if external:
        _say(f"5/6 retraining goes to the Airflow at {redact_url(external)} ({ENV_URL}); nothing is started")
    elif not airflow:
        _say("5/6 no Airflow (--no-airflow): the drift check shows the alert but triggers no retraining")
    else:
        _say("5/6 starting a local Airflow (airflow standalone, the project's dags/) for the retraining")
        af, why = start_airflow(settings, serving_url=base, port=port)
        results["airflow"] = {"started": af is not None, "error": why or None}
        if af is None:
            print(f"could not start Airflow, so the drift check will not trigger retraining:\n{why}\n"
                  "the demo goes on without it (`churnops airflow up` starts Airflow by hand; "
                  "`--no-airflow` skips this step)")
        else:
            results["airflow"].update(url=af.url, pid=af.pid, start_s=round(af.start_s, 1))
            print(f"Airflow is up after {af.start_s:.0f} s: UI {af.url}  login {af.user} / {af.password}\n"
                  f"its tasks use {af.params_path} (params.yaml with the demo's retraining budget)")
    try:
        _say("6/6 a drifted batch through /predict, the drift check on what the server saw, the retraining")
        frame = _drifted_rows(settings, seed)
        bodies = [payload(r, settings) for _, r in frame.iterrows()]
        limit = settings.params.serving.max_batch
        for start in range(0, len(bodies), limit):
            r = requests.post(f"{base}/predict", json={"instances": bodies[start:start + limit]})
            r.raise_for_status()
        print(f"sent {len(bodies)} drifted customers through /predict")
        env = _env(settings)
        retrain = af is not None or bool(external)
        if af is not None:
            env.update(af.check_env())  # what monitoring/retrain.py reads: URL, user, password
        # the window is exactly the drifted batch, whatever else the prediction log holds (earlier demos)
        check = subprocess.run([_churnops(), "drift", "check", "--last-n", str(len(bodies)),
                                *([] if retrain else ["--no-retrain"])], env=env)
        results["drift_exit_code"] = check.returncode
        print(f"drift check exit code: {check.returncode} (0 no drift, 3 drift, 4 not enough data, "
              "5 drift but the retraining trigger failed)")
        if not retrain:
            print("retraining: no Airflow, so nothing was triggered; with the demo's own Airflow (no "
                  f"--no-airflow) or {ENV_URL} / {ENV_USER} / {ENV_PASSWORD} naming one, the same check "
                  "triggers churn_training with the drift report as its configuration (docs/monitoring.md)")
        elif check.returncode in (3, 5):
            follow = af or DemoAirflow(external or "", os.environ.get(ENV_USER, ""),
                                       os.environ.get(ENV_PASSWORD, ""), None, settings.params_path, 0.0)
            results["retraining"] = follow_retraining(settings, follow, settings.reports_dir / "drift"
                                                      / "drift.json", timeout_s)
        else:
            print("retraining: nothing to retrain for (no drift found)")
    finally:
        if af is not None and keep_airflow:
            print(f"\nAirflow keeps running (--keep-airflow): {af.url}  login {af.user} / {af.password}; "
                  f"its tasks keep {af.params_path}; stop it with `churnops airflow down`")
        elif af is not None:
            stop_airflow(af)
            print(f"\nstopped the demo's Airflow (its metadata DB and logs stay in {af.local.home}; "
                  "`churnops airflow up` starts it again)")
    return results
