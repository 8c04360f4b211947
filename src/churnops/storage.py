"""S3-compatible object storage through boto3: where MLflow artifacts and the DVC remote live when
``CHURNOPS_ARTIFACT_ROOT`` / ``CHURNOPS_DVC_REMOTE`` are ``s3://bucket/prefix`` URIs.

Which environment variables each client reads (checked against the pinned boto3 1.43, MLflow 3.17 and
DVC 3.67 by tests/deploy against a real S3-compatible server):

- credentials: ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (+ ``AWS_SESSION_TOKEN``), or any other
  source boto3 knows (profile, instance role, web identity);
- endpoint of an S3-compatible server (MinIO, Ceph RGW, ...): ``AWS_ENDPOINT_URL_S3`` (S3 only) or
  ``AWS_ENDPOINT_URL`` (every AWS service). boto3 reads both itself, so MLflow's S3 artifact repository
  and DVC's s3 remote (s3fs on aiobotocore) follow them too. ``MLFLOW_S3_ENDPOINT_URL`` still wins for
  MLflow, and a DVC remote's own ``endpointurl`` wins for DVC (``pipeline.versioning`` writes it from the
  same variables into ``.dvc/config.local``);
- region: ``AWS_DEFAULT_REGION`` / ``AWS_REGION`` (MinIO accepts any; default ``us-east-1``).

Nothing happens at import: boto3 is imported and clients are built only when a function is called.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from churnops.logs import get_logger
from churnops.redaction import redact_url

if TYPE_CHECKING:
    from churnops.settings import Settings

S3Client = Any  # a boto3 S3 client (boto3 builds its classes at run time)

log = get_logger(__name__)

ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
DEFAULT_REGION = "us-east-1"


class StorageError(RuntimeError):
    """Object storage is misconfigured or unreachable; the message names the URI/endpoint and what to do."""


@dataclass(frozen=True)
class S3Location:
    """``s3://bucket/prefix`` split into its parts (``prefix`` has no leading or trailing slash)."""

    bucket: str
    prefix: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def key(self, *parts: str) -> str:
        return "/".join(p.strip("/") for p in (self.prefix, *parts) if p and p.strip("/"))


def is_s3_uri(uri: str | None) -> bool:
    return bool(uri) and str(uri).startswith("s3://")


def parse_s3_uri(uri: str, *, what: str = "S3 URI") -> S3Location:
    """Split ``s3://bucket/prefix``; raise StorageError naming `what` (e.g. the variable) when malformed."""
    if not is_s3_uri(uri):
        raise StorageError(f"{what} {uri!r} is not an s3://bucket/prefix URI")
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    # S3 bucket naming rules (the subset every S3-compatible server enforces).
    if (
        not (3 <= len(bucket) <= 63)
        or not all(c.islower() or c.isdigit() or c in ".-" for c in bucket)
        or not (bucket[0].isalnum() and bucket[-1].isalnum())
    ):
        raise StorageError(
            f"{what} {uri!r}: bucket name {bucket!r} is invalid (3-63 characters: lower-case letters, "
            f"digits, '.' and '-', starting and ending with a letter or digit)"
        )
    return S3Location(bucket=bucket, prefix=prefix.strip("/"))


def shown_endpoint(client: Any) -> str:
    """A client's S3 endpoint as messages and answers show it (no password): "AWS" for Amazon's own."""
    return redact_url(client.meta.endpoint_url) if client.meta.endpoint_url else "AWS"


def endpoint_url(env: Mapping[str, str] | None = None) -> str | None:
    """The S3 endpoint boto3 will use from the environment (None: AWS's own endpoints)."""
    env = os.environ if env is None else env
    for name in ENDPOINT_VARIABLES:
        if env.get(name):
            return env[name]
    return None


def s3_client(
    env: Mapping[str, str] | None = None,
    *,
    connect_timeout: float = 5,
    read_timeout: float = 30,
    max_attempts: int = 3,
) -> S3Client:
    """A boto3 S3 client configured from `env` (default: the process environment).

    Credentials come from boto3's own chain (variables, profile, instance role); with an explicit `env`
    its ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN`` are used. A custom endpoint
    gets path-style addressing (MinIO and most S3-compatible servers need it without a DNS wildcard).
    """
    import boto3
    from botocore.config import Config

    source = os.environ if env is None else env
    endpoint = endpoint_url(source)
    config = Config(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"max_attempts": max_attempts, "mode": "standard"},
        s3={"addressing_style": "path"} if endpoint else None,
    )
    kwargs: dict[str, Any] = {
        "endpoint_url": endpoint,
        "region_name": source.get("AWS_DEFAULT_REGION") or source.get("AWS_REGION") or DEFAULT_REGION,
        "config": config,
    }
    if env is not None:
        kwargs.update(
            aws_access_key_id=env.get("AWS_ACCESS_KEY_ID") or None,
            aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
            aws_session_token=env.get("AWS_SESSION_TOKEN") or None,
        )
    return boto3.session.Session().client("s3", **kwargs)


