"""`churnops features ...`: push the gold layer to the Redis feature store and read customers back."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from churnops.cli import AppContext, echo_json, pass_app


@click.group()
def features() -> None:
    """The Redis feature store (REDIS_URL): push every customer's features, read one back."""


@features.command("push")
@click.option("--version", "version", default=None, metavar="V",
              help="Feature-set version to write (default: a digest of the content, so pushing the same "
                   "data again changes nothing).")
@click.option("--path", "path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Gold layer file (default: data.features_dir/customers.parquet; with source: transactions "
                   "every customer's features as of the day after the last line).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_app
def features_push(app: AppContext, version: str | None, path: Path | None, as_json: bool) -> None:
    """Write every customer's features under a new version, then switch readers to it atomically.

    Labels are never written; older versions are removed after the switch.
    """
    from churnops.feature_store import FeatureStore, FeatureStoreError

    settings = app.settings
    store = FeatureStore.from_settings(settings)
    try:
        result = (store.push_file(path, version=version) if path is not None
                  else store.push_current(settings, version=version))
    except FeatureStoreError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        echo_json(result.to_dict())
    elif result.skipped:
        click.echo(f"feature set {result.version} ({result.rows} customers) already is current: "
                   f"nothing to do")
    else:
        click.echo(f"pushed {result.rows} customers as feature set {result.version} in "
                   f"{result.seconds:.1f} s ({result.rate:,.0f}/s); previous: {result.previous or 'none'}, "
                   f"{result.removed_keys} old keys removed")


@features.command("get")
@click.argument("customer_id")
@pass_app
def features_get(app: AppContext, customer_id: str) -> None:
    """Print one customer's stored features (JSON). Exit 1 for an unknown customer."""
    from churnops.feature_store import FeatureStore, FeatureStoreError

    store = FeatureStore.from_settings(app.settings)
    try:
        found = store.get(customer_id)
    except FeatureStoreError as exc:
        raise click.ClickException(str(exc)) from exc
    if found is None:
        click.echo(f"unknown customer {customer_id!r} in feature set {store.current_version()}", err=True)
        sys.exit(1)
    echo_json(found.to_dict())


@features.command("info")
@pass_app
def features_info(app: AppContext) -> None:
    """The current feature set: version, customers, event time, when and from what it was pushed."""
    from churnops.feature_store import FeatureStore, FeatureStoreError

    try:
        info = FeatureStore.from_settings(app.settings).info()
    except FeatureStoreError as exc:
        raise click.ClickException(str(exc)) from exc
    if info is None:
        raise click.ClickException("no features pushed yet: run `churnops features push`")
    echo_json(info)
