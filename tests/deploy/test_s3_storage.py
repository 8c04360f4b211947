"""churnops.storage and `churnops storage ...` against a real S3-compatible server."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import run_cli
from deploy_support import ENV_EXAMPLE, free_port, interpolate_tree, load_compose, read_env_file

from churnops.storage import (
    S3Location,
    StorageError,
    endpoint_url,
    ensure_bucket,
    iter_keys,
    parse_s3_uri,
    probe,
    s3_client,
    wait_until_reachable,
)

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("uri", "bucket", "prefix"),
    [
        ("s3://churnops/mlflow/artifacts", "churnops", "mlflow/artifacts"),
        ("s3://churnops/dvc/", "churnops", "dvc"),
        ("s3://churnops", "churnops", ""),
        ("s3://my.bucket-2", "my.bucket-2", ""),
    ],
)
def test_s3_uris_split_into_bucket_and_prefix(uri: str, bucket: str, prefix: str) -> None:
    loc = parse_s3_uri(uri)
    assert (loc.bucket, loc.prefix) == (bucket, prefix)
    assert loc.uri == uri.rstrip("/")


@pytest.mark.parametrize(
    "uri",
    ["/data/dvc", "s3://", "s3://ab/x", "s3://Upper/x", "s3://under_score", "s3://-dash/x", "gs://bucket/x"],
)
def test_malformed_s3_uris_are_refused_naming_the_variable(uri: str) -> None:
    with pytest.raises(StorageError, match="CHURNOPS_DVC_REMOTE"):
        parse_s3_uri(uri, what="CHURNOPS_DVC_REMOTE")


def test_location_keys_join_the_prefix_without_double_slashes() -> None:
    assert S3Location("b", "mlflow/artifacts").key("x/", "/y") == "mlflow/artifacts/x/y"
    assert S3Location("b", "").key("x") == "x"


def test_the_s3_specific_endpoint_wins_over_the_global_one() -> None:
    assert (
        endpoint_url({"AWS_ENDPOINT_URL": "http://global", "AWS_ENDPOINT_URL_S3": "http://s3"}) == "http://s3"
    )
    assert endpoint_url({"AWS_ENDPOINT_URL": "http://global"}) == "http://global"
    assert endpoint_url({}) is None


def test_bucket_creation_is_idempotent(s3_env: dict[str, str]) -> None:
    client = s3_client(s3_env)
    assert client.meta.endpoint_url == s3_env["AWS_ENDPOINT_URL_S3"]
    assert ensure_bucket(client, "churnops-idempotent") is True
    assert ensure_bucket(client, "churnops-idempotent") is False
    assert "churnops-idempotent" in {b["Name"] for b in client.list_buckets()["Buckets"]}


def test_probe_writes_reads_and_deletes_without_leaving_objects(s3_env: dict[str, str], bucket: str) -> None:
    client = s3_client(s3_env)
    loc = parse_s3_uri(f"s3://{bucket}/dvc")
    result = probe(client, loc)
    assert result.uri == f"s3://{bucket}/dvc"
    assert result.write_ms > 0 and result.read_ms > 0
    assert list(iter_keys(client, loc)) == []


def test_probe_of_a_missing_bucket_names_it(s3_env: dict[str, str]) -> None:
    with pytest.raises(StorageError, match="s3://churnops-missing-bucket/x.*NoSuchBucket"):
        probe(s3_client(s3_env), parse_s3_uri("s3://churnops-missing-bucket/x"))


def test_waiting_for_an_endpoint_that_never_answers_fails_with_the_endpoint(s3_env: dict[str, str]) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    client = s3_client({**s3_env, "AWS_ENDPOINT_URL_S3": dead}, connect_timeout=0.2, max_attempts=1)
    started = time.monotonic()
    with pytest.raises(StorageError, match=f"no S3 endpoint answers at {dead}"):
        wait_until_reachable(client, timeout_s=1, interval_s=0.2)
    assert time.monotonic() - started < 10


def test_storage_init_from_the_compose_file_creates_the_bucket(
    s3_env: dict[str, str], tmp_path: Path
) -> None:
    """The exact command and environment of the compose service `storage-init`, with the MinIO address
    replaced by the test server's."""
    service = load_compose()["services"]["storage-init"]
    env = read_env_file(ENV_EXAMPLE) | {
        "S3_SECRET_ACCESS_KEY": "x" * 12,
        "REDIS_PASSWORD": "r",
        "S3_BUCKET": "churnops-compose-init",
        "S3_ENDPOINT_URL": s3_env["AWS_ENDPOINT_URL_S3"],
    }
    resolved = interpolate_tree(service, env)
    command = resolved["command"]
    assert command[:2] == ["storage", "init"]
    service_env = {
        **resolved["environment"],
        "AWS_ACCESS_KEY_ID": s3_env["AWS_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": s3_env["AWS_SECRET_ACCESS_KEY"],
    }
    (tmp_path / "params.yaml").write_text((Path(__file__).parents[2] / "params.yaml").read_text())
    proc = run_cli(*command, "--json", env={**s3_env, **service_env, "CHURNOPS_HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["buckets"] == {"churnops-compose-init": "created"}
    assert doc["locations"] == {
        "CHURNOPS_ARTIFACT_ROOT": "s3://churnops-compose-init/mlflow/artifacts",
        "CHURNOPS_DVC_REMOTE": "s3://churnops-compose-init/dvc",
    }
    again = run_cli(*command, "--json", env={**s3_env, **service_env, "CHURNOPS_HOME": str(tmp_path)})
    assert json.loads(again.stdout)["buckets"] == {"churnops-compose-init": "exists"}

    check = run_cli("storage", "check", env={**s3_env, **service_env, "CHURNOPS_HOME": str(tmp_path)})
    assert check.returncode == 0, check.stderr
    assert "CHURNOPS_DVC_REMOTE s3://churnops-compose-init/dvc: ok" in check.stdout


def test_storage_check_fails_with_the_reason_when_the_bucket_is_missing(
    s3_env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "params.yaml").write_text((Path(__file__).parents[2] / "params.yaml").read_text())
    proc = run_cli(
        "storage",
        "check",
        env={
            **s3_env,
            "CHURNOPS_HOME": str(tmp_path),
            "CHURNOPS_DVC_REMOTE": "s3://churnops-never-created/dvc",
        },
    )
    assert proc.returncode == 1
    assert "s3://churnops-never-created/dvc" in proc.stderr and "NoSuchBucket" in proc.stderr


def test_storage_commands_refuse_local_paths(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text((Path(__file__).parents[2] / "params.yaml").read_text())
    proc = run_cli(
        "storage",
        "init",
        env={"CHURNOPS_HOME": str(tmp_path), "CHURNOPS_ARTIFACT_ROOT": "", "CHURNOPS_DVC_REMOTE": ""},
    )
    assert proc.returncode == 1
    assert "neither CHURNOPS_ARTIFACT_ROOT nor CHURNOPS_DVC_REMOTE is an s3:// URI" in proc.stderr
