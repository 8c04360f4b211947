"""The model registry: the contract between training and serving.

Registered model ``register.model_name`` (default ``churn-classifier``; ``transactions.model_name`` with
``source: transactions``) with aliases (never stages):

- ``@challenger``: the best candidate of the latest training run;
- ``@champion``:   what serving loads; moved only by the promotion gate or by :func:`rollback`;
- ``@previous``:   the champion that the current champion replaced (what a rollback returns to).

Each version carries tags ``candidate``, ``data_version``, ``git_commit``, ``params_hash``, ``threshold``
and ``metric.<name>`` for each hold-out metric (set by :func:`register`), ``previous_champion`` (the
version it replaced when it became champion) and ``promotion.*`` / ``rollback.*`` decision records.

The promotion gate (:func:`promote`) re-scores the current champion's model on the *current* hold-out
and compares ``register.metric`` with the challenger's score on the same rows, pairwise
(:mod:`churnops.models.comparison`: DeLong's test for ROC-AUC, a paired bootstrap otherwise): the challenger
is promoted only if its gain is at least ``register.promotion_margin`` and significant (the
``1 - register.significance`` confidence interval of the difference lies above zero). With fewer than
``register.min_positives`` positives (or negatives) in the hold-out the gate refuses to decide and the
champion stays. With no champion yet the challenger is promoted; if the champion cannot score the current
data (the schema changed) it is promoted with that reason. The decision (``promoted``, ``kept`` or
``undecided``, with the difference, its interval and p-value) is returned, logged and recorded as tags on the
challenger version and the training's parent run.

A training run that fails or is stopped after its register step moved aliases puts them back:
:func:`aliases` before the step, :func:`restore_aliases` after the failure (``churnops train`` and the
``churn_training`` DAG both do).

Loading resolves ``@champion`` to a version once and then loads ``models:/<name>/<version>``, so an alias
that moves meanwhile cannot mix versions.

Integrity: :func:`register` checks the stored model files against the SHA-256 digests that training
recorded on the run (:mod:`churnops.integrity`) and copies them to the version's tags ``model_sha256`` and
``model_files`` (and ``outliers_sha256`` for the outlier detector). :func:`load_version` downloads the
version once, verifies that folder and only then reads it (:mod:`churnops.model_format`: no pickle). A
mismatch, or a version without a digest, raises :class:`~churnops.integrity.IntegrityError` and is
recorded on the version as tags ``integrity.*`` (when, where, what differed): the event that
``monitoring`` turns into an alert (:func:`integrity_failures`). A later load of the same version that
verifies again clears them.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from churnops.logs import get_logger
from churnops.redaction import redact_url
from churnops.settings import Settings

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from churnops.models.training import TrainingResult
    from churnops.outliers import Anomaly
    from churnops.scoring import Scorer

log = get_logger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS = "previous"
TAG_THRESHOLD = "threshold"
TAG_PREVIOUS_CHAMPION = "previous_champion"
TAG_CHAMPION_SINCE = "champion_since"
METRIC_TAG_PREFIX = "metric."
TAG_MODEL_SHA256 = "model_sha256"  # churnops.integrity.manifest_digest of the version's model files
TAG_MODEL_FILES = "model_files"  # path -> SHA-256 (JSON), so a mismatch can name the file
TAG_OUTLIERS_SHA256 = "outliers_sha256"  # SHA-256 of the run's outlier detector (.npz)
INTEGRITY_TAG_PREFIX = "integrity."  # refused_at, refused_by, error, found_sha256: the last refusal


class RegistryError(RuntimeError):
    """The registry is not in the state an operation needs; the message says what to do."""


class NoChampionError(RegistryError):
    """No version holds the ``@champion`` alias yet."""


@dataclass(frozen=True)
class PromotionDecision:
    promoted: bool
    reason: str
    metric: str  # hold-out metric compared (roc_auc, pr_auc, f1, ...)
    margin: float
    challenger_version: str
    challenger_score: float
    champion_version: str | None  # the champion when the gate ran (None: there was none)
    champion_score: float | None  # None: no champion, or it could not score the current hold-out
    rows: int  # hold-out rows both were scored on
    decision: str = "kept"  # "promoted", "kept" (the champion stays) or "undecided" (too few positives)
    positives: int | None = None  # hold-out rows of the positive class
    comparison: dict[str, Any] | None = None  # PairedComparison.to_dict(): difference, ci, p-value, method

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RollbackResult:
    from_version: str
    to_version: str
    reason: str
    previous: str | None  # what @previous points at afterwards

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ChampionModel:
    """A registered version loaded for scoring (native sklearn flavour)."""

    version: str
    run_id: str
    scorer: Scorer
    info: dict[str, Any]
    outliers: Any = None  # churnops.outliers.OutlierDetector logged with the run (None for older runs)

    @property
    def threshold(self) -> float:
        return self.scorer.threshold

    def score_records(self, records: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, list[Anomaly] | None]:
        """Churn probabilities and anomalies of validated rows, encoding them once when the outlier detector
        and the model share an encoding (they do when both come from the same schema)."""
        encoded = self.scorer.encoder.encode_records(records)
        proba = self.scorer.predict_proba_encoded(encoded)
        detector = self.outliers
        if detector is None:
            return proba, None
        if self._shares_encoding:
            return proba, detector.score_encoded(encoded)
        return proba, detector.score_records(records)

    @cached_property
    def _shares_encoding(self) -> bool:
        return self.outliers is not None and self.outliers.encoder.same_encoding(self.scorer.encoder)


# -- plumbing ------------------------------------------------------------------------------------
def _name(settings: Settings) -> str:
    return settings.model_name


def _client(settings: Settings) -> MlflowClient:
    """A client for the configured store; also points mlflow's loaders (models:/ URIs) at it."""
    import mlflow
    from mlflow import MlflowClient

    from churnops.tracking import quiet_downloads

    quiet_downloads()
    uri = settings.mlflow_tracking_uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _download(artifact_uri: str, dst: str) -> Path:
    import mlflow

    return Path(mlflow.artifacts.download_artifacts(artifact_uri=artifact_uri, dst_path=dst))


