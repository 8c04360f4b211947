"""`churnops train --data PATH`: version a new raw table with DVC and reproduce the pipeline.

The order protects the last good state:
1. the incoming file is read and validated *before* anything is touched (bad input changes nothing);
2. a snapshot is taken of what the run may change: the raw table, its .dvc file, dvc.lock, every output of
   dvc.yaml (validated and feature layers, reports) and the registry's aliases (``@champion``, ...);
3. the new table replaces the raw table atomically, is `dvc add`-ed and pushed (a new data version);
4. `dvc repro` runs the stages of dvc.yaml (the same ones `dvc repro` runs by hand) in a process group of
   its own;
5. if any step after 1 fails, or the run is stopped (SIGTERM: a container stop, Airflow killing its task;
   SIGINT: Ctrl-C), the process group of `dvc repro` is ended (nothing of the run keeps running), the
   snapshot is put back byte for byte and the aliases an interrupted register stage moved go back
   (:func:`churnops.registry.restore_aliases`, which the ``churn_training`` DAG's restore uses too).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from churnops.io import atomic_path, same_content
from churnops.logs import get_logger
from churnops.settings import Settings
from pipeline.layers import check_table
from pipeline.processes import stop_process_group
from pipeline.training_data import apply_rule, layers_follow_run
from pipeline.versioning import (
    VersioningError,
    _dvc_executable,
    add_and_push,
    data_version,
    dvc_env,
    dvc_file_for,
    ensure_remote,
    ensure_repo,
)

log = get_logger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
CHILD_STOP_TIMEOUT_S = 30.0  # how long `dvc repro` and its stages get to end after TERM, before KILL


class PipelineError(RuntimeError):
    """The pipeline run failed; the previous good state was restored."""


class RunInterrupted(PipelineError):
    """The run was stopped by a signal; the previous good state was restored."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by a signal: 128 + its number (143, 130)."""
        return 128 + self.signum


class _Stopped(BaseException):  # noqa: N818 - raised by the signal handler, never escapes run_training
    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@dataclass
class _StopSignals:
    """SIGTERM/SIGINT raise :class:`_Stopped` in the run, until :meth:`defer` (then they are only noted)."""

    deferred: bool = False
    received: list[int] = field(default_factory=list)

    def handle(self, signum: int, _frame: object) -> None:
        self.received.append(signum)
        if not self.deferred:
            raise _Stopped(signum)
        log.warning("run.signal_deferred", signal=signal.Signals(signum).name,
                    note="restoring the previous state first")

    def defer(self) -> None:
        self.deferred = True


@contextmanager
def _stop_signals() -> Iterator[_StopSignals]:
    state = _StopSignals()
    if threading.current_thread() is not threading.main_thread():  # handlers only work in the main thread
        yield state
        return
    previous = {s: signal.signal(s, state.handle) for s in STOP_SIGNALS}
    try:
        yield state
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def pipeline_outputs(home: Path) -> list[Path]:
    """Every output dvc.yaml declares (outs, metrics, plots): the layers and reports a run rewrites."""
    doc = yaml.safe_load((home / "dvc.yaml").read_text()) or {}
    paths: list[Path] = []
    for stage in (doc.get("stages") or {}).values():
        for key in ("outs", "metrics", "plots"):
            for entry in stage.get(key) or []:
                name = entry if isinstance(entry, str) else next(iter(entry))
                if (home / name) not in paths:
                    paths.append(home / name)
    return paths


@dataclass
class _Snapshot:
    """Copies (in a folder of their own) of the files and folders a run may change, to put back on failure."""

    folder: Path
    files: dict[Path, Path | None] = field(default_factory=dict)  # path -> its copy (None: did not exist)
    trees: dict[Path, set[Path]] = field(default_factory=dict)  # folder -> the files it held

    @classmethod
    def take(cls, folder: Path, paths: list[Path]) -> _Snapshot:
        snap = cls(folder)
        for path in paths:
            if path.is_dir():
                snap.trees[path] = {p for p in path.rglob("*") if p.is_file()}
                for member in snap.trees[path]:
                    snap._keep(member)
            else:
                snap._keep(path)
        return snap

    def _keep(self, path: Path) -> None:
        if not path.is_file():
            self.files[path] = None
            return
        copy = self.folder / str(len(self.files))
        shutil.copyfile(path, copy)  # a real copy: dvc rewrites some files in place
        self.files[path] = copy

    def unchanged(self, path: Path) -> bool:
        copy = self.files.get(path)
        return copy is not None and same_content(copy, path)

    def restore(self, keep: tuple[Path, ...] = ()) -> None:
        """Put every snapshotted path back; the `keep` paths (and what is below them) stay as they are."""
        def kept(path: Path) -> bool:
            return any(path.is_relative_to(k) for k in keep)

        for tree, members in self.trees.items():  # files the run added to a folder go
            if tree.is_dir() and not kept(tree):
                for extra in (p for p in tree.rglob("*") if p.is_file() and p not in members):
                    extra.unlink(missing_ok=True)
        for path, copy in self.files.items():
            if kept(path):
                continue
            if copy is None:
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
            elif not same_content(copy, path):
                with atomic_path(path) as tmp:
                    shutil.copyfile(copy, tmp)


