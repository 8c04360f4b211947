"""``churnops serve``: the prediction server under gunicorn."""

from __future__ import annotations

import atexit
import importlib
import ipaddress
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import click

from churnops.cli import AppContext, pass_app

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def _metrics_dir() -> Path:
    """A clean directory for multiprocess Prometheus metrics, set in the environment before any worker
    (and before prometheus_client picks its value class). An operator's own PROMETHEUS_MULTIPROC_DIR is
    used and emptied of stale files; otherwise a temporary one is removed when the server stops."""
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()
        return path
    path = Path(tempfile.mkdtemp(prefix="churnops-metrics-"))
    master = os.getpid()
    atexit.register(lambda: os.getpid() == master and shutil.rmtree(path, ignore_errors=True))
    os.environ[MULTIPROC_ENV] = str(path)
    return path


def _factory(spec: str):
    module, _, name = spec.partition(":")
    if not module or not name:
        raise click.BadParameter(f"{spec!r}: expected module:callable", param_hint="--app-factory")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise click.BadParameter(f"cannot import {spec!r}: {exc}", param_hint="--app-factory") from exc


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on (0.0.0.0: all).")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes (default: serving.workers in params.yaml).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Threads per worker (default: serving.threads; more than 1 uses gthread workers).")
@click.option("--access-log", is_flag=True, help="Log every request to stderr.")
@click.option("--app-factory", default="serving.app:create_app", show_default=True,
              help="WSGI app factory called with the settings in each worker (benchmarks serve a variant).")
@click.option("--front", type=click.Choice(["nginx", "none"]), default=None,
              help="nginx: buffer whole requests before the workers (default: serving.front); none: gunicorn "
                   "answers directly, only behind another buffering proxy.")
@pass_app
def serve(app: AppContext, host: str, port: int, workers: int | None, threads: int | None, access_log: bool,
          app_factory: str, front: str | None) -> None:
    """Serve POST /predict on the @champion model with gunicorn behind nginx (GET / shows a page to try it).

    The champion is loaded from the MLflow registry in every worker and replaced without a restart when
    @champion moves; features for lookups by customer id come from Redis (REDIS_URL). Bearer tokens:
    CHURNOPS_PREDICT_TOKENS(_FILE) for /predict, CHURNOPS_OPERATOR_TOKENS(_FILE) for /model and /metrics.
    """
    settings = app.settings
    from serving.auth import Auth, TokenError
    from serving.front import Front, FrontError
    from serving.gunicorn_conf import GunicornApp, gunicorn_options

    try:
        auth = Auth()
    except TokenError as exc:
        raise click.UsageError(str(exc)) from exc
    if not auth.enabled and not is_loopback(host):
        _warn_open(host, port)
    cfg = settings.params.serving
    proxy = None
    # a stop before gunicorn's own signal handlers are in place still removes the front's run directory
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if (front or cfg.front) == "nginx":
        try:
            proxy = Front.prepare(host, port, max_body_bytes=cfg.max_body_bytes,
                                  client_timeout_s=cfg.client_timeout_s, worker_timeout_s=cfg.timeout_s,
                                  keepalive_s=cfg.keepalive_s, access_log=access_log)
        except FrontError as exc:
            raise click.ClickException(str(exc)) from exc
    master = os.getpid()
    try:
        metrics_dir = _metrics_dir()
        factory = _factory(app_factory)
        options = gunicorn_options(settings, host=host, port=port, workers=workers, threads=threads,
                                   access_log=access_log, front=proxy)
        click.echo(f"serving on http://{host}:{port} (front={'nginx' if proxy else 'none'}, "
                   f"workers={options['workers']}, threads={options['threads']}, "
                   f"tokens={'required' if auth.enabled else 'none'}, metrics in {metrics_dir})", err=True)
        GunicornApp(factory, settings, options).run()
    finally:
        if proxy is not None and os.getpid() == master:
            proxy.stop()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _warn_open(host: str, port: int) -> None:
    from churnops.logs import get_logger

    line = "!" * 100
    click.secho(f"{line}\n! WARNING: serving on {host}:{port} WITHOUT AUTHENTICATION: anyone who reaches "
                "this address can\n! score customers, read /model and /metrics, and write rows into the "
                "prediction log (drift checks,\n! retraining). Set CHURNOPS_PREDICT_TOKENS and "
                "CHURNOPS_OPERATOR_TOKENS (or their _FILE variants);\n! see docs/deployment.md, 'Exposing "
                f"the service'.\n{line}",
                fg="red", bold=True, err=True)
    get_logger(__name__).warning("serve.unauthenticated", host=host, port=port,
                                 fix="set CHURNOPS_PREDICT_TOKENS and CHURNOPS_OPERATOR_TOKENS")