def _is_missing(exc: Exception) -> bool:
    return getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST"


def _aliases(client: MlflowClient, name: str) -> dict[str, str]:
    """alias -> version of the registered model ({} if the model is not registered yet)."""
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(name)
    except MlflowException as exc:
        if _is_missing(exc):
            return {}
        raise
    return {alias: str(version) for alias, version in (model.aliases or {}).items()}


def _version(client: MlflowClient, name: str, version: str | int) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(name, str(version))
    except MlflowException as exc:
        if _is_missing(exc):
            raise RegistryError(f"model {name!r} has no version {version} "
                                f"(`churnops models list` shows the versions)") from exc
        raise


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _ms_to_iso(ms: int | None) -> str | None:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds") if ms else None


def _version_info(mv: Any, aliases: dict[str, str] | None = None) -> dict[str, Any]:
    tags = dict(mv.tags or {})
    metrics = {k.removeprefix(METRIC_TAG_PREFIX): float(v) for k, v in tags.items()
               if k.startswith(METRIC_TAG_PREFIX)}
    if aliases is None:
        version_aliases = list(mv.aliases or [])
    else:
        version_aliases = sorted(a for a, v in aliases.items() if v == str(mv.version))
    threshold = tags.get(TAG_THRESHOLD)
    return {
        "name": mv.name,
        "version": str(mv.version),
        "aliases": version_aliases,
        "run_id": mv.run_id,
        "candidate": tags.get("candidate"),
        "metrics": metrics,
        "threshold": float(threshold) if threshold is not None else None,
        "data_version": tags.get("data_version"),
        "git_commit": tags.get("git_commit"),
        "params_hash": tags.get("params_hash"),
        "registered_at": _ms_to_iso(mv.creation_timestamp),
        "champion_since": tags.get(TAG_CHAMPION_SINCE),
        "previous_champion": tags.get(TAG_PREVIOUS_CHAMPION) or None,
        "promotion": {k.removeprefix("promotion."): v for k, v in tags.items() if k.startswith("promotion.")},
        "model_uri": f"models:/{mv.name}/{mv.version}",
        "model_sha256": tags.get(TAG_MODEL_SHA256),
        "integrity": {k.removeprefix(INTEGRITY_TAG_PREFIX): v for k, v in tags.items()
                      if k.startswith(INTEGRITY_TAG_PREFIX)},
        "source": mv.source,
        "status": mv.status,
    }