def repro(settings: Settings, force: bool = False) -> None:
    """Run `dvc repro` in the project home, streaming DVC's and the stages' output to stderr.

    DVC runs in a process group of its own; when this returns or raises (a failure, a stop signal), that
    whole group has ended: no stage command or worker of it keeps running.
    """
    home = settings.home
    if not (home / "dvc.yaml").is_file():
        raise PipelineError(f"no dvc.yaml in {home}: run from the project root or set CHURNOPS_HOME")
    cmd = [_dvc_executable(), "repro", *(["--force"] if force else [])]
    env = dvc_env()
    env["CHURNOPS_HOME"] = str(home)
    env["CHURNOPS_PARAMS"] = str(settings.params_path)
    proc = subprocess.Popen(cmd, cwd=home, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1, start_new_session=True)
    tail: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # the stages log for themselves: pass their lines through unchanged
            line = line.rstrip()
            if line:
                tail = (tail + [line])[-40:]
                print(line, file=sys.stderr, flush=True)
        code = proc.wait()
    finally:
        stop_process_group(proc, timeout_s=CHILD_STOP_TIMEOUT_S)
        if proc.stdout is not None:
            proc.stdout.close()
    if code != 0:
        raise PipelineError("`dvc repro` failed:\n" + "\n".join(tail))


def _champion(settings: Settings) -> str | None:
    from churnops import registry

    try:
        return registry.champion_version(settings)
    except Exception as exc:  # noqa: BLE001 - no registry yet is a state like any other
        log.debug("run.no_champion", error=str(exc))
        return None


def _aliases_before(settings: Settings) -> dict[str, str] | None:
    """The registry's aliases before the run (None: unreadable, so a failure cannot put them back)."""
    from churnops import registry

    try:
        return registry.aliases(settings)
    except Exception as exc:  # noqa: BLE001 - the run may still succeed; say what a failure could not undo
        log.warning("run.registry_unreadable", error=str(exc),
                    note="the aliases cannot be put back if this run fails")
        return None


def _restore_aliases(settings: Settings, before: dict[str, str] | None, why: str) -> None:
    """An interrupted or failed register stage may have moved @champion (and @challenger, @previous): put
    them back as they were before the run (:func:`churnops.registry.restore_aliases`); log what could not."""
    from churnops import registry

    if before is None:
        return
    try:
        registry.restore_aliases(settings, before, reason=f"training run {why}: previous state restored")
    except Exception as exc:  # noqa: BLE001 - restore what can be restored, say what could not
        log.error("run.restore_failed", what="registry aliases", error=str(exc))


