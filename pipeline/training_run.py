"""The training run of the ``churn_training`` DAG: its workspace, its parameters, its commit point.

No Airflow here (``dags/`` is the only code that imports it): every function takes plain values and
returns JSON-able dicts, so each is testable alone and a DAG task is one call.

A training run (``churn_training``) works like ``churnops train`` (:func:`pipeline.run.run_training`) and
calls the same stage functions, with two differences that a multi-task run needs:

- **Run parameters.** The DAG run's configuration (data path, candidates, search budget, promotion margin)
  is merged into a copy of ``params.yaml`` written to the run's workspace ``data/runs/<run id>/params.yaml``;
  every task loads its settings from that file (:func:`run_settings`), so all tasks of a run see the same
  parameters and the file records exactly what the run used.
- **Staged layers.** In that settings file the validated layer, the gold layer and the reports point into
  the workspace, so the stages of a run never overwrite the project's current layers. The raw table is
  versioned in place (``dvc add`` + ``push``, like the CLI) after a snapshot of it and its ``.dvc`` file.

The commit point is the register stage (the promotion gate moves ``@champion`` or not); :func:`register`
keeps the registry's aliases first. Up to it, a failure restores the raw table and its ``.dvc`` file from
the snapshot and the aliases a failed register moved (:func:`restore_data`), and leaves the project's
layers and the feature store untouched. After it, :func:`publish` copies the run's reports into the project
(atomic file replaces) and, when the run's table is the one retraining uses next (its model was promoted:
:func:`pipeline.training_data.layers_follow_run`), its layers, whose features :func:`push_features` then
pushes; a run that was not promoted leaves the layers and the feature store on the champion's data.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from churnops.io import atomic_path, safe_run_id, same_content, write_json_atomic, write_text_atomic
from churnops.logs import get_logger
from churnops.settings import Settings, SettingsError, deep_merge, load_params, load_settings

log = get_logger(__name__)

RUNS_DIR = Path("data/runs")  # per-run workspaces, relative to the project home
ENV_SERVING_URL = "CHURNOPS_SERVING_URL"
ENV_SERVING_TOKEN = "CHURNOPS_SERVING_TOKEN"  # an operator token of serving, when it requires tokens


class TrainingRunError(RuntimeError):
    """A run could not be prepared or finished; the message says what and where."""


# -- run configuration ---------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainingConf:
    """The parameters of a training run (the DAG's params; None: the value in params.yaml)."""

    data_path: str | None = None
    candidates: list[str] | None = None
    search_iterations: int | None = None
    promotion_margin: float | None = None
    reason: str = "manual run"
    drift: dict[str, Any] | None = None  # the drift summary that triggered the run (churn_drift_monitor)

    @classmethod
    def from_conf(cls, conf: dict[str, Any] | None) -> TrainingConf:
        conf = dict(conf or {})
        data_path = conf.get("data_path") or None
        candidates = conf.get("candidates") or None
        if candidates is not None:
            if isinstance(candidates, str):
                candidates = [c.strip() for c in candidates.split(",") if c.strip()]
            if not isinstance(candidates, list) or not all(isinstance(c, str) for c in candidates):
                raise TrainingRunError(f"conf 'candidates' must be a list of names, not {candidates!r}")
            candidates = list(dict.fromkeys(candidates)) or None
        iters = conf.get("search_iterations")
        if iters is not None and (isinstance(iters, bool) or not isinstance(iters, int) or iters < 1):
            raise TrainingRunError(f"conf 'search_iterations' must be an integer >= 1, not {iters!r}")
        margin = conf.get("promotion_margin")
        if margin is not None and (
            isinstance(margin, bool) or not isinstance(margin, int | float) or margin < 0
        ):
            raise TrainingRunError(f"conf 'promotion_margin' must be a number >= 0, not {margin!r}")
        drift = conf.get("drift")
        return cls(
            data_path=str(data_path) if data_path else None,
            candidates=candidates,
            search_iterations=iters,
            promotion_margin=float(margin) if margin is not None else None,
            reason=str(conf.get("reason") or ("drift detected" if drift else "manual run")),
            drift=drift if isinstance(drift, dict) else None,
        )

    def overrides(self, base: dict[str, Any]) -> dict[str, Any]:
        """The params.yaml keys this configuration changes."""
        out: dict[str, Any] = {}
        train: dict[str, Any] = {}
        candidates = self.candidates or list((base.get("train") or {}).get("candidates") or [])
        if self.candidates:
            train["candidates"] = self.candidates
        if self.search_iterations is not None:
            train["search_iterations"] = {c: self.search_iterations for c in candidates}
        if train:
            out["train"] = train
        if self.promotion_margin is not None:
            out["register"] = {"promotion_margin": self.promotion_margin}
        return out


# -- the workspace -------------------------------------------------------------------------------
@dataclass
class RunContext:
    """Where a training run keeps its files; passed between tasks as a dict (:meth:`to_dict`)."""

    run_id: str
    home: str
    run_dir: str
    params_path: str
    conf: dict[str, Any]
    overrides: dict[str, Any]
    data_path: str | None
    reason: str
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> RunContext:
        return cls(**{k: doc[k] for k in cls.__dataclass_fields__ if k in doc})

    @property
    def dir(self) -> Path:
        return Path(self.run_dir)

    @property
    def snapshot_dir(self) -> Path:
        return self.dir / "snapshot"


def base_settings(home: Path | str | None = None) -> Settings:
    """The project's own settings (CHURNOPS_HOME / CHURNOPS_PARAMS), as the CLI loads them."""
    return load_settings(home=home)


def prepare_training_run(
    run_id: str, conf: dict[str, Any] | None, home: Path | str | None = None
) -> dict[str, Any]:
    """Create the run's workspace and its params file (params.yaml + the run's overrides + staged paths)."""
    project = base_settings(home)
    run_conf = TrainingConf.from_conf(conf)
    run_dir = project.path(RUNS_DIR) / safe_run_id(run_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    raw = copy.deepcopy(project.raw_params)
    overrides = run_conf.overrides(raw)
    staged = {
        "data": {
            "validated": str(run_dir / "validated" / Path(project.params.data.validated).name),
            "features_dir": str(run_dir / "features"),
            "reports_dir": str(run_dir / "reports"),
        }
    }
    params = deep_merge(deep_merge(raw, overrides), staged)
    params_path = run_dir / "params.yaml"
    header = (
        f"# churn_training run {run_id}: {project.params_path} with these overrides:\n"
        f"# {json.dumps(overrides)}\n# and the validated/gold layers and reports staged in this folder.\n"
    )
    write_text_atomic(params_path, header + yaml.safe_dump(params, sort_keys=False))
    try:  # a bad override fails here, naming the key, before any data is touched
        load_params(params_path)
    except SettingsError as exc:
        raise TrainingRunError(f"the run configuration {conf} gives invalid settings: {exc}") from exc
    data_path = None
    if run_conf.data_path:
        p = Path(run_conf.data_path)
        data_path = str(p if p.is_absolute() else project.home / p)
        if not Path(data_path).is_file():
            raise TrainingRunError(
                f"conf 'data_path': no file at {data_path} (paths are read on the Airflow "
                f"worker; relative ones from {project.home})"
            )
    ctx = RunContext(
        run_id=run_id,
        home=str(project.home),
        run_dir=str(run_dir),
        params_path=str(params_path),
        conf=dict(conf or {}),
        overrides=overrides,
        data_path=data_path,
        reason=run_conf.reason,
    )
    write_json_atomic(run_dir / "context.json", ctx.to_dict())
    log.info(
        "run.prepared",
        run_id=run_id,
        run_dir=str(run_dir),
        reason=run_conf.reason,
        overrides=json.dumps(overrides),
        data=data_path or "(current raw table)",
    )
    return ctx.to_dict()


def run_settings(ctx: dict[str, Any]) -> Settings:
    """The settings every task of the run uses (its params file; URIs from the environment)."""
    c = RunContext.from_dict(ctx)
    return load_settings(home=c.home, params_path=c.params_path)


# -- data version (before the commit point) ------------------------------------------------------
def _keep_copy(src: Path, dest: Path) -> None:
    """A real copy (never a hard link: `dvc add` rewrites the .dvc file in place)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest) as tmp:
        shutil.copy2(src, tmp)


def version_data(ctx: dict[str, Any]) -> dict[str, Any]:
    """Check the incoming table, snapshot the current raw table, put the new one in place, dvc add + push.

    Bad input raises :class:`pipeline.layers.StageError` before anything is touched.
    """
    from pipeline.layers import check_table
    from pipeline.versioning import add_and_push, data_version, dvc_file_for, ensure_remote, ensure_repo

    c = RunContext.from_dict(ctx)
    settings = run_settings(ctx)
    raw, home = settings.raw_path, settings.home
    incoming = Path(c.data_path) if c.data_path else None
    if incoming is not None:
        check_table(settings, incoming, report_dir=c.dir / "reports" / "incoming")
    elif not raw.is_file():
        raise TrainingRunError(
            f"no raw table at {raw} and no data_path in the run configuration: "
            f"give data_path (a CSV in the schema of params.yaml)"
        )
    ensure_repo(home)
    ensure_remote(home, settings.dvc_remote)
    dvc_file = dvc_file_for(raw)
    snap_file = c.snapshot_dir / "snapshot.json"
    if snap_file.is_file():  # a retry: the snapshot of the first attempt is the state before the run
        previous = json.loads(snap_file.read_text())["previous_data_version"]
    else:
        previous = data_version(dvc_file)
        snap = {
            "raw": str(raw),
            "dvc_file": str(dvc_file),
            "raw_existed": raw.is_file(),
            "dvc_existed": dvc_file.is_file(),
            "previous_data_version": previous,
        }
        if raw.is_file():
            _keep_copy(raw, c.snapshot_dir / "raw")
        if dvc_file.is_file():
            _keep_copy(dvc_file, c.snapshot_dir / "raw.dvc")
        write_json_atomic(snap_file, snap)
    changed = incoming is not None and not same_content(incoming, raw)
    if changed:
        assert incoming is not None
        with atomic_path(raw) as tmp:
            shutil.copyfile(incoming, tmp)
        log.info("data.ingested", source=str(incoming), raw=str(raw))
    version = add_and_push(home, raw, settings.dvc_remote)
    out = {
        "data_version": version,
        "previous_data_version": previous,
        "changed": version != previous,
        "raw": str(raw),
        "remote": settings.dvc_remote,
    }
    write_json_atomic(c.dir / "data_version.json", out)
    return out


def run_dir_for(run_id: str, home: Path | str | None = None) -> Path:
    return base_settings(home).path(RUNS_DIR) / safe_run_id(run_id)


ALIASES_FILE = "aliases.json"  # in the run's snapshot folder: the registry's aliases before `register`


def register(ctx: dict[str, Any]) -> dict[str, Any]:
    """The register stage (the commit point), with the registry's aliases kept first.

    The aliases before the stage are written to the run's snapshot (``aliases.json``), so that
    :func:`restore_data` can put back whatever a failed or killed stage moved. A retry finds that file and
    first puts the aliases back as they were before the run's first attempt, then registers again.
    """
    from churnops import registry
    from pipeline.modelling import register_stage

    c = RunContext.from_dict(ctx)
    settings = run_settings(ctx)
    kept = c.snapshot_dir / ALIASES_FILE
    if kept.is_file():  # a retry: undo what the failed attempt moved
        registry.restore_aliases(settings, json.loads(kept.read_text()),
                                 reason=f"churn_training run {c.run_id}: register retried")
    else:
        write_json_atomic(kept, registry.aliases(settings))
    return register_stage(settings)


def restore_data(run_id: str, home: Path | str | None = None) -> dict[str, Any]:
    """Put back the raw table and its .dvc file as they were before run `run_id` (after a failure), and the
    registry's aliases when a failed or killed register stage moved them (@champion by a recorded rollback:
    :func:`churnops.registry.restore_aliases`, the mechanism `churnops train` uses too).

    Works from the run id alone, so it also runs when the run failed before its workspace was complete.
    """
    run_dir = run_dir_for(run_id, home)
    snapshot_dir = run_dir / "snapshot"
    snap_file = snapshot_dir / "snapshot.json"
    if not snap_file.is_file():
        log.info("run.restore", run_id=run_id, action="nothing to restore: the raw table was not touched")
        return {"restored": False}
    snap = json.loads(snap_file.read_text())
    for key, existed, copy_name in (
        ("raw", snap["raw_existed"], "raw"),
        ("dvc_file", snap["dvc_existed"], "raw.dvc"),
    ):
        dest = Path(snap[key])
        if existed:
            with atomic_path(dest) as tmp:
                shutil.copyfile(snapshot_dir / copy_name, tmp)
        else:
            dest.unlink(missing_ok=True)
    log.warning("run.restored", run_id=run_id, raw=snap["raw"], data_version=snap["previous_data_version"])
    out: dict[str, Any] = {"restored": True, "data_version": snap["previous_data_version"]}
    kept = snapshot_dir / ALIASES_FILE
    if kept.is_file():  # the register stage started: put back what it moved (raises: the task retries)
        from churnops import registry

        params = run_dir / "params.yaml"
        settings = load_settings(home=home, params_path=params) if params.is_file() else base_settings(home)
        out["aliases"] = registry.restore_aliases(
            settings, json.loads(kept.read_text()), reason=f"churn_training run {run_id} failed: previous "
                                                           f"state restored")
    return out


# -- after the commit point ----------------------------------------------------------------------
def publish(ctx: dict[str, Any]) -> dict[str, Any]:
    """Copy the run's reports into the project, and its validated and gold layers when its table is the one
    retraining uses next (each file atomically); then apply the training-data rule
    (:mod:`pipeline.training_data`): a run that was not promoted leaves the project's layers as they were
    and puts the raw table back to the champion's data version."""
    from pipeline.training_data import apply_rule, layers_follow_run
    from pipeline.versioning import dvc_file_for

    c = RunContext.from_dict(ctx)
    run = run_settings(ctx)
    project = base_settings(c.home)
    report = json.loads((run.reports_dir / "run_report.json").read_text())
    layers: list[tuple[Path, Path]] = [(run.validated_path, project.validated_path)]
    for name in ("customers.parquet", "train.parquet", "test.parquet"):
        layers.append((run.features_dir / name, project.features_dir / name))
    reports: list[tuple[Path, Path]] = []
    for src in sorted(p for p in run.reports_dir.rglob("*") if p.is_file()):
        rel = src.relative_to(run.reports_dir)
        if rel.parts[0] == "incoming":
            continue
        reports.append((src, project.reports_dir / rel))
    missing = [str(s) for s, _ in layers + reports if not s.is_file()]
    if missing:
        raise TrainingRunError(f"the run's workspace lacks {missing}: the stages did not all run")
    follow = layers_follow_run(report)
    pairs = (layers if follow else []) + reports
    for src, dest in pairs:
        with atomic_path(dest) as tmp:
            shutil.copyfile(src, tmp)
    nxt = report.get("next_training_data") or {}
    if follow:
        log.info("run.published", run_id=c.run_id, files=len(pairs), gold=str(project.features_dir))
    else:
        log.warning("run.layers_kept", run_id=c.run_id, reports=len(pairs),
                    data_version=nxt.get("data_version"), rejected=report.get("data_version"),
                    note="the project's layers and feature store stay on the champion's data")
    snap = c.snapshot_dir
    before = {project.raw_path: snap / "raw", dvc_file_for(project.raw_path): snap / "raw.dvc"}
    apply_rule(project, report, {k: v if v.is_file() else None for k, v in before.items()})
    return {
        "layers": follow,
        "next_training_data": nxt.get("data_version"),
        "why": nxt.get("why"),
        "files": len(pairs),
        "validated": str(project.validated_path),
        "features_dir": str(project.features_dir),
        "reports_dir": str(project.reports_dir),
    }


def push_features(ctx: dict[str, Any], published: dict[str, Any]) -> dict[str, Any]:
    """Push the run's gold layer (transactions: the current features) to the Redis feature store (atomic
    version switch), when :func:`publish` published it; otherwise the store stays on the champion's data,
    untouched."""
    from churnops.feature_store import FeatureStore

    if not published.get("layers"):
        log.info("features.kept", run_id=RunContext.from_dict(ctx).run_id,
                 data_version=published.get("next_training_data"))
        return {"pushed": False, "reason": "the run's model was not promoted: the feature store keeps the "
                                           "champion's data"}
    settings = run_settings(ctx)
    store = FeatureStore.from_settings(settings)
    result = store.push_current(settings)
    return {"pushed": True, **result.to_dict()}


def notify_serving(
    settings: Settings,
    version: str | None,
    url: str | None = None,
    timeout_s: float | None = None,
    poll_s: float = 1.0,
) -> dict[str, Any]:
    """Wait until serving reports `version` on GET /model (CHURNOPS_SERVING_URL); a timeout is a warning.

    Serving polls the registry every ``serving.reload_interval_s``: nothing is pushed to it, this only
    confirms the switch. Without CHURNOPS_SERVING_URL it logs that serving will pick the champion up.
    When serving requires tokens, CHURNOPS_SERVING_TOKEN holds one of its operator tokens.
    """
    import requests

    url = url if url is not None else os.environ.get(ENV_SERVING_URL)
    interval = settings.params.serving.reload_interval_s
    if version is None:
        return {"status": "no_champion"}
    if not url:
        log.info(
            "serving.not_configured",
            champion=version,
            note=f"serving picks @champion up within {interval:.0f} s (set {ENV_SERVING_URL} to confirm)",
        )
        return {"status": "not_checked", "champion": version, "reload_interval_s": interval}
    timeout_s = timeout_s if timeout_s is not None else max(30.0, 3 * interval)
    token = os.environ.get(ENV_SERVING_TOKEN)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    deadline = time.monotonic() + timeout_s
    seen: str | None = None
    error: str | None = None
    while True:
        try:
            resp = requests.get(url.rstrip("/") + "/model", headers=headers, timeout=5)
            if resp.status_code == 200:
                seen = str(resp.json().get("version"))
                error = None
                if seen == str(version):
                    log.info("serving.confirmed", url=url, version=seen)
                    return {"status": "confirmed", "champion": version, "serving_version": seen, "url": url}
            else:
                error = f"HTTP {resp.status_code}"
        except (requests.RequestException, ValueError) as exc:
            error = str(exc)
        if time.monotonic() > deadline:
            log.warning(
                "serving.not_confirmed",
                url=url,
                champion=version,
                serving_version=seen,
                error=error,
                waited_s=timeout_s,
            )
            return {
                "status": "timeout",
                "champion": version,
                "serving_version": seen,
                "url": url,
                "error": error,
            }
        time.sleep(poll_s)


def finish_run(ctx: dict[str, Any], results: dict[str, Any]) -> dict[str, Any]:
    """The run report: the pipeline's run report plus what the DAG run did; kept in the workspace."""
    c = RunContext.from_dict(ctx)
    run = run_settings(ctx)
    pipeline_report_path = run.reports_dir / "run_report.json"
    pipeline_report = json.loads(pipeline_report_path.read_text()) if pipeline_report_path.is_file() else {}
    report = {
        "run_id": c.run_id,
        "reason": c.reason,
        "conf": c.conf,
        "overrides": c.overrides,
        "started_at": c.created_at,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **{k: v for k, v in results.items() if v is not None},
        "next_training_data": pipeline_report.get("next_training_data"),
        "pipeline": pipeline_report,
    }
    write_json_atomic(c.dir / "run_report.json", report)
    promotion = pipeline_report.get("promotion") or {}
    log.info(
        "run.done",
        run_id=c.run_id,
        data_version=pipeline_report.get("data_version"),
        registered=pipeline_report.get("registered_version"),
        promoted=promotion.get("promoted"),
        champion=pipeline_report.get("champion"),
        reason=promotion.get("reason"),
    )
    return report


def clean_staged_layers(ctx: dict[str, Any]) -> None:
    """Drop the run's staged copies of the layers once published (params, reports and report stay)."""
    c = RunContext.from_dict(ctx)
    for sub in ("validated", "features", "snapshot"):
        shutil.rmtree(c.dir / sub, ignore_errors=True)