# -- registration --------------------------------------------------------------------------------
def register(settings: Settings, run_id: str, *, extra_tags: dict[str, str] | None = None) -> str:
    """Register the model logged by candidate run `run_id` as a new version; returns the version.

    The version's tags are read from the run (the single source of truth): candidate, data_version,
    git_commit, params_hash, threshold (param) and metric.<name> for each ``test_<name>`` metric.
    No alias moves here.
    """
    from mlflow.exceptions import MlflowException

    from churnops.tracking import TAG_MODEL_ID, TAG_MODEL_URI

    client = _client(settings)
    name = _name(settings)
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        where = redact_url(settings.mlflow_tracking_uri)
        raise RegistryError(f"no MLflow run {run_id!r} in {where}") from exc
    model_uri = run.data.tags.get(TAG_MODEL_URI)
    if not model_uri:
        raise RegistryError(f"run {run_id} logged no churnops model (tag {TAG_MODEL_URI} missing): "
                            f"register a candidate run, not the parent run")
    if "threshold" not in run.data.params:
        raise RegistryError(f"run {run_id} has no 'threshold' param: it was not logged by churnops training")
    tags = {
        "candidate": run.data.tags.get("candidate", ""),
        "data_version": run.data.tags.get("data_version", ""),
        "git_commit": run.data.tags.get("git_commit", ""),
        "params_hash": run.data.tags.get("params_hash", ""),
        TAG_THRESHOLD: run.data.params["threshold"],
        **{f"{METRIC_TAG_PREFIX}{k[5:]}": repr(float(v)) for k, v in run.data.metrics.items()
           if k.startswith("test_")},
        **_verified_digests(run, model_uri),
        **(extra_tags or {}),
    }
    try:
        client.create_registered_model(
            name, description="Churn classifier: probability that a customer leaves (churnops).")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    mv = client.create_model_version(name, source=model_uri, run_id=run_id, tags=tags,
                                     model_id=run.data.tags.get(TAG_MODEL_ID))
    log.info("registry.registered", model=name, version=mv.version, run_id=run_id,
             candidate=tags["candidate"])
    return str(mv.version)


def _verified_digests(run: Any, model_uri: str) -> dict[str, str]:
    """The digests training recorded on `run`, after checking the stored files against them."""
    from churnops import integrity, tracking

    run_tags = run.data.tags
    expected = run_tags.get(tracking.TAG_MODEL_SHA256)
    if not expected:
        raise RegistryError(f"run {run.info.run_id} recorded no SHA-256 of its model files (tag "
                            f"{tracking.TAG_MODEL_SHA256}): it was logged by an older churnops, as a pickle; "
                            f"retrain (`churnops train`) to register a model")
    files_text = run_tags.get(tracking.TAG_MODEL_FILES, "")
    out = {TAG_MODEL_SHA256: expected}
    if files_text and len(files_text) <= 5000:  # MLflow's limit for a tag value
        out[TAG_MODEL_FILES] = files_text
    with tempfile.TemporaryDirectory(prefix="churnops-register-") as tmp:
        integrity.verify(_download(model_uri, tmp), expected, integrity.decode_files(files_text),
                         what=f"run {run.info.run_id}'s model {model_uri}")
        outliers = run_tags.get(tracking.TAG_OUTLIERS_SHA256)
        if outliers:
            path = _download(f"runs:/{run.info.run_id}/{tracking.OUTLIER_ARTIFACT}", f"{tmp}/outliers")
            _check_file(path, outliers, what=f"run {run.info.run_id}'s {tracking.OUTLIER_ARTIFACT}")
            out[TAG_OUTLIERS_SHA256] = outliers
    return out


