"""`churnops airflow up|down|status|trigger`: a local Airflow 3 running the project's DAGs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from churnops.cli import AppContext, echo_json, pass_app


def _local(
    app: AppContext,
    port: int | None = None,
    db_url: str | None = None,
    parallelism: int | None = None,
    dags_folder: Path | None = None,
):
    from pipeline.airflow_local import LocalAirflow

    settings = app.settings
    extra_env = {"CHURNOPS_PARAMS": str(settings.params_path)}  # tasks read the same params file
    return LocalAirflow.from_env(
        settings.home,
        port=port,
        db_url=db_url,
        parallelism=parallelism,
        dags_folder=dags_folder,
        extra_env=extra_env,
    )


@click.group()
def airflow() -> None:
    """A local Airflow 3 (`airflow standalone`) with the project's DAGs: up, status, trigger, down."""


@airflow.command("up")
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Port of the UI and REST API (env CHURNOPS_AIRFLOW_PORT; default 8080).",
)
@click.option(
    "--db-url",
    default=None,
    metavar="URL",
    help="Airflow metadata DB as an SQLAlchemy URL, e.g. postgresql+psycopg2://airflow@127.0.0.1/airflow "
    "(env CHURNOPS_AIRFLOW_DB_URL; default: SQLite in airflow-home/).",
)
@click.option(
    "--parallelism",
    type=click.IntRange(1, 32),
    default=2,
    show_default=True,
    help="Tasks running at once (LocalExecutor). 2-4 suits a laptop.",
)
@click.option(
    "--dags-folder",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="DAGs folder (default: the project's dags/).",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(10),
    default=600,
    show_default=True,
    help="Seconds to wait for Airflow to report healthy.",
)
@pass_app
def airflow_up(
    app: AppContext,
    port: int | None,
    db_url: str | None,
    parallelism: int,
    dags_folder: Path | None,
    timeout_s: float,
) -> None:
    """Start `airflow standalone` in the background and wait until it is healthy.

    AIRFLOW_HOME is <home>/airflow-home (metadata DB, logs, standalone.log, the admin password).
    The tasks inherit this shell's environment (CHURNOPS_HOME, MLFLOW_TRACKING_URI, REDIS_URL, ...).
    """
    from churnops.airflow_rest import AirflowAPIError

    local = _local(app, port, db_url, parallelism, dags_folder)
    try:
        info = local.start(timeout_s=timeout_s, progress=lambda msg: click.echo(f"... {msg}", err=True))
    except AirflowAPIError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"""
Airflow is up: {info["url"]}
  login     {info["user"]} / {info["password"]}   (kept in {info["password_file"]})
  DAGs      {", ".join(info["dags"])}   (from {info["dags_folder"]})
  database  {info["database"]}
  logs      {info["log"]}  and {local.home / "logs"}

Train from the UI: open DAG churn_training, press Trigger, adjust the parameters in the form, Trigger.
Or here:          churnops airflow trigger churn_training --conf '{{"reason": "manual"}}' --wait
Stop it:          churnops airflow down""")


@airflow.command("down")
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(1),
    default=60,
    show_default=True,
    help="Seconds to wait after SIGTERM before SIGKILL.",
)
@pass_app
def airflow_down(app: AppContext, timeout_s: float) -> None:
    """Stop the local Airflow (SIGTERM to its process group)."""
    local = _local(app)
    if local.stop(timeout_s=timeout_s):
        click.echo(f"stopped the local Airflow of {local.project_home}")
    else:
        click.echo("no local Airflow is running")


@airflow.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@pass_app
def airflow_status(app: AppContext, as_json: bool) -> None:
    """Is the local Airflow running and healthy; which DAGs does it know. Exit 1 when down or unhealthy."""
    status = _local(app).status()
    ok = status["running"] and not status.get("unhealthy") and "error" not in status
    if as_json:
        echo_json(status)
    elif not status["running"]:
        click.echo(
            f"not running (start it with `churnops airflow up`; AIRFLOW_HOME {status['airflow_home']})"
        )
    else:
        click.echo(f"running: pid {status['pid']}  {status['url']}  log {status['log']}")
        if "error" in status:
            click.echo(f"  API not answering: {status['error']}")
        for name, doc in (status.get("health") or {}).items():
            click.echo(f"  {name:<14} {(doc or {}).get('status')}")
        for dag_id, paused in (status.get("dags") or {}).items():
            click.echo(f"  DAG {dag_id:<22} {'paused' if paused else 'active'}")
        for filename in status.get("import_errors") or []:
            click.echo(f"  import error in {filename}")
    if not ok:
        sys.exit(1)


@airflow.command("trigger")
@click.argument("dag_id")
@click.option(
    "--conf",
    "conf_json",
    default="{}",
    show_default=True,
    help="Run configuration as a JSON object (the DAG's parameters, as in the UI's trigger form).",
)
@click.option("--wait/--no-wait", default=False, show_default=True, help="Follow the run until it finishes.")
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(1),
    default=3600,
    show_default=True,
    help="With --wait: seconds before giving up on the run.",
)
@pass_app
def airflow_trigger(app: AppContext, dag_id: str, conf_json: str, wait: bool, timeout_s: float) -> None:
    """Trigger DAG_ID on the local Airflow over its REST API, as the UI does (unpause, then run)."""
    from churnops.airflow_rest import AirflowAPIError, AirflowUnreachable

    try:
        conf = json.loads(conf_json)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--conf") from exc
    if not isinstance(conf, dict):
        raise click.BadParameter("must be a JSON object", param_hint="--conf")
    local = _local(app)
    if local.running_pid() is None:
        raise click.ClickException("no local Airflow is running: start it with `churnops airflow up`")
    api = local.api()
    try:
        run = api.trigger(dag_id, conf)
        run_id = run["dag_run_id"]
        click.echo(f"triggered {dag_id}: run {run_id}  ({api.base_url}/dags/{dag_id}/runs/{run_id})")
        if not wait:
            return
        last: dict[str, str] = {}

        def _show(_run: dict) -> None:
            try:
                tis = api.task_instances(dag_id, run_id)
            except AirflowUnreachable:
                return  # a busy API server: the next poll shows the states
            for ti in tis:
                key = f"{ti['task_id']}[{ti['map_index']}]" if ti.get("map_index", -1) >= 0 else ti["task_id"]
                if ti.get("state") and last.get(key) != ti["state"]:
                    last[key] = ti["state"]
                    click.echo(f"  {key:<28} {ti['state']}")

        final = api.wait_for_run(dag_id, run_id, timeout_s=timeout_s, on_poll=_show)
    except AirflowAPIError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"run {run_id}: {final['state']}")
    if final["state"] != "success":
        sys.exit(1)
