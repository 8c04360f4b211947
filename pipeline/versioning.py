"""Raw-data versioning with the real DVC command line.

The data version of a raw table is the md5 DVC records in its ``.dvc`` file; every model is tagged with it.
The default remote comes from settings (CHURNOPS_DVC_REMOTE): a local folder by default, ``s3://bucket/prefix``
when configured (endpoint from AWS_ENDPOINT_URL for S3-compatible stores). Remote settings go to
``.dvc/config.local`` so machine-specific URLs and endpoints are never committed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from churnops.logs import get_logger
from churnops.redaction import redact_text

log = get_logger(__name__)
REMOTE_NAME = "churnops"


class VersioningError(RuntimeError):
    """A DVC command failed; the message carries DVC's own explanation."""


def dvc_env() -> dict[str, str]:
    """The environment for DVC: analytics off and this interpreter's bin first on PATH (stage commands)."""
    env = dict(os.environ)
    env["DVC_NO_ANALYTICS"] = "1"
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    return env


def _dvc_executable() -> str:
    candidate = Path(sys.executable).parent / "dvc"
    return str(candidate) if candidate.exists() else (shutil.which("dvc") or "dvc")


def run_dvc(home: Path, *args: str, quiet: bool = False) -> str:
    """Run `dvc ARGS` in `home`; raise VersioningError with DVC's message on failure."""
    cmd = [_dvc_executable(), *args]
    log.debug("dvc", args=" ".join(args), cwd=str(home))
    proc = subprocess.run(cmd, cwd=home, env=dvc_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        detail = (proc.stderr.strip() or proc.stdout.strip())[-4000:]
        raise VersioningError(  # a remote's URL may carry a password
            redact_text(f"`dvc {' '.join(args)}` failed in {home} (exit {proc.returncode}):\n{detail}"))
    if not quiet and proc.stdout.strip():
        log.debug("dvc.output", output=proc.stdout.strip()[-2000:])
    return proc.stdout


def _inside_git(home: Path) -> bool:
    proc = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=home, capture_output=True, text=True)
    return proc.returncode == 0 and Path(proc.stdout.strip()).resolve() == home.resolve()


CODE_PATHS = "code_paths.yaml"  # where dvc.yaml's stages find the code they run (its `vars`)


def code_paths(home: Path) -> dict[str, str]:
    """The folders of the code the stages run, relative to `home` when inside it (the repository), else
    absolute (an installed churnops running a project home elsewhere)."""
    import churnops
    import monitoring
    import pipeline

    def where(package: object) -> str:
        folder = Path(package.__file__).resolve().parent  # type: ignore[attr-defined]
        try:
            return folder.relative_to(home.resolve()).as_posix()
        except ValueError:
            return folder.as_posix()

    return {"core": where(churnops), "pipeline": where(pipeline), "monitoring": where(monitoring)}


def ensure_code_paths(home: Path) -> Path:
    """Write ``code_paths.yaml`` (the ``code`` vars of dvc.yaml) unless the one there names existing folders.

    dvc.yaml's stages depend on the code that computes them (``${code.core}/models/search.py``, ...), so
    `dvc repro` retrains after a change to the model code and not after a change to serving.
    """
    from churnops.io import write_text_atomic

    path = home / CODE_PATHS
    if path.is_file():
        current = (yaml.safe_load(path.read_text()) or {}).get("code") or {}
        if current and all((home / str(folder)).is_dir() for folder in current.values()):
            return path
    header = ("# Where the code of dvc.yaml's stages lives (their deps), relative to this project home or\n"
              "# absolute; churnops writes it when missing or stale (pipeline.versioning).\n")
    write_text_atomic(path, header + yaml.safe_dump({"code": code_paths(home)}, sort_keys=False))
    log.info("dvc.code_paths", path=str(path), **code_paths(home))
    return path