def _describe(exc: Exception) -> str:
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        return f"{err.get('Code', '?')}: {err.get('Message', '')}".strip()
    return f"{type(exc).__name__}: {exc}"


def wait_until_reachable(client: S3Client, *, timeout_s: float = 60, interval_s: float = 1) -> float:
    """Poll the endpoint until it answers (any S3 reply, even an authorisation error, means it is up).

    Returns the seconds waited; raises StorageError after `timeout_s`.
    """
    from botocore.exceptions import ClientError, HTTPClientError
    from botocore.exceptions import ConnectionError as BotoConnectionError

    start = time.monotonic()
    last: Exception | None = None
    while True:
        try:
            client.list_buckets()
            return time.monotonic() - start
        except ClientError:
            return time.monotonic() - start  # the server answered; credentials are checked later
        except (BotoConnectionError, HTTPClientError) as exc:  # refused, timed out, closed: not up yet
            last = exc
        if time.monotonic() - start >= timeout_s:
            raise StorageError(
                f"no S3 endpoint answers at {shown_endpoint(client)} after {timeout_s:.0f} s "
                f"({_describe(last) if last else 'no reply'}): is the object store running and "
                f"AWS_ENDPOINT_URL_S3 right?"
            ) from last
        time.sleep(interval_s)


def ensure_bucket(client: S3Client, bucket: str) -> bool:
    """Create `bucket` unless it exists; return True when it was created."""
    from botocore.exceptions import ClientError

    try:
        client.head_bucket(Bucket=bucket)
        return False
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("403", "AccessDenied", "Forbidden"):
            raise StorageError(
                f"bucket {bucket!r} at {shown_endpoint(client)} exists but these credentials may not use "
                f"it ({_describe(exc)}): check AWS_ACCESS_KEY_ID and the bucket policy"
            ) from exc
        if code not in ("404", "NoSuchBucket", "NotFound"):
            raise StorageError(
                f"cannot inspect bucket {bucket!r} at {shown_endpoint(client)}: {_describe(exc)}"
            ) from exc
    region = client.meta.region_name
    kwargs: dict[str, Any] = {"Bucket": bucket}
    if region and region != DEFAULT_REGION:
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        client.create_bucket(**kwargs)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code == "BucketAlreadyOwnedByYou":  # created concurrently by another init
            return False
        raise StorageError(
            f"cannot create bucket {bucket!r} at {shown_endpoint(client)}: {_describe(exc)}"
        ) from exc
    log.info("storage.bucket_created", bucket=bucket, endpoint=shown_endpoint(client))
    return True


def iter_keys(client: S3Client, location: S3Location) -> Iterator[str]:
    """Every object key under the location's prefix (paginated)."""
    prefix = location.key() + "/" if location.prefix else ""
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=location.bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            yield obj["Key"]


@dataclass(frozen=True)
class ProbeResult:
    uri: str
    endpoint: str | None
    write_ms: float
    read_ms: float
    delete_ms: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "endpoint": self.endpoint,
            "write_ms": round(self.write_ms, 1),
            "read_ms": round(self.read_ms, 1),
            "delete_ms": round(self.delete_ms, 1),
        }


def probe(client: S3Client, location: S3Location) -> ProbeResult:
    """Write, read back and delete a small object under the location: proves the credentials can do what
    DVC and MLflow need (PutObject, GetObject, DeleteObject) there."""
    from botocore.exceptions import ClientError

    key = location.key(f".churnops-probe-{uuid.uuid4().hex}")
    body = f"churnops storage probe {time.time()}".encode()
    try:
        t0 = time.perf_counter()
        client.put_object(Bucket=location.bucket, Key=key, Body=body)
        t1 = time.perf_counter()
        got = client.get_object(Bucket=location.bucket, Key=key)["Body"].read()
        t2 = time.perf_counter()
        client.delete_object(Bucket=location.bucket, Key=key)
        t3 = time.perf_counter()
    except ClientError as exc:
        raise StorageError(
            f"{location.uri} at {shown_endpoint(client)}: {_describe(exc)} "
            f"(the credentials need s3:PutObject, s3:GetObject, s3:DeleteObject and "
            f"s3:ListBucket there)"
        ) from exc
    if got != body:
        raise StorageError(f"{location.uri}: the object read back differs from the one written")
    return ProbeResult(
        location.uri, shown_endpoint(client), (t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3
    )


def configured_locations(settings: Settings) -> dict[str, S3Location]:
    """The S3 locations the settings point at: ``{"CHURNOPS_ARTIFACT_ROOT": ..., "CHURNOPS_DVC_REMOTE": ...}``
    for those that are s3:// URIs (local paths are not object storage and are left out)."""
    out: dict[str, S3Location] = {}
    for name, uri in (
        ("CHURNOPS_ARTIFACT_ROOT", settings.artifact_root),
        ("CHURNOPS_DVC_REMOTE", settings.dvc_remote),
    ):
        if is_s3_uri(uri):
            out[name] = parse_s3_uri(uri, what=name)
    return out
