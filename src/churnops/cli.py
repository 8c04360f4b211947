"""The `churnops` command.

Every command group is added through the entry-point group `churnops.commands` declared in
pyproject.toml: the core's own (`data`, `models`, `features` in churnops.commands) and those of the outer
layers (pipeline, serving, monitoring), so the core never imports the outer layers.
Command modules keep heavy imports inside the command functions: `churnops --help` stays fast.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, TypeVar

import click

from churnops.logs import configure_logging
from churnops.redaction import redact_text
from churnops.settings import Settings, SettingsError, load_settings

ENTRY_POINT_GROUP = "churnops.commands"
F = TypeVar("F", bound=Callable[..., Any])


class AppContext:
    """What every command gets: the settings, loaded once and only when a command needs them."""

    def __init__(self, home: Path | None, params: Path | None) -> None:
        self._home, self._params = home, params
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            try:
                self._settings = load_settings(home=self._home, params_path=self._params)
            except SettingsError as exc:
                raise click.ClickException(str(exc)) from exc
        return self._settings


pass_app = click.make_pass_decorator(AppContext)


def friendly_errors(fn: F) -> F:
    """Turn the platform's expected failures (bad input, bad config, a failed stage) into a one-screen
    message (no password of any URL in it) and exit code 1 instead of a traceback; `churnops -v` shows the
    traceback as well."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except click.ClickException:
            raise
        except (ValueError, RuntimeError, OSError, KeyError) as exc:
            if logging.getLogger().isEnabledFor(logging.DEBUG):
                raise
            raise click.ClickException(redact_text(f"{type(exc).__name__}: {exc}")) from exc

    return wrapper  # type: ignore[return-value]


def echo_json(doc: object) -> None:
    click.echo(json.dumps(doc, indent=2, default=str))


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--home", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Project root holding data/, reports/ and mlflow/ (env CHURNOPS_HOME; default: cwd).")
@click.option("--params", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Settings file (env CHURNOPS_PARAMS; default: HOME/params.yaml).")
@click.option("--log-format", type=click.Choice(["text", "json"]), default=None,
              help="Log lines for people (text) or machines (json); env CHURNOPS_LOG_FORMAT.")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.pass_context
def main(ctx: click.Context, home: Path | None, params: Path | None, log_format: str | None,
         verbose: bool) -> None:
    """churnops: predict customer churn and keep the prediction honest in production.

    The loop: generate or ingest data -> validate -> features -> train and register (MLflow)
    -> push features (Redis) -> serve /predict -> monitor drift -> retrain (Airflow).
    """
    configure_logging("DEBUG" if verbose else None, log_format)
    ctx.obj = AppContext(home, params)


def _load_plugins(group: click.Group) -> None:
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            command = ep.load()
        except Exception as exc:  # a broken layer must not take the whole CLI down; say which one
            click.echo(f"warning: command {ep.name!r} from {ep.value} failed to load: {exc}", err=True)
            continue
        group.add_command(command, ep.name)


_load_plugins(main)
