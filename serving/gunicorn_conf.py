"""gunicorn configuration for ``churnops serve``, built from ``serving.*`` in params.yaml.

One XGBoost thread per worker and several worker processes (``serving.workers``); sync workers when
``serving.threads`` is 1, gthread workers otherwise. Each worker builds its own app after the fork (no
preloading: MLflow's store connections and the reload thread must not be shared across processes).
Hooks: ``child_exit`` marks a dead worker's Prometheus files; ``worker_exit`` flushes the worker's
prediction log, stops its reload thread and exits without the interpreter's slow teardown.

With the nginx front (``serving.front: nginx``, :mod:`serving.front`) the workers listen on a private Unix
socket and the master starts nginx once they are bound, stops it on exit, and exits itself (status 1)
when nginx dies, so a supervisor restarts the pair. Without it the workers answer protocol errors
(malformed HTTP, bad chunks, oversized headers) in the service's JSON shape, and a sync worker waits at
most ``serving.client_timeout_s`` for each read from a client.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import orjson
from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter
from gunicorn.http import errors as http_errors
from gunicorn.workers.gthread import ThreadWorker
from gunicorn.workers.sync import SyncWorker

from churnops.logs import get_logger
from churnops.settings import Settings
from serving.front import Front, FrontError

log = get_logger(__name__)


def gunicorn_options(settings: Settings, *, host: str, port: int, workers: int | None = None,
                     threads: int | None = None, access_log: bool = False,
                     front: Front | None = None) -> dict[str, Any]:
    """The options of one server; with `front`, gunicorn binds the front's private socket instead of
    `host`:`port` and starts and stops the front (nginx) with itself."""
    cfg = settings.params.serving
    threads = threads or cfg.threads
    JsonErrorsSyncWorker.client_timeout_s = cfg.client_timeout_s  # inherited by the forked workers
    hooks: dict[str, Any] = {"when_ready": when_ready}
    if front is not None:
        hooks = {"when_ready": _start_front(front), "on_exit": lambda server: front.stop()}
    return {
        "bind": f"unix:{front.cfg.socket_path}" if front is not None else f"{host}:{port}",
        "workers": workers or cfg.workers,
        "threads": threads,
        "worker_class": JsonErrorsSyncWorker if threads == 1 else JsonErrorsThreadWorker,
        "timeout": cfg.timeout_s,
        "graceful_timeout": cfg.graceful_timeout_s,
        "keepalive": cfg.keepalive_s,
        "backlog": 2048,
        "preload_app": False,
        "control_socket_disable": True,  # several servers on one host must not share one control socket
        "proc_name": "churnops-serve",
        "accesslog": "-" if access_log else None,
        "errorlog": "-",
        "loglevel": "info",
        "child_exit": child_exit,
        "worker_exit": worker_exit,
        **hooks,
    }


def when_ready(server: Any) -> None:
    log.info("serve.ready", bind=",".join(server.cfg.bind), workers=server.cfg.workers,
             threads=server.cfg.threads, worker_class=server.cfg.worker_class_str)


def _start_front(front: Front) -> Callable[[Any], None]:
    def start(server: Any) -> None:
        when_ready(server)
        try:
            front.start()
        except FrontError as exc:
            server.log.error("%s", exc)
            server.front_failed = True
            os.kill(os.getpid(), signal.SIGTERM)
            return
        server.front_pid = front.pid

    return start


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    from serving.metrics import multiprocess_enabled

    if multiprocess_enabled():
        multiprocess.mark_process_dead(worker.pid)


def worker_exit(server: Any, worker: Any) -> None:
    """Flush the prediction log and stop the reload thread, then leave at once.

    A worker that served has imported MLflow, XGBoost and their native thread pools; the interpreter's own
    teardown of those takes seconds (tens on a busy machine), which makes the master wait for its graceful
    timeout on every stop. Everything that matters is closed here, so the process exits directly. A worker
    whose app never loaded takes the normal path (gunicorn's boot-error exit codes are kept).
    """
    app = getattr(worker, "wsgi", None)
    extensions = getattr(app, "extensions", None) or {}
    state = extensions.get("churnops")
    if state is None:
        return
    state.close()
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


# -- workers: protocol errors in the service's JSON shape --------------------------------------------
def protocol_error(exc: BaseException) -> tuple[int, str]:
    """(status, message) for an error raised while gunicorn reads a request (before the app runs)."""
    if isinstance(exc, TimeoutError):
        return 408, "the request did not arrive in time; send it whole"
    if isinstance(exc, http_errors.LimitRequestHeaders):
        return 431, f"the request's header fields are too large: {exc}"
    if isinstance(exc, http_errors.LimitRequestLine):
        return 414, "the request line is too long"
    if isinstance(exc, http_errors.UnsupportedTransferCoding):
        return 501, f"this transfer encoding is not supported: {exc}"
    if isinstance(exc, http_errors.ExpectationFailed):
        return 417, f"expectation not supported: {exc}"
    if isinstance(exc, (http_errors.ParseException, http_errors.InvalidChunkSize,
                        http_errors.ChunkMissingTerminator, http_errors.InvalidChunkExtension)):
        return 400, f"malformed HTTP request: {exc}"
    return 500, "internal error; the server log has the details"


def write_json_error(client: socket.socket, status: int, message: str) -> None:
    body = orjson.dumps({"error": message})
    head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    try:
        client.sendall(head + body)
    except OSError:
        pass  # the client is gone


class JsonErrors:
    """Replaces gunicorn's HTML error page (``handle_error``) with the JSON every other error has."""

    log: Any

    def handle_error(self, req: Any, client: socket.socket, addr: Any, exc: BaseException) -> None:
        status, message = protocol_error(exc)
        if status >= 500:
            self.log.exception("Error handling request")
        else:
            self.log.warning("Invalid request from %s: %s", (addr or ("",))[0], exc)
        write_json_error(client, status, message)


class JsonErrorsSyncWorker(JsonErrors, SyncWorker):
    """A sync worker that waits at most ``client_timeout_s`` for each read from its client."""

    client_timeout_s: float = 10.0

    def handle(self, listener: Any, client: socket.socket, addr: Any) -> None:
        client.settimeout(self.client_timeout_s)
        super().handle(listener, client, addr)


class JsonErrorsThreadWorker(JsonErrors, ThreadWorker):
    pass


class FrontArbiter(Arbiter):
    """gunicorn's master, which also exits (status 1) when the front it started dies."""

    front_pid: int | None = None
    front_failed = False
    halting = False

    def reap_workers(self) -> None:
        pid = self.front_pid
        if pid is not None and not self.halting:
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, 0
            if done:
                self.front_pid = None
                self.front_failed = True
                self.log.error("the nginx front (pid %s) exited with status %s: stopping", pid,
                               os.waitstatus_to_exitcode(status))
                self.halt(reason="the nginx front exited", exit_status=1)
        super().reap_workers()

    def halt(self, reason: str | None = None, exit_status: int = 0) -> None:
        self.halting = True
        super().halt(reason, 1 if self.front_failed else exit_status)


class GunicornApp(BaseApplication):
    """gunicorn run in-process with options from the settings and an app factory taking the settings."""

    def __init__(self, factory: Callable[[Settings], Any], settings: Settings,
                 options: dict[str, Any]) -> None:
        self.factory = factory
        self.settings = settings
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            if value is not None:
                self.cfg.set(key, value)

    def load(self) -> Any:
        return self.factory(self.settings)

    def run(self) -> None:
        try:
            FrontArbiter(self).run()
        except RuntimeError as exc:
            print(f"\nError: {exc}\n", file=sys.stderr)
            sys.exit(1)