def _check_file(path: Path, expected: str, *, what: str) -> None:
    from churnops import integrity

    actual = integrity.sha256_file(path)
    if actual != expected:
        raise integrity.IntegrityError(
            f"{what}: the file does not match the SHA-256 recorded at registration (expected "
            f"{expected[:16]}…, found {actual[:16]}…): refused, nothing from it was loaded",
            expected=expected, actual=actual)


def set_challenger(settings: Settings, version: str) -> None:
    """Point ``@challenger`` at `version`."""
    client = _client(settings)
    _version(client, _name(settings), version)
    client.set_registered_model_alias(_name(settings), CHALLENGER, str(version))


# -- loading -------------------------------------------------------------------------------------
def champion_version(settings: Settings) -> str | None:
    """The version behind ``@champion``, or None. One registry query (serving's reload poll)."""
    return _aliases(_client(settings), _name(settings)).get(CHAMPION)


def version_info(settings: Settings, version: str) -> dict[str, Any]:
    """What the registry knows about `version`: run, candidate, metrics, threshold, data version, aliases."""
    client = _client(settings)
    return _version_info(_version(client, _name(settings), version))


def champion_info(settings: Settings) -> dict[str, Any] | None:
    """:func:`version_info` of the champion, or None when there is none."""
    client = _client(settings)
    version = _aliases(client, _name(settings)).get(CHAMPION)
    if version is None:
        return None
    return _version_info(_version(client, _name(settings), version))


def list_versions(settings: Settings) -> list[dict[str, Any]]:
    """Every registered version, newest first, with its aliases (:func:`version_info` dicts)."""
    client = _client(settings)
    name = _name(settings)
    aliases = _aliases(client, name)
    if not aliases and not _model_exists(client, name):
        return []
    versions = client.search_model_versions(f"name = '{name}'")
    infos = [_version_info(mv, aliases) for mv in versions]
    return sorted(infos, key=lambda d: int(d["version"]), reverse=True)


