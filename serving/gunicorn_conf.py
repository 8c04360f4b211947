"""gunicorn configuration for ``churnops serve``, built from ``serving.*`` in params.yaml.

One XGBoost thread per worker and several worker processes (``serving.workers``); sync workers when
``serving.threads`` is 1, gthread workers otherwise. Each worker builds its own app after the fork (no
preloading: MLflow's store connections and the reload thread must not be shared across processes).
Hooks: ``child_exit`` marks a dead worker's Prometheus files; ``worker_exit`` flushes the worker's
prediction log, stops its reload thread and exits without the interpreter's slow teardown.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from gunicorn.app.base import BaseApplication

from churnops.logs import get_logger
from churnops.settings import Settings

log = get_logger(__name__)


def gunicorn_options(settings: Settings, *, host: str, port: int, workers: int | None = None,
                     threads: int | None = None, access_log: bool = False) -> dict[str, Any]:
    cfg = settings.params.serving
    threads = threads or cfg.threads
    return {
        "bind": f"{host}:{port}",
        "workers": workers or cfg.workers,
        "threads": threads,
        "worker_class": "sync" if threads == 1 else "gthread",
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
        "when_ready": when_ready,
    }


def when_ready(server: Any) -> None:
    log.info("serve.ready", bind=",".join(server.cfg.bind), workers=server.cfg.workers,
             threads=server.cfg.threads, worker_class=server.cfg.worker_class_str)


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
