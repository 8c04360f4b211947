"""`churnops models ...`: inspect the registered models, roll the champion back."""

from __future__ import annotations

from typing import Any

import click

from churnops.cli import AppContext, echo_json, pass_app
from churnops.redaction import redact_url


@click.group()
def models() -> None:
    """Inspect the model registry (@champion, versions) and roll the champion back."""


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "-" if value in (None, "") else str(value)


def gate_summary(promotion: dict[str, Any]) -> str:
    """The promotion gate's decision on a version, from its ``promotion.*`` tags:
    ``kept +0.00120 [-0.00410, +0.00650] p=0.69`` (difference, confidence interval, p-value)."""
    decision = promotion.get("decision") or {"true": "promoted", "false": "kept"}.get(
        promotion.get("promoted", ""), "-")
    if promotion.get("difference") in (None, ""):
        return decision
    diff, low, high = (float(promotion[k]) for k in ("difference", "ci_low", "ci_high"))
    return f"{decision} {diff:+.5f} [{low:+.5f}, {high:+.5f}] p={float(promotion['p_value']):.3g}"


@models.command("champion")
@click.option("--json", "as_json", is_flag=True, help="Print the champion as JSON.")
@pass_app
def models_champion(app: AppContext, as_json: bool) -> None:
    """Show the @champion version: candidate, hold-out metrics, threshold, data version."""
    from churnops.registry import champion_info

    settings = app.settings
    info = champion_info(settings)
    if info is None:
        raise click.ClickException(
            f"no @champion for model {settings.model_name!r} in "
            f"{redact_url(settings.mlflow_tracking_uri)}: train and register one first (`churnops train`)"
        )
    if as_json:
        echo_json(info)
        return
    click.echo(f"{info['name']} v{info['version']}  aliases: {', '.join(info['aliases'])}")
    for key in ("candidate", "threshold", "data_version", "git_commit", "params_hash", "run_id",
                "registered_at", "champion_since", "previous_champion"):
        click.echo(f"  {key:<18} {_fmt(info[key])}")
    click.echo("  hold-out metrics:")
    for name, value in info["metrics"].items():
        click.echo(f"    {name:<16} {value:.4f}")
    if info["promotion"].get("reason"):
        click.echo(f"  promotion: {gate_summary(info['promotion'])}")
        click.echo(f"    {info['promotion']['reason']}")


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the versions as JSON.")
@pass_app
def models_list(app: AppContext, as_json: bool) -> None:
    """List registered versions (newest first) with aliases, candidate, gate metric and data version."""
    from churnops.models.evaluation import metric_key
    from churnops.registry import list_versions

    settings = app.settings
    versions = list_versions(settings)
    if as_json:
        echo_json(versions)
        return
    if not versions:
        name = settings.model_name
        click.echo(f"no versions of {name!r} in {redact_url(settings.mlflow_tracking_uri)}")
        return
    metric = metric_key(settings.params.register_.metric)
    header = (f"{'version':>7}  {'aliases':<28} {'candidate':<20} {metric:>9} {'threshold':>9}  "
              f"{'data_version':<34} {'registered_at':<25} gate (vs champion then: difference, CI, p)")
    click.echo(header)
    for v in versions:
        click.echo(
            f"{v['version']:>7}  {','.join(v['aliases']) or '-':<28} {_fmt(v['candidate']):<20} "
            f"{_fmt(v['metrics'].get(metric)):>9} {_fmt(v['threshold']):>9}  {_fmt(v['data_version']):<34} "
            f"{_fmt(v['registered_at']):<25} {gate_summary(v['promotion'])}"
        )


@models.command("rollback")
@click.option("--to", "to_version", default=None, metavar="VERSION",
              help="Version to make champion (default: the one the current champion replaced).")
@click.option("--reason", default=None, help="Why (recorded on both versions).")
@pass_app
def models_rollback(app: AppContext, to_version: str | None, reason: str | None) -> None:
    """Move @champion back to the previous champion (or to --to VERSION) and record why."""
    from churnops.registry import RegistryError, rollback

    try:
        result = rollback(app.settings, to_version=to_version, reason=reason)
    except RegistryError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"@champion: v{result.from_version} -> v{result.to_version} ({result.reason}); "
               f"@previous: {_fmt(result.previous)}")
