"""The champion model, loaded once and swapped without a restart.

:class:`ModelHolder` keeps one reference to an immutable loaded model (``churnops.registry.ChampionModel``).
A request reads :attr:`ModelHolder.current` once and uses that object to the end, so a swap never changes
the model under a request in flight. A background thread asks the registry every
``serving.reload_interval_s`` which version holds ``@champion`` (one cheap query); only when it changed is
the new version loaded, checked on a sample row, and then published by a single reference assignment. A
failed load keeps the current model serving and is retried at the next check.

Loading goes through :func:`churnops.registry.load_version`: the version's files are checked against the
SHA-256 recorded at registration before anything is read, and are read as data (no pickle). A version
whose files differ is refused: outcome ``integrity_failed`` (``churnops_model_checks_total``), an error
log line ``model.check_failed``, ``/health`` degraded with the reason, and the refusal recorded on the
version in the registry (``integrity.*`` tags), where monitoring finds it (monitoring/integrity.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from churnops.integrity import IntegrityError
from churnops.logs import get_logger
from churnops.redaction import redact_text, redact_url
from churnops.settings import SchemaSettings, Settings

log = get_logger(__name__)


def sample_record(schema: SchemaSettings) -> dict[str, Any]:
    """A valid row (each numeric at its lower bound or 0, the first category) to check a loaded model."""
    row: dict[str, Any] = {}
    for col, spec in schema.numeric.items():
        value = spec.min if spec.min is not None else 0.0
        row[col] = int(value) if spec.integer else float(value)
    for col, cats in schema.categorical.items():
        row[col] = cats[0]
    return row


class ModelHolder:
    def __init__(self, settings: Settings, *, interval_s: float | None = None,
                 champion_version: Callable[[Settings], str | None] | None = None,
                 load_champion: Callable[[Settings], Any] | None = None,
                 on_change: Callable[[Any, Any], None] | None = None,
                 on_check: Callable[[str], None] | None = None) -> None:
        if champion_version is None or load_champion is None:
            from churnops import registry

            champion_version = champion_version or registry.champion_version
            load_champion = load_champion or registry.load_champion
        self.settings = settings
        self.interval_s = interval_s if interval_s is not None else settings.params.serving.reload_interval_s
        self._champion_version = champion_version
        self._load_champion = load_champion
        self._on_change = on_change
        self._on_check = on_check
        self._sample = sample_record(settings.schema)
        self._current: Any = None
        self._check_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_check: float | None = None
        self.last_error: str | None = None
        self.loaded_at: float | None = None
        self.load_s: float | None = None  # the served version's load: download, check, compile
        # the last champion version this worker refused for its files ({version, error, at}); kept while
        # that refusal stands, cleared when a model loads
        self.last_refusal: dict[str, Any] | None = None

    @property
    def current(self) -> Any:
        """The model to use for one request (read it once per request)."""
        return self._current

    def check(self) -> bool:
        """Ask the registry for the champion and load it if it changed. True when a new model was published.

        Errors are logged and remembered in :attr:`last_error`; the current model keeps serving.
        """
        with self._check_lock:
            self.last_check = time.time()
            try:
                version = self._champion_version(self.settings)
            except Exception as exc:  # registry unreachable: keep serving what is loaded
                where = redact_url(self.settings.mlflow_tracking_uri)
                self._failed("registry", f"cannot read the registry at {where}: {exc}")
                return False
            current = self._current
            if version is None:
                if current is None:
                    self._failed("no_champion", "no model holds @champion yet: train and promote one "
                                                "(churnops train); the server keeps checking")
                else:
                    self._failed("no_champion", f"@champion was removed from the registry; still serving "
                                                f"version {current.version}")
                return False
            if current is not None and str(version) == str(current.version):
                self.last_error = None
                if self._on_check:
                    self._on_check("unchanged")
                return False
            started = time.monotonic()
            try:
                model = self._load_champion(self.settings)
                model.scorer.predict_proba_records([self._sample])  # proves it scores; warms it up
            except IntegrityError as exc:  # tampered or unverifiable files: refused, nothing was read
                kept = f"; still serving version {current.version}" if current is not None else ""
                self._failed("integrity_failed", f"refused champion version {version}: {exc}{kept}")
                self.last_refusal = {"version": str(version), "error": redact_text(str(exc)),
                                     "at": self.last_check}
                return False
            except Exception as exc:
                self._failed("load_failed", f"cannot load champion version {version}: {exc}",
                             exc_info=True)
                return False
            self._current = model  # the swap: one reference assignment
            self.loaded_at = time.time()
            self.load_s = time.monotonic() - started
            self.last_error = None
            self.last_refusal = None
            log.info("model.loaded", version=model.version, run_id=model.run_id,
                     previous=getattr(current, "version", None), kind=model.scorer.kind,
                     load_s=round(self.load_s, 3))
            if self._on_check:
                self._on_check("loaded")
            if self._on_change:
                self._on_change(current, model)
            return True

    def _failed(self, outcome: str, message: str, exc_info: bool = False) -> None:
        message = redact_text(message)  # it reaches /health, /model, the 503s and the log
        if message != self.last_error:  # log each new problem once, not every interval
            log.error("model.check_failed", outcome=outcome, error=message, exc_info=exc_info)
        self.last_error = message
        if self._on_check:
            self._on_check(outcome)

    # -- background reload -----------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="champion-reload", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        """Checks on a fixed cadence: a slow check (a busy registry, a model loading) does not push the next
        one back, so a new @champion is seen within ``interval_s`` and served once it has loaded."""
        next_at = time.monotonic() + self.interval_s
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            next_at = max(next_at + self.interval_s, time.monotonic())
            try:
                self.check()
            except Exception as exc:  # never let the reload thread die silently
                log.error("model.reload_thread_error", error=str(exc), exc_info=True)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
