"""`churnops dashboard`: start the Streamlit analytics dashboard on the marts of CHURNOPS_DATABASE_URL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click

from churnops.cli import AppContext, pass_app

APP = Path(__file__).resolve().parent / "app.py"


def streamlit_command(port: int, address: str) -> list[str]:
    """The command line that serves the dashboard (what `churnops dashboard` runs)."""
    return [sys.executable, "-m", "streamlit", "run", str(APP), "--server.port", str(port),
            "--server.address", address, "--server.headless", "true", "--browser.gatherUsageStats", "false",
            "--client.showErrorDetails", "false", "--client.toolbarMode", "viewer"]


@click.command()
@click.option("--port", type=click.IntRange(1, 65535), default=8501, show_default=True, help="HTTP port.")
@click.option("--address", default="127.0.0.1", show_default=True,
              help="Interface to listen on (0.0.0.0: every interface; put it behind your SSO proxy).")
@pass_app
def dashboard(app: AppContext, port: int, address: str) -> None:
    """Start the analytics dashboard (Streamlit): overview, segments, customers, anomalies, model & drift.

    It reads only the marts that batch scoring writes (`churnops score`, the churn_batch_scoring DAG) and
    the model registry. Stop it with Ctrl-C."""
    settings = app.settings  # a bad params.yaml fails here, before the server starts
    env = {**os.environ, "CHURNOPS_HOME": str(settings.home), "CHURNOPS_PARAMS": str(settings.params_path)}
    click.echo(f"dashboard on http://{address}:{port} (marts in CHURNOPS_DATABASE_URL; Ctrl-C stops it)")
    try:
        raise SystemExit(subprocess.call(streamlit_command(port, address), env=env))
    except KeyboardInterrupt:
        raise SystemExit(0) from None
