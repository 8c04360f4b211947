"""Which table retraining uses next, and whether a new table moved far from the champion's.

The rule: **retraining uses the data the champion was trained on.** A run whose challenger is promoted
makes its own table that data; a completed run that is not promoted puts the raw table (and its ``.dvc``
pointer) back to the champion's data version, so the next drift-triggered retraining never trains on a table
the gate just rejected a model from (shuffled labels, a broken export). The rejected table stays versioned
(its md5 is in the run report and pushed to the DVC remote): ``churnops train --data`` trains on it again
on purpose.

The register stage writes the rule's outcome into the run report (``next_training_data``) together with a
comparison of the run's table with the champion's (``data_check``): the positive-label rate and every
feature's distribution (the drift monitor's tests), flagged when they moved far beyond the drift thresholds
(``register.data_shift_factor`` times the monitor's effect-size floors, or a label rate changed by more
than ``register.max_label_rate_change`` of itself). `churnops train` and the ``churn_training`` DAG apply
the rule once the run is complete (:func:`apply_rule`). The DAG also publishes a run's layers and pushes its
features only when its table is the one retraining uses next (:func:`layers_follow_run`): after a run that
was not promoted, the project's layers, the Redis feature store and so batch scoring stay on the champion's
data; the run's reports are published either way.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from churnops.io import atomic_path, write_text_atomic
from churnops.logs import get_logger
from churnops.redaction import redact_url
from churnops.settings import Settings
from pipeline.layers import LABEL, read_raw, to_gold
from pipeline.versioning import VersioningError, data_version, dvc_file_for, fetch_data_version, run_dvc

log = get_logger(__name__)

RULE = ("retraining uses the data the champion was trained on: a promoted run makes its table that data; "
        "a run that is not promoted puts the raw table back to the champion's data version")


def _typed_gold(settings: Settings, raw: Path) -> pd.DataFrame:
    from churnops.data.validate import validate_table

    report = validate_table(read_raw(settings, raw), settings.schema, settings.params.validate_,
                            source=str(raw))
    return to_gold(report.clean, settings)


def data_check(settings: Settings, gold: pd.DataFrame, champion: dict[str, Any] | None) -> dict[str, Any]:
    """Compare this run's gold table with the champion's training table (label rate, distributions)."""
    from monitoring.detect import DriftConfig, check_drift

    if champion is None:
        return {"compared": False, "flagged": False, "reason": "no champion yet: nothing to compare with"}
    version = champion.get("data_version")
    not_compared = {"compared": False, "flagged": False, "champion": champion["version"],
                    "champion_data_version": version}
    if not version:
        return {**not_compared, "reason": f"the champion v{champion['version']} has no data_version tag: "
                                          f"its table is unknown"}
    remote = redact_url(settings.dvc_remote)
    try:
        source = fetch_data_version(settings.home, version)
    except VersioningError as exc:
        log.warning("data.check_skipped", champion=champion["version"], data_version=version, error=str(exc))
        return {**not_compared, "reason": f"the champion's data version {version} is not in the DVC cache "
                                          f"and the DVC remote {remote} could not be read: {exc}"}
    if source is None:
        log.warning("data.check_skipped", champion=champion["version"], data_version=version,
                    reason="neither in the DVC cache nor on the remote")
        return {**not_compared,
                "reason": f"the champion's data version {version} is neither in the DVC cache nor on the DVC "
                          f"remote {remote}: its table is gone (push it to the remote again, or retrain on "
                          f"purpose with `churnops train --data`)"}
    register = settings.params.register_
    theirs = _typed_gold(settings, source)
    rate, champion_rate = float(gold[LABEL].mean()), float(theirs[LABEL].mean())
    change = abs(rate - champion_rate) / champion_rate if champion_rate else float("inf")
    label_flagged = change > register.max_label_rate_change
    floors = DriftConfig.from_settings(settings.params.monitoring)
    factor = register.data_shift_factor
    far = dataclasses.replace(floors, min_window=1, min_shift_sd=floors.min_shift_sd * factor,
                              min_category_shift=floors.min_category_shift * factor)
    result = check_drift(theirs, gold, settings.schema, far, reference_version=champion["version"])
    moved = sorted((f for f in result.features if f.drift), key=lambda f: f.effect_size, reverse=True)
    flagged = label_flagged or bool(moved)
    check = {
        "compared": True,
        "flagged": flagged,
        "champion": champion["version"],
        "champion_data_version": version,
        "label_rate": {"champion_data": round(champion_rate, 6), "this_run": round(rate, 6),
                       "relative_change": round(change, 4), "limit": register.max_label_rate_change,
                       "flagged": label_flagged},
        "features_moved": {f.feature: round(f.effect_size, 4) for f in moved},
        "changes": [f.describe() for f in moved],
        "shift_factor": register.data_shift_factor,
    }
    if flagged:
        log.warning("data.shift_flagged", champion=champion["version"], label_rate=round(rate, 4),
                    champion_label_rate=round(champion_rate, 4),
                    features=",".join(check["features_moved"]) or "-")
    return check


def next_training_data(this_version: str, promoted: bool, champion: dict[str, Any] | None) -> dict[str, Any]:
    """The data version retraining uses next (the champion's, after the gate)."""
    if promoted or champion is None or not champion.get("data_version"):
        version, why = this_version, ("this run's table: its model is the champion" if promoted else
                                      "this run's table: there is no champion trained on tagged data")
    else:
        version = champion["data_version"]
        why = (f"the champion v{champion['version']}'s table: this run's model was not promoted, so its "
               f"table {this_version} is not carried forward (train on it on purpose with "
               f"`churnops train --data`)") if version != this_version else \
            f"the champion v{champion['version']}'s table (the same as this run's)"
    return {"data_version": version, "this_run": this_version, "why": why, "rule": RULE}


def layers_follow_run(report: dict[str, Any]) -> bool:
    """Whether a completed run's layers (validated, gold) and features become the project's: only when its
    table is the one retraining uses next (``next_training_data``), so the layers, the feature store and
    batch scoring stay on the champion's data after a run that was not promoted."""
    return (report.get("next_training_data") or {}).get("data_version") == report.get("data_version")


def apply_rule(settings: Settings, report: dict[str, Any], previous: dict[Path, Path | None]) -> str | None:
    """Point the raw table at the report's ``next_training_data`` version; return it if it moved.

    `previous`: copies of the raw table and its .dvc file from before the run (used when they hold that
    version); otherwise the version is checked out from the DVC cache or remote.
    """
    target = (report.get("next_training_data") or {}).get("data_version")
    raw, pointer = settings.raw_path, dvc_file_for(settings.raw_path)
    if not target or data_version(pointer) == target:
        return None
    old_pointer = previous.get(pointer)
    if old_pointer is not None and data_version(old_pointer) == target and previous.get(raw) is not None:
        for dest in (raw, pointer):
            with atomic_path(dest) as tmp:
                shutil.copyfile(previous[dest], tmp)  # type: ignore[arg-type]
    else:
        write_text_atomic(pointer, f"outs:\n- md5: {target}\n  hash: md5\n  path: {raw.name}\n")
        run_dvc(settings.home, "pull", "--force", str(pointer.relative_to(settings.home)))
    log.warning("data.pointer_kept_on_champion", data_version=target, rejected=report.get("data_version"),
                raw=str(raw))
    return target
