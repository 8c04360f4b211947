"""`churnops train --data PATH`: version a new raw table with DVC and reproduce the pipeline.

The order protects the last good state:
1. the incoming file is read and validated *before* anything is touched (bad input changes nothing);
2. it replaces the raw table atomically, is `dvc add`-ed and pushed (a new data version);
3. `dvc repro` runs the stages of dvc.yaml (the same ones `dvc repro` runs by hand);
4. if any step after 1 fails, the raw table, its .dvc file and dvc.lock are put back and `dvc checkout`
   restores the validated and feature layers from the DVC cache. The champion only moves in the last stage,
   behind the promotion gate, so a failed run never changes it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from churnops.io import atomic_path, same_content
from churnops.logs import get_logger
from churnops.settings import Settings
from pipeline.layers import check_table
from pipeline.versioning import (
    VersioningError,
    _dvc_executable,
    add_and_push,
    dvc_env,
    dvc_file_for,
    ensure_remote,
    ensure_repo,
    run_dvc,
)

log = get_logger(__name__)


class PipelineError(RuntimeError):
    """The pipeline run failed; the previous good state was restored."""


@dataclass
class _Snapshot:
    """Copies of the files that define the current data version, to put back on failure."""

    files: dict[Path, bytes | None] = field(default_factory=dict)

    @classmethod
    def take(cls, paths: list[Path]) -> _Snapshot:
        return cls({p: (p.read_bytes() if p.is_file() else None) for p in paths})

    def restore(self) -> None:
        for path, content in self.files.items():
            if content is None:
                path.unlink(missing_ok=True)
            else:
                with atomic_path(path) as tmp:
                    tmp.write_bytes(content)


def repro(settings: Settings, force: bool = False) -> None:
    """Run `dvc repro` in the project home, streaming DVC's and the stages' output to stderr."""
    home = settings.home
    if not (home / "dvc.yaml").is_file():
        raise PipelineError(f"no dvc.yaml in {home}: run from the project root or set CHURNOPS_HOME")
    cmd = [_dvc_executable(), "repro", *(["--force"] if force else [])]
    env = dvc_env()
    env["CHURNOPS_HOME"] = str(home)
    env["CHURNOPS_PARAMS"] = str(settings.params_path)
    proc = subprocess.Popen(cmd, cwd=home, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1)
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:  # the stages log for themselves: pass their lines through unchanged
        line = line.rstrip()
        if line:
            tail = (tail + [line])[-40:]
            print(line, file=sys.stderr, flush=True)
    if proc.wait() != 0:
        raise PipelineError("`dvc repro` failed:\n" + "\n".join(tail))


def run_training(settings: Settings, data: Path | None = None, force: bool = False) -> dict:
    """Version `data` (when given) and reproduce the pipeline; return the run report."""
    home = settings.home
    raw = settings.raw_path
    if data is not None:
        data = Path(data).resolve()
        # 1. Refuse bad input before touching anything.
        check_table(settings, data, report_dir=settings.reports_dir / "incoming")
    elif not raw.is_file():
        raise PipelineError(f"no raw table at {raw}: pass --data PATH (a CSV in the configured schema)")

    ensure_repo(home)
    ensure_remote(home, settings.dvc_remote)
    snapshot = _Snapshot.take([raw, dvc_file_for(raw), home / "dvc.lock"])
    try:
        if data is not None and not same_content(data, raw):
            with atomic_path(raw) as tmp:
                shutil.copyfile(data, tmp)
            log.info("data.ingested", source=str(data), raw=str(raw))
        add_and_push(home, raw, settings.dvc_remote)
        repro(settings, force=force)
    except (VersioningError, PipelineError, OSError) as exc:
        log.error("pipeline.failed", error=str(exc).splitlines()[0])
        snapshot.restore()
        if snapshot.files[home / "dvc.lock"] is not None:
            try:
                run_dvc(home, "checkout", "-q", "--force")
            except VersioningError as checkout_exc:
                log.error("pipeline.restore_failed", error=str(checkout_exc))
        raise PipelineError(f"{exc}\nThe previous data version and layers were restored.") from exc
    report_path = settings.reports_dir / "run_report.json"
    return json.loads(report_path.read_text()) if report_path.is_file() else {}