def ensure_repo(home: Path) -> None:
    """`dvc init` once (with --no-scm when the home is not the root of a git repository); the code paths
    dvc.yaml reads."""
    ensure_code_paths(home)
    if (home / ".dvc").is_dir():
        return
    args = ["init", "-q"] if _inside_git(home) else ["init", "-q", "--no-scm"]
    run_dvc(home, *args)
    run_dvc(home, "config", "core.analytics", "false")
    log.info("dvc.init", home=str(home), scm=args[-1] != "--no-scm")


def ensure_remote(home: Path, url: str) -> None:
    """Make `url` the default remote (local config). A local path is created if missing."""
    if "://" not in url:
        Path(url).mkdir(parents=True, exist_ok=True)
    run_dvc(home, "remote", "add", "--local", "-d", "-f", REMOTE_NAME, url)
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if url.startswith("s3://") and endpoint:
        run_dvc(home, "remote", "modify", "--local", REMOTE_NAME, "endpointurl", endpoint)


def data_version(dvc_file: Path) -> str | None:
    """The md5 DVC recorded for a tracked file, or None when it is not tracked yet."""
    if not dvc_file.is_file():
        return None
    doc = yaml.safe_load(dvc_file.read_text()) or {}
    outs = doc.get("outs") or []
    return str(outs[0]["md5"]) if outs and "md5" in outs[0] else None


def fetch_data_version(home: Path, version: str) -> Path | None:
    """The file of data version `version` (an md5) in the project's DVC cache, fetched from the default
    remote first when only the remote has it; None when neither has it.

    Read-only on the remote, and the workspace (raw table, .dvc files, dvc.lock) is not touched: only the
    cache receives the object, as `dvc fetch` does. Through DVC's own API (its cache and remote
    configuration, S3 endpoint and credentials included), since no DVC command fetches by hash. Holds no
    repository lock, so a stage of `dvc repro` may call it. A remote that cannot be read raises
    :class:`VersioningError` with DVC's message.
    """
    from dvc.exceptions import DvcException
    from dvc.repo import Repo
    from dvc_data.hashfile.hash_info import HashInfo

    try:
        with Repo(str(home)) as repo:
            path = Path(repo.cache.local.oid_to_path(version))
            if not path.is_file():
                repo.cloud.pull([HashInfo("md5", version)])
    except (DvcException, OSError) as exc:
        raise VersioningError(redact_text(f"fetching data version {version} from the DVC remote of {home} "
                                          f"failed: {type(exc).__name__}: {exc}")) from exc
    if not path.is_file():
        return None
    log.info("dvc.fetched", data_version=version, cache=str(path))
    return path


def dvc_file_for(path: Path) -> Path:
    return path.with_name(path.name + ".dvc")


def add_and_push(home: Path, path: Path, remote_url: str) -> str:
    """`dvc add` the file, push it to the default remote, and return its data version (md5)."""
    ensure_repo(home)
    ensure_remote(home, remote_url)
    rel = os.path.relpath(path, home)
    run_dvc(home, "add", rel)  # not -q: with it DVC keeps its error messages to itself
    run_dvc(home, "push", rel + ".dvc")
    version = data_version(dvc_file_for(path))
    if version is None:
        raise VersioningError(f"dvc add did not record an md5 for {path}")
    log.info("data.versioned", path=rel, data_version=version, remote=remote_url)
    return version


def git_commit(path: Path | None = None) -> str:
    """The commit of the code that runs: CHURNOPS_GIT_COMMIT (set in container images), else the checkout
    holding this package (with -dirty for uncommitted changes), else 'unknown'."""
    if os.environ.get("CHURNOPS_GIT_COMMIT"):
        return os.environ["CHURNOPS_GIT_COMMIT"]
    where = path or Path(__file__).resolve().parent
    proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True)
    if proc.returncode != 0:
        return "unknown"
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                           capture_output=True, text=True).stdout.strip()
    return proc.stdout.strip() + ("-dirty" if dirty else "")
