"""`churnops actions`: the recommended retention actions of a scoring run, highest expected loss first."""

from __future__ import annotations

import math

import click

from churnops.cli import AppContext, echo_json, pass_app


def _money(value: float | None) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:,.0f}"


@click.command()
@click.option("--top", "top", type=click.IntRange(min=1, max=100_000), default=50, show_default=True,
              help="How many actions to list.")
@click.option("--run-id", default=None, help="Scoring run to read (default: the latest).")
@click.option("--json", "as_json", is_flag=True, help="Print the actions as JSON.")
@pass_app
def actions(app: AppContext, top: int, run_id: str | None, as_json: bool) -> None:
    """Recommended retention actions of the latest scoring run (or --run-id), with the reason in words.

    Read from the marts in CHURNOPS_DATABASE_URL that `churnops score` and the churn_batch_scoring DAG
    write; ranked by expected loss (churn probability x analytics.value_column)."""
    from churnops.analytics.read import MartReader
    from churnops.database import DatabaseError

    try:
        with MartReader.open(app.settings) as marts:
            runs = marts.runs()
            run_id = run_id or marts.latest_run_id()
            if run_id is None:
                raise click.ClickException(
                    f"no scoring run in {marts.database} yet: run `churnops score` (or the "
                    f"churn_batch_scoring DAG) first")
            if run_id not in set(runs.run_id):
                raise click.ClickException(f"no scoring run {run_id!r} in {marts.database}; kept runs: "
                                           f"{', '.join(runs.run_id[-5:])}")
            rows = marts.actions(run_id, top)
    except DatabaseError as exc:
        raise click.ClickException(str(exc)) from exc
    kpi = runs.set_index("run_id").loc[run_id]
    if as_json:
        echo_json({"run_id": run_id, "actions": rows.to_dict("records")})
        return
    click.echo(f"run {run_id} (scored {kpi.scored_at}, model version {kpi.model_version}): "
               f"{int(kpi.actions)} recommended actions; revenue at risk {_money(kpi.revenue_at_risk)}")
    if rows.empty:
        click.echo("no customer at an action risk level (analytics.action_levels) in this run")
        return
    click.echo(f"{'rank':>5}  {'customer':<14} {'risk':<6} {'prob':>5} {'exp. loss':>10}  action / reason")
    for r in rows.itertuples():
        click.echo(f"{r.action_rank:>4}.  {r.customer_id:<14} {r.risk_level:<6} {r.churn_probability:5.3f} "
                   f"{_money(r.expected_loss):>10}  {r.recommended_action}\n{'':>45}{r.action_reason}")
