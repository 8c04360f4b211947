"""`churnops drift ...`: check a window for drift, alert on-call, trigger retraining, inspect the outbox.

Exit codes of ``drift check``: 0 no drift, 3 drift, 4 not enough data, 5 drift found but the retraining
trigger failed (reports are written and the alert is queued), 1 any other error (bad input, no champion,
unreadable prediction log), 2 bad usage. ``drift deliver``: 0 when nothing is left for a configured receiver
(or what is left is being delivered by another process right now), 5 when alerts still wait for a receiver
that failed.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from churnops.cli import AppContext, echo_json, pass_app

EXIT_ACTION_FAILED = 5  # also monitoring.run.EXIT_ACTION_FAILED


@click.group()
def drift() -> None:
    """Drift monitoring: tests on production windows, alerts, retraining triggers."""


@drift.command("check")
@click.option("--current", "current_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="CSV (validated) or Parquet file of customers to test; with source: transactions, raw "
                   "transaction lines (default: a window of the prediction log).")
@click.option("--last-n", type=click.IntRange(min=1), default=None,
              help="Prediction-log window: the last N rows (default: monitoring.window_last_n).")
@click.option("--since", default=None, metavar="WHEN",
              help="Prediction-log window: rows since a duration ago (90m, 24h, 7d) or an ISO time.")
@click.option("--reference", "reference_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Reference features (parquet or CSV) instead of the champion's saved reference.")
@click.option("--version", "reference_version", default=None,
              help="Compare with this model version's reference instead of the champion's.")
@click.option("--backend", type=click.Choice(["alibi", "scipy"]), default=None,
              help="Statistical-test backend (default: monitoring.backend).")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where drift.json and drift.html go (default: <reports>/drift).")
@click.option("--alert/--no-alert", default=True, show_default=True,
              help="Alert on-call when drift is found.")
@click.option("--retrain/--no-retrain", default=None,
              help="Trigger retraining through the Airflow REST API on drift "
                   "(default: monitoring.retrain.enabled).")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON report instead of the summary.")
@pass_app
def drift_check(app: AppContext, current_path: Path | None, last_n: int | None, since: str | None,
                reference_path: Path | None, reference_version: str | None, backend: str | None,
                out_dir: Path | None, alert: bool, retrain: bool | None, as_json: bool) -> None:
    """Test a window against the champion's training features; write drift.json and drift.html.

    Exit 0: no drift; 3: drift; 4: not enough data; 5: drift, but retraining could not be triggered.
    """
    from monitoring.report import render_text
    from monitoring.run import CheckError, run_check
    from monitoring.sources import parse_since

    if current_path is not None and (last_n is not None or since is not None):
        raise click.UsageError("--current reads a file; --last-n and --since select a prediction-log window")
    if reference_path is not None and reference_version is not None:
        raise click.UsageError("give either --reference or --version, not both")
    try:
        since_ts = parse_since(since) if since else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from exc
    try:
        outcome = run_check(app.settings, current_path=current_path, last_n=last_n, since_ts=since_ts,
                            reference_path=reference_path, reference_version=reference_version,
                            backend=backend,
                            out_dir=out_dir, alert=alert, retrain=retrain)
    except CheckError as exc:
        raise click.ClickException(str(exc)) from exc

    if as_json:
        echo_json(outcome.to_dict())
    else:
        click.echo(render_text(outcome.result))
        for name, action in outcome.actions.items():
            click.echo(f"  {name}: {_one_line(action)}")
        click.echo(f"  reports: {outcome.json_path}  {outcome.html_path}")
    if outcome.retrain_failed:
        click.echo(f"error: {outcome.actions['retrain'].get('error')}", err=True)
    sys.exit(outcome.exit_code)


def _one_line(outcome: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in outcome.items() if v not in (None, [], {}))


@drift.command("deliver")
@click.option("--json", "as_json", is_flag=True, help="Print the delivery report as JSON.")
@pass_app
def drift_deliver(app: AppContext, as_json: bool) -> None:
    """Send the alerts waiting in the outbox.

    Exit 0 when none is left for a configured channel (alerts another `drift deliver` is sending right now
    count as handled), 5 when some still wait for a receiver that failed.
    """
    from monitoring.alerts import Alerter
    from monitoring.integrity import raise_integrity_alerts

    raise_integrity_alerts(app.settings, deliver=False)  # refused models wait in the outbox like the rest
    alerter = Alerter.from_settings(app.settings)
    report = alerter.deliver_pending()
    if as_json:
        echo_json(report.to_dict())
    else:
        click.echo(f"delivered {len(report.delivered)}, failed {len(report.failed)}, "
                   f"pending {report.pending}")
        for alert_id, channel, error in report.failed:
            click.echo(f"  {alert_id} -> {channel}: {error}")
        if report.in_flight:
            click.echo(f"  {report.in_flight} already being delivered by another process")
        for channel, n in report.unconfigured.items():
            why = alerter.skipped.get(channel, "not in monitoring.alerts.channels")
            click.echo(f"  {n} waiting for channel {channel} ({why})")
    if report.pending:
        sys.exit(EXIT_ACTION_FAILED)


@drift.command("outbox")
@click.option("--status", type=click.Choice(["pending", "delivered"]), default=None,
              help="Only these deliveries.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@pass_app
def drift_outbox(app: AppContext, status: str | None, limit: int, as_json: bool) -> None:
    """List alert deliveries (newest alert first): channel, status, attempts, last error."""
    import time

    from monitoring.alerts import build_channels, list_outbox
    from monitoring.state import StateDB

    mon = app.settings.params.monitoring
    active, _ = build_channels(mon.alerts)
    rows = list_outbox(StateDB(app.settings.path(mon.state_db)), status, limit, set(active))
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("the outbox is empty")
        return
    for r in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r["created_at"]))
        extra = ""
        if r["status"] == "pending":
            extra = f" next try {time.strftime('%H:%M:%S', time.gmtime(r['next_attempt_at']))} UTC"
            if not r["channel_active"]:
                extra += " (channel not configured now)"
            if r["last_error"]:
                extra += f" last error: {r['last_error']}"
        dup = f" (+{r['suppressed']} suppressed)" if r["suppressed"] else ""
        click.echo(f"{when} {r['alert_id']} {r['channel']:<13}{r['status']:<10}attempts {r['attempts']}"
                   f"{extra} :: {r['title']}{dup}")


@drift.command("triggers")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@pass_app
def drift_triggers(app: AppContext, limit: int, as_json: bool) -> None:
    """The retraining trigger log: when, what was decided (triggered, suppressed, failed) and why."""
    import time

    from monitoring.retrain import list_triggers
    from monitoring.state import StateDB

    mon = app.settings.params.monitoring
    rows = list_triggers(StateDB(app.settings.path(mon.state_db)), limit)
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("no retraining was triggered yet")
    for r in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r["created_at"]))
        run = f" run {r['dag_run_id']}" if r["dag_run_id"] else ""
        err = f" error: {r['error']}" if r["error"] else ""
        click.echo(f"{when} {r['status']:<10} {r['dag_id']}{run} :: {r['reason']}{err}")