def _model_exists(client: MlflowClient, name: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if _is_missing(exc):
            return False
        raise
    return True


def load_version(settings: Settings, version: str) -> ChampionModel:
    """Load a registered version wrapped in a :class:`~churnops.scoring.Scorer`, after checking its files.

    The version is downloaded once, its files are checked against the SHA-256 recorded at registration,
    and the checked folder is read (:mod:`churnops.model_format`, which runs no code). A mismatch or a
    missing digest raises :class:`~churnops.integrity.IntegrityError` and is recorded on the version
    (``integrity.*`` tags) for the alert path.
    """
    from churnops import integrity
    from churnops.scoring import Scorer
    from churnops.tracking import load_verified_pipeline

    client = _client(settings)
    name = _name(settings)
    mv = _version(client, name, version)
    info = _version_info(mv)
    if info["threshold"] is None:
        raise RegistryError(f"model {name!r} version {version} has no 'threshold' tag: "
                            f"it was not registered by churnops")
    tags = dict(mv.tags or {})
    try:
        pipeline = load_verified_pipeline(f"models:/{name}/{mv.version}", tags.get(TAG_MODEL_SHA256),
                                          tags.get(TAG_MODEL_FILES),
                                          what=f"model {name!r} version {mv.version}")
        outliers = load_outlier_detector(settings, str(mv.version), run_id=mv.run_id,
                                         expected_sha256=tags.get(TAG_OUTLIERS_SHA256))
    except integrity.IntegrityError as exc:
        recorded = info["integrity"]
        if not recorded.get("refused_at") or recorded.get("found_sha256") != (exc.actual or ""):
            _record_refusal(client, name, str(mv.version), exc)  # the same refusal is recorded once
        raise
    if info["integrity"]:
        _clear_refusal(client, name, str(mv.version), info["integrity"])
    return ChampionModel(version=str(mv.version), run_id=mv.run_id,
                         scorer=Scorer(pipeline, threshold=info["threshold"]), info=info, outliers=outliers)


def _record_refusal(client: MlflowClient, name: str, version: str, exc: Exception) -> None:
    """Tag the refused version (the event monitoring alerts on). The refusal stands if this fails."""
    import os
    import socket

    tags = {"refused_at": _now(), "refused_by": f"{socket.gethostname()}:{os.getpid()}",
            "error": str(exc)[:4900], "found_sha256": getattr(exc, "actual", None) or ""}
    log.error("registry.integrity_refused", model=name, version=version, error=str(exc))
    try:
        for key, value in tags.items():
            client.set_model_version_tag(name, version, INTEGRITY_TAG_PREFIX + key, value)
    except Exception as record_exc:  # the registry refused the write: the log line above is the record
        log.error("registry.integrity_not_recorded", model=name, version=version, error=str(record_exc))


def _clear_refusal(client: MlflowClient, name: str, version: str, recorded: dict[str, str]) -> None:
    for key in recorded:
        client.delete_model_version_tag(name, version, INTEGRITY_TAG_PREFIX + key)
    log.info("registry.integrity_restored", model=name, version=version,
             refused_at=recorded.get("refused_at"))


def integrity_failures(settings: Settings) -> list[dict[str, Any]]:
    """Versions whose files failed their check when last loaded (``integrity.*`` tags), newest first."""
    return [v for v in list_versions(settings) if v["integrity"].get("refused_at")]


def load_champion(settings: Settings) -> ChampionModel:
    """Resolve ``@champion`` once and load that version; NoChampionError when there is none."""
    version = champion_version(settings)
    if version is None:
        raise NoChampionError(
            f"model {_name(settings)!r} has no @{CHAMPION} in {redact_url(settings.mlflow_tracking_uri)}: "
            f"train and register one first (`churnops train`)"
        )
    return load_version(settings, version)


def load_reference(settings: Settings, version: str) -> pd.DataFrame:
    """The training reference sample (raw feature columns) logged with `version`'s run, for drift checks."""
    import mlflow

    from churnops.tracking import REFERENCE_ARTIFACT

    client = _client(settings)
    mv = _version(client, _name(settings), version)
    with tempfile.TemporaryDirectory(prefix="churnops-ref-") as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(
                run_id=mv.run_id, artifact_path=REFERENCE_ARTIFACT, dst_path=tmp,
                tracking_uri=settings.mlflow_tracking_uri)
        except Exception as exc:
            raise RegistryError(f"version {version} (run {mv.run_id}) has no {REFERENCE_ARTIFACT} artifact "
                                f"or it cannot be read: {exc}") from exc
        return pd.read_parquet(path)


def load_outlier_detector(settings: Settings, version: str, run_id: str | None = None,
                          expected_sha256: str | None = None):
    """The Isolation Forest logged with a version's run (churnops.outliers.OutlierDetector), or None when
    the run predates it (then callers can fit one on :func:`load_reference`). With `expected_sha256` the
    downloaded file is checked first (IntegrityError on a mismatch, or when the file is gone)."""
    import mlflow

    from churnops import integrity
    from churnops.outliers import OutlierDetector
    from churnops.tracking import OUTLIER_ARTIFACT

    client = _client(settings)
    run_id = run_id or _version(client, _name(settings), version).run_id
    folder = OUTLIER_ARTIFACT.rsplit("/", 1)[0]
    if OUTLIER_ARTIFACT not in {a.path for a in client.list_artifacts(run_id, folder)}:
        if expected_sha256:
            raise integrity.IntegrityError(f"version {version}: {OUTLIER_ARTIFACT} was registered with the "
                                           f"model and is gone from run {run_id}: refused")
        return None
    with tempfile.TemporaryDirectory(prefix="churnops-outliers-") as tmp:
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=OUTLIER_ARTIFACT,
                                                   dst_path=tmp, tracking_uri=settings.mlflow_tracking_uri)
        if expected_sha256:
            _check_file(Path(path), expected_sha256, what=f"version {version}'s {OUTLIER_ARTIFACT}")
        return OutlierDetector.load(path)


