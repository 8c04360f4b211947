"""`churnops storage ...`: the S3 buckets behind CHURNOPS_ARTIFACT_ROOT and CHURNOPS_DVC_REMOTE.

`init` is what the deployment runs once the object store is up (docker-compose service `storage-init`);
`check` is what an operator runs on a new machine to prove its credentials and endpoint work.
"""

from __future__ import annotations

import click

from churnops.cli import AppContext, echo_json, pass_app
from churnops.redaction import redact_url


@click.group()
def storage() -> None:
    """S3 object storage for MLflow artifacts and the DVC remote (AWS_ENDPOINT_URL_S3, AWS_* credentials)."""


def _locations(app: AppContext) -> dict:
    from churnops.storage import StorageError, configured_locations

    try:
        locations = configured_locations(app.settings)
    except StorageError as exc:
        raise click.ClickException(str(exc)) from exc
    if not locations:
        raise click.ClickException(
            "neither CHURNOPS_ARTIFACT_ROOT nor CHURNOPS_DVC_REMOTE is an s3:// URI: nothing to do "
            "(artifacts and data versions stay on local disk)"
        )
    return locations


@storage.command("init")
@click.option(
    "--wait",
    "wait_s",
    type=click.FloatRange(min=0),
    default=60,
    show_default=True,
    help="Seconds to wait for the object store to answer.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_app
def storage_init(app: AppContext, wait_s: float, as_json: bool) -> None:
    """Wait for the S3 endpoint, then create the buckets of CHURNOPS_ARTIFACT_ROOT and CHURNOPS_DVC_REMOTE.

    Idempotent: existing buckets are left as they are.
    """
    from churnops.storage import StorageError, endpoint_url, ensure_bucket, s3_client, wait_until_reachable

    locations = _locations(app)
    client = s3_client()
    try:
        waited = wait_until_reachable(client, timeout_s=wait_s)
        created = {}
        for bucket in sorted({loc.bucket for loc in locations.values()}):
            created[bucket] = ensure_bucket(client, bucket)
    except StorageError as exc:
        raise click.ClickException(str(exc)) from exc
    doc = {
        "endpoint": redact_url(endpoint_url() or "AWS"),
        "waited_s": round(waited, 2),
        "buckets": {b: ("created" if c else "exists") for b, c in created.items()},
        "locations": {name: loc.uri for name, loc in locations.items()},
    }
    if as_json:
        echo_json(doc)
        return
    for bucket, state in doc["buckets"].items():
        click.echo(f"bucket {bucket}: {state} at {doc['endpoint']}")


@storage.command("check")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_app
def storage_check(app: AppContext, as_json: bool) -> None:
    """Write, read back and delete a probe object under each configured s3:// location.

    Exit 1 with the reason (endpoint unreachable, bucket missing, access denied) when one fails.
    """
    from botocore.exceptions import BotoCoreError

    from churnops.storage import StorageError, probe, s3_client, shown_endpoint

    locations = _locations(app)
    client = s3_client()
    results = {}
    try:
        for name, loc in locations.items():
            results[name] = probe(client, loc).to_dict()
    except StorageError as exc:
        raise click.ClickException(str(exc)) from exc
    except BotoCoreError as exc:  # refused, timed out, no credentials: say which endpoint, keep the cause
        raise click.ClickException(f"S3 endpoint {shown_endpoint(client)} failed: {exc}") from exc
    if as_json:
        echo_json(results)
        return
    for name, r in results.items():
        click.echo(
            f"{name} {r['uri']}: ok (write {r['write_ms']} ms, read {r['read_ms']} ms, "
            f"delete {r['delete_ms']} ms) via {r['endpoint'] or 'AWS'}"
        )
