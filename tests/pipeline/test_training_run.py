"""The training run the DAG tasks call (pipeline.training_run), without Airflow: run parameters, data
versioning with its restore, and the serving confirmation against a real HTTP server."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.project_homes import make_project


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    ("conf", "key"),
    [
        ({"search_iterations": 0}, "search_iterations"),
        ({"search_iterations": True}, "search_iterations"),
        ({"promotion_margin": -0.1}, "promotion_margin"),
        ({"candidates": {"xgboost": 1}}, "candidates"),
    ],
)
def test_training_conf_refuses_bad_values_naming_the_key(conf: dict, key: str) -> None:
    from pipeline.training_run import TrainingConf, TrainingRunError

    with pytest.raises(TrainingRunError, match=key):
        TrainingConf.from_conf(conf)


def test_empty_conf_values_mean_the_values_of_params_yaml() -> None:
    from pipeline.training_run import TrainingConf

    conf = TrainingConf.from_conf(
        {
            "data_path": None,
            "candidates": [],
            "search_iterations": None,
            "promotion_margin": None,
            "reason": "nightly",
        }
    )
    assert conf.overrides({"train": {"candidates": ["xgboost"]}}) == {}
    assert conf.reason == "nightly"


def test_run_params_merge_the_conf_into_params_yaml_and_stage_the_layers_in_the_workspace(
    tmp_path: Path,
) -> None:
    from churnops.settings import load_settings
    from pipeline.training_run import prepare_training_run, run_settings

    home = make_project(tmp_path / "home", rows=200)
    ctx = prepare_training_run(
        "manual__2026-01-02T03:04:05+00:00",
        {
            "candidates": ["xgboost"],
            "search_iterations": 3,
            "promotion_margin": 0.01,
            "data_path": "incoming/customers.csv",
            "reason": "try xgboost",
        },
        home=home,
    )
    run = run_settings(ctx)
    project = load_settings(home=home)
    run_dir = Path(ctx["run_dir"])
    assert run_dir == home / "data" / "runs" / "manual__2026-01-02T03_04_05_00_00"
    assert run.params.train.candidates == ["xgboost"]
    assert run.params.train.search_iterations["xgboost"] == 3
    assert run.params.register_.promotion_margin == 0.01
    assert run.raw_path == project.raw_path  # the raw table is versioned in place
    for staged in (run.validated_path, run.features_dir, run.reports_dir):
        assert staged.is_relative_to(run_dir)
    assert run.params.train.cv_folds == project.params.train.cv_folds  # the rest is params.yaml
    assert ctx["data_path"] == str(home / "incoming" / "customers.csv")
    assert json.loads((run_dir / "context.json").read_text())["reason"] == "try xgboost"


def test_a_conf_that_makes_params_invalid_fails_before_any_data_is_touched(tmp_path: Path) -> None:
    from pipeline.training_run import TrainingRunError, prepare_training_run

    home = make_project(tmp_path / "home", rows=200)
    with pytest.raises(TrainingRunError, match="train.candidates"):
        prepare_training_run("r1", {"candidates": ["svm"]}, home=home)
    with pytest.raises(TrainingRunError, match="data_path"):
        prepare_training_run("r2", {"data_path": "incoming/missing.csv"}, home=home)
    assert not (home / "data" / "raw" / "customers.csv").exists()


@pytest.mark.integration
def test_restore_puts_back_the_raw_table_and_its_data_version_even_after_a_retried_versioning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from churnops.data.generate import generate_to_csv
    from churnops.settings import load_settings
    from pipeline.training_run import prepare_training_run, restore_data, version_data
    from pipeline.versioning import data_version, dvc_file_for

    for var in ("CHURNOPS_DVC_REMOTE", "CHURNOPS_HOME", "CHURNOPS_PARAMS"):
        monkeypatch.delenv(var, raising=False)
    home = make_project(tmp_path / "home", rows=300)
    settings = load_settings(home=home)
    first = version_data(prepare_training_run("run-1", {"data_path": "incoming/customers.csv"}, home=home))
    raw, dvc_file = settings.raw_path, dvc_file_for(settings.raw_path)
    before = (md5(raw), dvc_file.read_text())
    assert first["data_version"] == md5(raw) and first["previous_data_version"] is None

    other = generate_to_csv(settings.schema, rows=300, seed=99, out=tmp_path / "other.csv")
    ctx = prepare_training_run("run-2", {"data_path": str(other)}, home=home)
    second = version_data(ctx)
    again = version_data(ctx)  # a retry of the task: the snapshot of the first attempt stays
    assert second["data_version"] == md5(other) == again["data_version"]
    assert again["previous_data_version"] == first["data_version"]

    assert restore_data("run-2", home=home) == {"restored": True, "data_version": first["data_version"]}
    assert (md5(raw), dvc_file.read_text()) == before
    assert data_version(dvc_file) == first["data_version"]
    # a run that failed before versioning has nothing to restore
    assert restore_data("never-versioned", home=home) == {"restored": False}


class _ModelServer:
    """A real HTTP server answering GET /model with whatever version it is told to serve."""

    def __init__(self) -> None:
        self.version: str | None = None
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                if self.path != "/model" or outer.version is None:
                    self.send_response(503)
                    self.end_headers()
                    return
                body = json.dumps({"version": outer.version}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> _ModelServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_notify_serving_waits_until_serving_reports_the_new_champion(settings_factory) -> None:
    from pipeline.training_run import notify_serving

    settings = settings_factory()
    with _ModelServer() as server:
        server.version = "1"
        threading.Timer(0.6, lambda: setattr(server, "version", "2")).start()
        started = time.monotonic()
        out = notify_serving(settings, "2", url=server.url, timeout_s=20, poll_s=0.1)
        assert out["status"] == "confirmed" and out["serving_version"] == "2"
        assert time.monotonic() - started >= 0.5


def test_notify_serving_only_warns_when_serving_keeps_the_old_model(settings_factory) -> None:
    from pipeline.training_run import notify_serving

    settings = settings_factory()
    with _ModelServer() as server:
        server.version = "1"
        out = notify_serving(settings, "2", url=server.url, timeout_s=0.5, poll_s=0.1)
    assert out == {
        "status": "timeout",
        "champion": "2",
        "serving_version": "1",
        "url": server.url,
        "error": None,
    }
    assert notify_serving(settings, "2", url="")["status"] == "not_checked"


def test_task_logging_renders_churnops_fields_for_handlers_that_ignore_extra() -> None:
    import logging

    from churnops.logs import get_logger, task_logging

    class Keep(logging.Handler):  # like Airflow's task handler: formats the message only
        def __init__(self) -> None:
            super().__init__()
            self.lines: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.lines.append(record.getMessage())

    handler = Keep()
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.INFO)
    try:
        task_logging()
        task_logging()  # idempotent: one filter per handler
        get_logger("churnops.test").info("data.versioned", data_version="abc123", rows=1500, note="two words")
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    assert handler.lines == ['data.versioned data_version=abc123 rows=1500 note="two words"']