# -- the promotion gate --------------------------------------------------------------------------
def _score(model: ChampionModel, X: pd.DataFrame, y: np.ndarray, metric: str  # noqa: N803
           ) -> tuple[float, np.ndarray]:
    """(the hold-out metric, the probabilities it was computed from)."""
    from churnops.models.evaluation import classification_metrics

    proba = model.scorer.predict_proba_frame(X)
    return classification_metrics(y, proba, model.threshold)[metric], proba


def evaluate_gate(settings: Settings, challenger_version: str, test_df: pd.DataFrame) -> PromotionDecision:
    """Decide (without moving any alias) whether `challenger_version` should replace the champion.

    Both models are scored on `test_df` (the current hold-out, gold layer), each at its own threshold.
    """
    from churnops.models.evaluation import metric_key
    from churnops.models.training import split_features

    cfg = settings.params.register_
    metric = metric_key(cfg.metric)
    X, y = split_features(test_df, settings.schema, source="hold-out for the promotion gate")  # noqa: N806
    challenger = load_version(settings, challenger_version)
    challenger_score, challenger_proba = _score(challenger, X, y, metric)
    champion = champion_version(settings)
    common = {"metric": metric, "margin": cfg.promotion_margin, "challenger_version": challenger.version,
              "challenger_score": challenger_score, "champion_version": champion, "rows": len(X)}
    if champion is None:
        return PromotionDecision(promoted=True, champion_score=None, decision="promoted",
                                 reason="no champion yet: the first model becomes champion", **common)
    if champion == challenger.version:
        return PromotionDecision(promoted=False, champion_score=challenger_score,
                                 reason=f"version {champion} already is the champion", **common)
    current = load_version(settings, champion)
    try:
        champion_score, champion_proba = _score(current, X, y, metric)
    except (KeyError, ValueError, TypeError, IndexError) as exc:
        return PromotionDecision(
            promoted=True, champion_score=None, decision="promoted",
            reason=(f"champion v{champion} cannot score the current hold-out "
                    f"(schema changed?): {type(exc).__name__}: {exc}"),
            **common,
        )
    positives, negatives = int(np.sum(y == 1)), int(np.sum(y == 0))
    common["positives"] = positives
    if min(positives, negatives) < cfg.min_positives:
        return PromotionDecision(
            promoted=False, champion_score=champion_score, decision="undecided",
            reason=(f"undecided: the hold-out has {positives} positive and {negatives} negative rows, fewer "
                    f"than register.min_positives {cfg.min_positives} of a class: too few to tell "
                    f"challenger v{challenger.version} ({challenger_score:.5f}) from champion v{champion} "
                    f"({champion_score:.5f}) on {metric}; the champion stays (retrain on more data)"),
            **common)
    from churnops.models.comparison import compare_paired

    cmp = compare_paired(np.asarray(y), challenger_proba, champion_proba, metric,
                         thresholds=(challenger.threshold, current.threshold), level=cfg.significance,
                         rounds=cfg.bootstrap_rounds, seed=settings.params.train.seed)
    gain = challenger_score - champion_score
    confidence = f"{1 - cfg.significance:.0%}"
    evidence = (f"{metric} {challenger_score:.5f} vs {champion_score:.5f}, difference {gain:+.5f}, "
                f"{confidence} CI [{cmp.ci_low:+.5f}, {cmp.ci_high:+.5f}], p = {cmp.p_value:.3g} "
                f"({cmp.method}, {positives} positives)")
    if cmp.significant and gain >= cfg.promotion_margin:
        reason = (f"challenger v{challenger.version} beats champion v{champion} on the hold-out: {evidence}; "
                  f"significant and >= margin {cfg.promotion_margin}")
        promoted = True
    else:
        why = ("the gain is within the hold-out's noise (the interval reaches 0)" if not cmp.significant
               else f"the gain is below the margin {cfg.promotion_margin}")
        reason = (f"challenger v{challenger.version} does not beat champion v{champion} on the hold-out: "
                  f"{evidence}; {why}")
        promoted = False
    return PromotionDecision(promoted=promoted, champion_score=champion_score, reason=reason,
                             decision="promoted" if promoted else "kept", comparison=cmp.to_dict(), **common)