def run_training(settings: Settings, data: Path | None = None, force: bool = False) -> dict:
    """Version `data` (when given) and reproduce the pipeline; return the run report.

    When DVC finds nothing to rerun up to the register stage, nothing was retrained: the result is
    ``{"retrained": False, ...}`` (the data version and champion as they are), never the previous report.
    """
    home = settings.home
    raw = settings.raw_path
    report_path = settings.reports_dir / "run_report.json"
    with _stop_signals() as signals, tempfile.TemporaryDirectory(prefix=".churnops-snapshot-",
                                                                dir=home) as snap_dir:
        snapshot: _Snapshot | None = None
        aliases_before: dict[str, str] | None = None
        try:
            if data is not None:
                data = Path(data).resolve()
                # 1. Refuse bad input before touching anything.
                check_table(settings, data, report_dir=settings.reports_dir / "incoming")
            elif not raw.is_file():
                raise PipelineError(f"no raw file at {raw}: pass --data PATH (the raw file of source "
                                    f"{settings.source})")
            ensure_repo(home)
            ensure_remote(home, settings.dvc_remote)
            # 2. What the run may change.
            snapshot = _Snapshot.take(Path(snap_dir), [raw, dvc_file_for(raw), home / "dvc.lock",
                                                       *pipeline_outputs(home)])
            aliases_before = _aliases_before(settings)
            # 3-4.
            if data is not None and not same_content(data, raw):
                with atomic_path(raw) as tmp:
                    shutil.copyfile(data, tmp)
                log.info("data.ingested", source=str(data), raw=str(raw))
            add_and_push(home, raw, settings.dvc_remote)
            repro(settings, force=force)
        except (VersioningError, PipelineError, OSError, _Stopped) as exc:
            signals.defer()  # a second signal must not cut the restore short
            stopped = isinstance(exc, _Stopped)
            why = f"stopped by {exc}" if stopped else "failed"
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            log.error("pipeline.stopped" if stopped else "pipeline.failed", error=first)
            if snapshot is None:
                if stopped:
                    assert isinstance(exc, _Stopped)
                    raise RunInterrupted(f"the run was {why} before it changed anything",
                                         exc.signum) from None
                raise
            snapshot.restore()
            _restore_aliases(settings, aliases_before, why)
            log.warning("pipeline.restored", data_version=data_version(dvc_file_for(raw)))
            if stopped or signals.received:
                signum = exc.signum if isinstance(exc, _Stopped) else signals.received[0]
                raise RunInterrupted(f"the run was {why}; the previous data version, layers and champion "
                                     f"were restored", signum) from None
            raise PipelineError(f"{exc}\nThe previous data version and layers were restored.") from exc
        if not report_path.is_file() or snapshot.unchanged(report_path):  # the register stage did not run
            return {"retrained": False, "data_version": data_version(dvc_file_for(raw)),
                    "champion": _champion(settings)}
        report = json.loads(report_path.read_text())
        signals.defer()  # the run is complete: the data rule is applied whole
        apply_rule(settings, report, snapshot.files)
        if not layers_follow_run(report):
            # the layers and dvc.lock go back with the raw table (as churn_training's publish does), so what
            # `features push` and `score` read next is the champion's data; this run's reports stay: they
            # say what was tried and why it was not kept
            snapshot.restore(keep=(settings.reports_dir, raw, dvc_file_for(raw)))
            log.warning("data.layers_kept_on_champion", rejected=report.get("data_version"))
    return {"retrained": True, **report}


def summarise_report(report: dict) -> str:
    """The run report in a few lines: data version, each candidate's hold-out metrics, the gate's decision."""
    if not report or report.get("retrained") is False:
        champion = report.get("champion")
        return ("nothing was retrained: DVC found the data, parameters and code unchanged since the last run"
                f" (data version {report.get('data_version') or '-'}, champion "
                f"{'v' + str(champion) if champion else 'none'}); `churnops train --force` retrains anyway")
    lines = [f"data version {report.get('data_version')}  rows {report.get('rows', {})}"]
    for issue in (report.get("validation") or {}).get("issues") or []:
        if issue.get("severity") == "warning" and issue.get("rule") not in ("extra_column",):
            lines.append(f"  validation warning: {issue.get('column') or '(table)'} {issue.get('rule')}")
    for name, metrics in (report.get("candidates") or {}).items():
        shown = "  ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float))
        lines.append(f"  {name:<20} {shown}")
    decision = report.get("promotion") or {}
    verdict = {"promoted": "PROMOTED", "undecided": "UNDECIDED (kept current champion)"}.get(
        decision.get("decision") or ("promoted" if decision.get("promoted") else ""), "kept current champion")
    lines.append(f"promotion: {verdict} - {decision.get('reason', '')}")
    check = report.get("data_check") or {}
    if check.get("flagged"):
        rate = check.get("label_rate") or {}
        moved = ", ".join(check.get("changes") or []) or "no feature"
        lines.append(f"FLAGGED: this table moved far from the champion v{check.get('champion')}'s: "
                     f"label rate {rate.get('champion_data')} -> {rate.get('this_run')}; {moved}")
    nxt = report.get("next_training_data") or {}
    if nxt:
        lines.append(f"next retraining uses data version {nxt.get('data_version')}: {nxt.get('why')}")
    return "\n".join(lines)
