"""``churnops serve``: the prediction server under gunicorn."""

from __future__ import annotations

import atexit
import importlib
import os
import shutil
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
@pass_app
def serve(app: AppContext, host: str, port: int, workers: int | None, threads: int | None, access_log: bool,
          app_factory: str) -> None:
    """Serve POST /predict on the @champion model with gunicorn (GET / shows a page to try it).

    The champion is loaded from the MLflow registry in every worker and replaced without a restart when
    @champion moves; features for lookups by customer id come from Redis (REDIS_URL).
    """
    settings = app.settings
    metrics_dir = _metrics_dir()
    from serving.gunicorn_conf import GunicornApp, gunicorn_options

    factory = _factory(app_factory)
    options = gunicorn_options(settings, host=host, port=port, workers=workers, threads=threads,
                               access_log=access_log)
    click.echo(f"serving on http://{host}:{port} (workers={options['workers']}, "
               f"threads={options['threads']}, metrics in {metrics_dir})", err=True)
    GunicornApp(factory, settings, options).run()
