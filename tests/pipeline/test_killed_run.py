"""A `churnops train --data` run stopped by a signal (a container stop, Airflow killing its task, Ctrl-C)
leaves the previous state byte for byte, and nothing of it keeps running.

Real CLI, real DVC, real MLflow store, real signals: each case starts a run on a new table, waits for the
line that shows the run has reached a point (versioning, validation, training, registration), signals it,
and compares every data layer, report, dvc.lock and @champion with the state before the run.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest
import yaml

from tests.pipeline.conftest import CHURNOPS, cli_env, make_project, run_cli, settings_of, state

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROWS = 1500
LINE_TIMEOUT_S = 600  # the machine is shared: reaching the point may take minutes
EXIT_TIMEOUT_S = 120

# kill point -> the line (in the run's stderr) that shows the run is there
POINTS = {
    "versioning": "data.ingested",  # the raw table was replaced; `dvc add` + `push` come next
    "validation": "Running stage 'validate'",
    "training": "search.start",  # inside the MLflow parent run, tuning a candidate
    "registration": "Running stage 'register'",
}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = make_project(tmp_path_factory.mktemp("killed") / "home")
    for seed, name in ((3, "first"), (4, "second")):
        run_cli(home, "data", "generate", "--rows", str(ROWS), "--seed", str(seed), "--out",
                f"incoming/{name}.csv")
    run_cli(home, "train", "--data", "incoming/first.csv")
    return home


def _lines(stream, out: queue.Queue) -> None:
    for line in stream:
        out.put(line)
    out.put(None)


def processes_in(home: Path) -> list[str]:
    """Processes working in the project home (dvc repro, stage commands, their workers)."""
    found = []
    for proc in psutil.process_iter(["pid", "cwd", "cmdline"]):
        cwd = proc.info.get("cwd")
        if cwd and (cwd == str(home) or cwd.startswith(str(home) + os.sep)):
            found.append(f"{proc.info['pid']}: {' '.join(proc.info.get('cmdline') or [])}")
    return found


def stop_run_at(home: Path, marker: str, signum: int) -> tuple[int, str]:
    """Start `churnops train --data incoming/second.csv`, send `signum` when `marker` shows; return the
    exit code and the output."""
    proc = subprocess.Popen([CHURNOPS, "train", "--data", "incoming/second.csv"], cwd=home,
                            env=cli_env(home), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stderr, lines), daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + LINE_TIMEOUT_S
    try:
        while True:
            line = lines.get(timeout=max(1.0, deadline - time.monotonic()))
            if line is None:
                raise AssertionError(f"the run ended before {marker!r}:\n{''.join(seen[-40:])}")
            seen.append(line)
            if marker in line:
                break
        proc.send_signal(signum)
        code = proc.wait(timeout=EXIT_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    while (line := lines.get(timeout=30)) is not None:
        seen.append(line)
    return code, "".join(seen)


@pytest.mark.parametrize(("point", "signum"), [
    ("versioning", signal.SIGTERM),
    ("validation", signal.SIGINT),
    ("training", signal.SIGTERM),
    ("registration", signal.SIGTERM),
])
def test_a_stopped_run_leaves_the_previous_state_and_nothing_running(
        home: Path, point: str, signum: signal.Signals) -> None:
    before = state(home)
    code, output = stop_run_at(home, POINTS[point], signum)
    assert code == 128 + signum, output[-3000:]
    assert "restored" in output
    assert "Traceback" not in output
    assert processes_in(home) == []  # no orphaned dvc repro, stage command or worker
    assert state(home) == before
    assert not list(home.glob(".churnops-snapshot-*"))
    assert running_mlflow_runs(home) == []  # a stopped training stage ends its MLflow runs (FAILED)


def running_mlflow_runs(home: Path) -> list[str]:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=settings_of(home).mlflow_tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, filter_string="attributes.status = 'RUNNING'")
    return [f"{r.info.run_id} {r.info.run_name}" for r in runs]


def test_the_run_after_the_stopped_ones_succeeds(home: Path) -> None:
    report = json.loads(run_cli(home, "train", "--data", "incoming/second.csv", "--json").stdout)
    assert report["retrained"] is True
    assert report["registered_version"]
    pointer = yaml.safe_load((home / "data/raw/customers.csv.dvc").read_text())
    assert pointer["outs"][0]["md5"] == report["next_training_data"]["data_version"]
    if report["promotion"]["promoted"]:  # else the raw table went back to the champion's (the data rule)
        status = subprocess.run([str(Path(CHURNOPS).parent / "dvc"), "status"], cwd=home, env=cli_env(home),
                                capture_output=True, text=True, check=True)
        assert "changed" not in status.stdout
