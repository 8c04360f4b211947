"""A data version pushed to an S3 remote from one checkout and pulled on another machine's checkout, through
the pipeline's own DVC configuration (pipeline.versioning) and the real `dvc` command line."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from deploy_support import VENV_BIN

from churnops.storage import iter_keys, parse_s3_uri, s3_client

pytestmark = pytest.mark.integration

GIT_ENV = {
    "GIT_AUTHOR_NAME": "churnops tests",
    "GIT_AUTHOR_EMAIL": "tests@churnops.invalid",
    "GIT_COMMITTER_NAME": "churnops tests",
    "GIT_COMMITTER_EMAIL": "tests@churnops.invalid",
}


def sh(*cmd: str, cwd: Path) -> str:
    env = {
        **os.environ,
        **GIT_ENV,
        "DVC_NO_ANALYTICS": "1",
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed in {cwd}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_a_data_version_round_trips_through_the_s3_remote(
    s3_env: dict[str, str], bucket: str, tmp_path: Path
) -> None:
    from pipeline.versioning import REMOTE_NAME, add_and_push, ensure_remote

    remote = f"s3://{bucket}/dvc"
    # Machine A: a project checkout that versions a new raw table.
    origin = tmp_path / "origin"
    origin.mkdir()
    sh("git", "init", "-q", "-b", "main", cwd=origin)
    table = origin / "data" / "raw" / "customers.csv"
    table.parent.mkdir(parents=True)
    content = b"CLIENTNUM,Customer_Age,Attrition_Flag\n1,45,Existing Customer\n2,51,Attrited Customer\n"
    table.write_bytes(content)

    version = add_and_push(origin, table, remote)

    # The object store holds the content under DVC's layout, addressed by the data version (md5).
    keys = set(iter_keys(s3_client(s3_env), parse_s3_uri(remote)))
    assert keys == {f"dvc/files/md5/{version[:2]}/{version[2:]}"}
    body = s3_client(s3_env).get_object(Bucket=bucket, Key=f"dvc/files/md5/{version[:2]}/{version[2:]}")
    assert body["Body"].read() == content

    # The machine's endpoint stays out of the committed config (it goes to .dvc/config.local).
    committed = (origin / ".dvc" / "config").read_text()
    local = (origin / ".dvc" / "config.local").read_text()
    assert "endpointurl" not in committed and s3_env["AWS_ENDPOINT_URL_S3"] not in committed
    assert f"endpointurl = {s3_env['AWS_ENDPOINT_URL_S3']}" in local
    assert s3_env["AWS_SECRET_ACCESS_KEY"] not in committed + local

    sh("git", "add", ".", cwd=origin)
    sh("git", "commit", "-q", "-m", "data version", cwd=origin)

    # Machine B: a fresh clone (no cache, no data file, no local config), configured from its own
    # environment the way the pipeline does it; `dvc pull` restores the exact bytes.
    clone = tmp_path / "clone"
    sh("git", "clone", "-q", str(origin), str(clone), cwd=tmp_path)
    assert not (clone / "data" / "raw" / "customers.csv").exists()
    ensure_remote(clone, remote)
    sh(str(VENV_BIN / "dvc"), "pull", "-q", cwd=clone)
    assert (clone / "data" / "raw" / "customers.csv").read_bytes() == content
    clone_local = (clone / ".dvc" / "config.local").read_text()
    assert f'remote "{REMOTE_NAME}"' in clone_local and f"url = {remote}" in clone_local


def test_dvc_reaches_the_store_through_the_environment_alone(
    s3_env: dict[str, str], bucket: str, tmp_path: Path
) -> None:
    """A remote configured without `endpointurl` (e.g. by hand on a new machine) still finds the S3-compatible
    server: DVC's s3fs/aiobotocore honours AWS_ENDPOINT_URL_S3 itself."""
    repo = tmp_path / "repo"
    repo.mkdir()
    sh(str(VENV_BIN / "dvc"), "init", "-q", "--no-scm", cwd=repo)
    sh(str(VENV_BIN / "dvc"), "remote", "add", "-d", "store", f"s3://{bucket}/plain", cwd=repo)
    (repo / "t.csv").write_text("a,b\n1,2\n")
    sh(str(VENV_BIN / "dvc"), "add", "-q", "t.csv", cwd=repo)
    sh(str(VENV_BIN / "dvc"), "push", "-q", cwd=repo)
    assert len(list(iter_keys(s3_client(s3_env), parse_s3_uri(f"s3://{bucket}/plain")))) == 1
