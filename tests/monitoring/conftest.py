"""Fixtures for drift monitoring: generated customer tables, real HTTP receivers, an Airflow API double."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from churnops.settings import deep_merge

# Small sizes: the CI machine has 2 shared cores.
WINDOW_ROWS = 800


REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Receiver:
    """A real HTTP server on 127.0.0.1 that records every request and answers with scripted statuses.

    ``statuses`` is consumed one per request (then 200). Start and stop it at will on the same port to
    simulate a receiver that is down, then up.
    """

    port: int = field(default_factory=free_port)
    statuses: list[int] = field(default_factory=list)
    handler: Callable[[Receiver, str, str, dict[str, str], Any], tuple[int, Any]] | None = None
    requests: list[Received] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode(errors="replace")
                headers = {k: v for k, v in self.headers.items()}
                with receiver._lock:
                    receiver.requests.append(Received("POST", self.path, headers, body))
                    if receiver.handler is not None:
                        status, answer = receiver.handler(receiver, "POST", self.path, headers, body)
                    else:
                        status = receiver.statuses.pop(0) if receiver.statuses else 200
                        answer = {"ok": status < 300}
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def bodies(self, path: str | None = None) -> list[Any]:
        return [r.body for r in self.requests if path is None or r.path == path]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """An alert receiver, not yet started (start() it, or leave it down)."""
    r = Receiver()
    yield r
    r.stop()


class AirflowDouble:
    """A small real HTTP server speaking the two Airflow 3 REST endpoints the retraining trigger uses.

    POST /auth/token {username, password} -> 201 {"access_token"}; POST /api/v2/dags/{id}/dagRuns with a
    bearer token -> 200 {"dag_run_id", "conf", ...}, 409 for a run id that exists, 401 without a valid token,
    404 for an unknown DAG. Records the runs it created.
    """

    TOKEN = "jwt-test-token"

    def __init__(self, username: str = "admin", password: str = "s3cret",
                 dags: tuple[str, ...] = ("churn_training",)) -> None:
        self.username, self.password, self.dags = username, password, set(dags)
        self.runs: list[dict[str, Any]] = []
        self.receiver = Receiver(handler=self._handle)

    @property
    def url(self) -> str:
        return self.receiver.url

    def env(self, **overrides: str) -> dict[str, str]:
        env = {"CHURNOPS_AIRFLOW_URL": self.url, "CHURNOPS_AIRFLOW_USER": self.username,
               "CHURNOPS_AIRFLOW_PASSWORD": self.password}
        env.update(overrides)
        return env

    def _handle(self, _r: Receiver, method: str, path: str, headers: dict[str, str],
                body: Any) -> tuple[int, Any]:
        if path == "/auth/token":
            if body == {"username": self.username, "password": self.password}:
                return 201, {"access_token": self.TOKEN}
            return 401, {"detail": "Invalid credentials"}
        prefix, suffix = "/api/v2/dags/", "/dagRuns"
        if path.startswith(prefix) and path.endswith(suffix):
            if headers.get("Authorization") != f"Bearer {self.TOKEN}":
                return 401, {"detail": "Not authenticated"}
            dag_id = path[len(prefix):-len(suffix)]
            if dag_id not in self.dags:
                return 404, {"detail": f"The Dag with dag_id: `{dag_id}` was not found"}
            if not isinstance(body, dict) or "logical_date" not in body:
                return 422, {"detail": "logical_date is required"}
            run_id = body.get("dag_run_id") or f"manual__{len(self.runs)}"
            if any(r["dag_run_id"] == run_id for r in self.runs):
                return 409, {"detail": f"DAGRun with dag_run_id: `{run_id}` already exists"}
            run = {"dag_id": dag_id, "dag_run_id": run_id, "conf": body.get("conf"), "note": body.get("note"),
                   "logical_date": body.get("logical_date"), "state": "queued"}
            self.runs.append(run)
            return 200, run
        return 404, {"detail": "Not Found"}


@pytest.fixture
def airflow() -> Iterator[AirflowDouble]:
    double = AirflowDouble()
    double.receiver.start()
    yield double
    double.receiver.stop()


@pytest.fixture
def monitoring_home(make_home, reference, make_table):
    """A project home with test-sized monitoring params, a reference parquet and two windows on disk."""

    def _make(overrides: dict[str, Any] | None = None):
        base = {"monitoring": {"backend": "scipy", "min_window": 300,
                               "alerts": {"backoff_s": 0.01, "attempts": 2},
                               "retrain": {"enabled": True}}}
        home = make_home(deep_merge(base, overrides or {}))
        reference.to_parquet(home / "reference.parquet")
        make_table(WINDOW_ROWS, seed=2).to_parquet(home / "same.parquet")
        make_table(WINDOW_ROWS, seed=3, shifts={"Total_Trans_Amt": 0.6}).to_parquet(home / "drifted.parquet")
        make_table(100, seed=4).to_parquet(home / "tiny.parquet")
        return home

    return _make