def _record_decision(client: MlflowClient, name: str, decision: PromotionDecision,
                     parent_run_id: str | None) -> None:
    tags = {
        "promotion.promoted": str(decision.promoted).lower(),
        "promotion.reason": decision.reason[:4900],
        "promotion.metric": decision.metric,
        "promotion.challenger_score": repr(decision.challenger_score),
        "promotion.champion_version": decision.champion_version or "",
        "promotion.champion_score": "" if decision.champion_score is None else repr(decision.champion_score),
        "promotion.decided_at": _now(),
        "promotion.decision": decision.decision,
    }
    for key, value in (decision.comparison or {}).items():
        tags[f"promotion.{key}"] = repr(value) if isinstance(value, float) else str(value)
    stale = [k for k in _version(client, name, decision.challenger_version).tags or {}
             if k.startswith("promotion.") and k not in tags]  # an earlier decision's comparison
    for key in stale:
        client.delete_model_version_tag(name, decision.challenger_version, key)
    for key, value in tags.items():
        client.set_model_version_tag(name, decision.challenger_version, key, value)
    if parent_run_id:
        for key, value in {**tags, "promotion.challenger_version": decision.challenger_version}.items():
            client.set_tag(parent_run_id, key, value)


def promote(
    settings: Settings, challenger_version: str, test_df: pd.DataFrame, *, parent_run_id: str | None = None
) -> PromotionDecision:
    """Run the gate; if it passes, move ``@champion`` to the challenger (``@previous`` to the old one).

    The decision is recorded as ``promotion.*`` tags on the challenger version and on `parent_run_id`
    (default: the parent of the version's run).
    """
    client = _client(settings)
    name = _name(settings)
    decision = evaluate_gate(settings, challenger_version, test_df)
    if parent_run_id is None:
        run = client.get_run(_version(client, name, challenger_version).run_id)
        parent_run_id = run.data.tags.get("mlflow.parentRunId")
    if decision.promoted:
        now_champion = _aliases(client, name).get(CHAMPION)
        if now_champion != decision.champion_version:
            raise RegistryError(
                f"@{CHAMPION} moved from {decision.champion_version} to {now_champion} while the gate ran; "
                f"nothing was changed: run the promotion again"
            )
        old = decision.champion_version
        client.set_model_version_tag(name, decision.challenger_version, TAG_PREVIOUS_CHAMPION, old or "")
        client.set_model_version_tag(name, decision.challenger_version, TAG_CHAMPION_SINCE, _now())
        client.set_registered_model_alias(name, CHAMPION, decision.challenger_version)
        if old:
            client.set_registered_model_alias(name, PREVIOUS, old)
        else:
            client.delete_registered_model_alias(name, PREVIOUS)
    _record_decision(client, name, decision, parent_run_id)
    log.info("registry.promotion", model=name, **decision.to_dict())
    return decision


def register_best(settings: Settings, result: TrainingResult, test_df: pd.DataFrame) -> PromotionDecision:
    """Register the training run's best candidate, make it ``@challenger``, and run :func:`promote`."""
    version = register(settings, result.best.run_id)
    set_challenger(settings, version)
    _client(settings).set_tag(result.parent_run_id, "registered_version", version)
    return promote(settings, version, test_df, parent_run_id=result.parent_run_id)


# -- restoring a run's aliases -------------------------------------------------------------------
def aliases(settings: Settings) -> dict[str, str]:
    """alias -> version of the registered model ({} before the first registration): a snapshot that
    :func:`restore_aliases` puts back."""
    return _aliases(_client(settings), _name(settings))


