"""Helpers for the pipeline tests: a project home, the real `churnops` CLI, the state a run must keep."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import FAST_TRAIN, REPO, deep_merge

CHURNOPS = str(Path(sys.executable).parent / "churnops")


def sha(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def cli_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHURNOPS_", "MLFLOW_"))}
    env.update(CHURNOPS_HOME=str(home), DVC_NO_ANALYTICS="1",
               PATH=str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", ""))
    return env


def run_cli(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([CHURNOPS, *args], cwd=home, env=cli_env(home), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"churnops {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


def make_project(home: Path, overrides: dict | None = None) -> Path:
    """A git-initialised project home with dvc.yaml and params.yaml (fast training budgets + `overrides`)."""
    home.mkdir(parents=True)
    params = deep_merge(yaml.safe_load((REPO / "params.yaml").read_text()), {"train": FAST_TRAIN})
    params["train"]["search_spaces"] = FAST_TRAIN["search_spaces"]
    params = deep_merge(params, overrides or {})
    (home / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copy(REPO / "dvc.yaml", home / "dvc.yaml")
    shutil.copy(REPO / ".gitignore", home / ".gitignore")  # DVC refuses to track a git-ignored pointer file
    subprocess.run(["git", "init", "-q"], cwd=home, check=True)
    return home


def settings_of(home: Path):
    from churnops.settings import load_settings

    return load_settings(home=home, env={})


STATE_FOLDERS = ("data/raw", "data/validated", "data/features", "reports")


def state(home: Path) -> dict[str, str | None]:
    """Everything a failed or stopped run must leave as it was: each file of the data layers and reports
    (but the report on the incoming file, which describes the attempt), dvc.lock, and the @champion."""
    from churnops import registry

    files = [p for folder in STATE_FOLDERS for p in sorted((home / folder).rglob("*")) if p.is_file()]
    snapshot: dict[str, str | None] = {
        str(p.relative_to(home)): sha(p) for p in files if "incoming" not in p.relative_to(home).parts}
    snapshot["dvc.lock"] = sha(home / "dvc.lock")
    snapshot["@champion"] = registry.champion_version(settings_of(home))
    return snapshot