def restore_aliases(settings: Settings, before: Mapping[str, str], reason: str) -> dict[str, str | None]:
    """Put every alias back where `before` (a snapshot of :func:`aliases`) had it, after a training run that
    failed or was stopped once it had moved some; return alias -> the version it points at again (None:
    removed, it did not exist before).

    ``@champion`` goes back through :func:`rollback` (recorded as ``rollback.*`` tags, like an operator's
    rollback); a champion that did not exist before is removed. The other aliases (``@challenger``,
    ``@previous``) are set, or removed, to match `before`. Aliases that did not move are not touched.
    """
    client = _client(settings)
    name = _name(settings)
    moved = now = _aliases(client, name)
    champion = before.get(CHAMPION)
    if now.get(CHAMPION) != champion:
        if champion is None:
            client.delete_registered_model_alias(name, CHAMPION)
            log.warning("registry.champion_removed", model=name, version=now.get(CHAMPION), reason=reason)
        elif now.get(CHAMPION) is None:  # nothing to roll back from
            client.set_registered_model_alias(name, CHAMPION, champion)
        else:
            rollback(settings, to_version=champion, reason=reason)
        now = _aliases(client, name)
    for alias in sorted((set(now) | set(before)) - {CHAMPION}):
        if now.get(alias) == before.get(alias):
            continue
        if alias in before:
            client.set_registered_model_alias(name, alias, before[alias])
        else:
            client.delete_registered_model_alias(name, alias)
    restored = {alias: before.get(alias) for alias in sorted(set(moved) | set(before))
                if moved.get(alias) != before.get(alias)}
    if restored:
        log.warning("registry.aliases_restored", model=name, reason=reason,
                    **{alias: version or "(removed)" for alias, version in restored.items()})
    return restored


# -- rollback ------------------------------------------------------------------------------------
def rollback(settings: Settings, to_version: str | None = None, reason: str | None = None) -> RollbackResult:
    """Move ``@champion`` back: to the version the champion replaced (default) or to `to_version`.

    The step is recorded as ``rollback.*`` tags on both versions and as the registered model's
    ``last_rollback`` tag. ``@previous`` then points at the new champion's own predecessor (if any), so
    repeated rollbacks walk back through the champion history.
    """
    client = _client(settings)
    name = _name(settings)
    current = _aliases(client, name).get(CHAMPION)
    if current is None:
        raise NoChampionError(f"model {name!r} has no @{CHAMPION} to roll back")
    if to_version is None:
        target = (_version(client, name, current).tags or {}).get(TAG_PREVIOUS_CHAMPION) or None
        if target is None:
            raise RegistryError(f"champion v{current} replaced no earlier champion: name the version to roll "
                                f"back to (`churnops models rollback --to VERSION`)")
    else:
        target = str(to_version)
    target_mv = _version(client, name, target)
    if target == current:
        raise RegistryError(f"version {target} already is the champion")
    if (target_mv.tags or {}).get(TAG_THRESHOLD) is None:
        raise RegistryError(f"version {target} was not registered by churnops (no threshold tag)")
    reason = reason or "manual rollback"
    when = _now()
    new_previous = (target_mv.tags or {}).get(TAG_PREVIOUS_CHAMPION) or None
    client.set_registered_model_alias(name, CHAMPION, target)
    if new_previous and new_previous != target:
        client.set_registered_model_alias(name, PREVIOUS, new_previous)
    else:
        client.delete_registered_model_alias(name, PREVIOUS)
        new_previous = None
    for key, value in {"rollback.replaced_by": target, "rollback.reason": reason[:4900],
                       "rollback.at": when}.items():
        client.set_model_version_tag(name, current, key, value)
    for key, value in {"rollback.restored_from": current, "rollback.reason": reason[:4900],
                       "rollback.at": when, TAG_CHAMPION_SINCE: when}.items():
        client.set_model_version_tag(name, target, key, value)
    client.set_registered_model_tag(name, "last_rollback", json.dumps(
        {"from": current, "to": target, "reason": reason, "at": when}))
    result = RollbackResult(from_version=current, to_version=target, reason=reason, previous=new_previous)
    log.info("registry.rollback", model=name, **result.to_dict())
    return result
