"""Risk drivers: the features that raise a customer's churn risk most, from the model itself.

The contributions are the model's own, computed by the same code as ``/predict?explain=true``
(:meth:`churnops.scoring.Scorer.contributions_by`): XGBoost's SHAP values (its batch ``pred_contribs`` on the
encoded matrix), a linear model's coefficient x scaled value, a random forest's path attribution on its
compiled trees; summed per raw column, except that a ratio of params.yaml is a driver of its own
(``avg_trans_amt``, where ``?explain=true`` says ``Total_Trans_Amt/Total_Trans_Ct``). A driver is kept
only when it raises the risk (positive contribution). Every customer of a run gets its drivers, in chunks
of bounded memory on every core (benchmarks/RESULTS.md, "Analytics", has the cost at 1M customers).
``analytics.driver_method: approx`` takes XGBoost's path attribution instead of its exact SHAP values
(much cheaper; the same drivers for most customers, the order of close ones may differ).
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from churnops.logs import get_logger
from churnops.scoring import Scorer
from churnops.settings import SchemaSettings

log = get_logger(__name__)


def driver_of_features(scorer: Scorer, schema: SchemaSettings) -> list[str]:
    """For each encoded feature, the driver it counts towards: its raw column, or its ratio's name."""
    encoder = scorer.encoder
    names = list(encoder.feature_names_)
    return [name if name in schema.ratios else encoder.source_column(i) for i, name in enumerate(names)]


def top_drivers(
    scorer: Scorer, schema: SchemaSettings, frame: pd.DataFrame, k: int, chunk_size: int = 20_000,
    approx: bool = False, threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(names, effects), both rows x `k`: each row's `k` strongest risk-raising drivers, strongest first.

    Slots without a risk-raising driver hold None (names) and 0.0 (effects). `threads`: XGBoost's threads
    (default: every core). Raises NotImplementedError for models without contributions."""
    threads = threads or os.cpu_count() or 1
    groups = driver_of_features(scorer, schema)
    names = np.full((len(frame), k), None, dtype=object)
    effects = np.zeros((len(frame), k))
    for start in range(0, len(frame), chunk_size):
        part = frame.iloc[start : start + chunk_size]
        labels, by_driver = scorer.contributions_by(scorer.encoder.transform(part), groups, approx, threads)
        # the k largest, strongest first; equal effects keep the drivers' order (as explain's stable sort)
        top = np.argsort(-by_driver, axis=1, kind="stable")[:, :k]
        eff = np.take_along_axis(by_driver, top, axis=1)
        got = np.asarray(labels, dtype=object)[top]
        got[eff <= 0] = None
        names[start : start + len(part), : top.shape[1]] = got
        effects[start : start + len(part), : top.shape[1]] = np.where(eff > 0, eff, 0.0)
    return names, effects


def driver_values(frame: pd.DataFrame, schema: SchemaSettings, driver: str) -> np.ndarray:
    """The value a driver had for each row (a ratio as the encoder computes it: 0 over a zero)."""
    if driver in schema.ratios:
        num, den = schema.ratios[driver]
        a = frame[num].to_numpy(dtype=np.float64)
        b = frame[den].to_numpy(dtype=np.float64)
        return np.divide(a, b, out=np.zeros(len(frame)), where=b != 0)
    column = frame[driver]
    if driver in schema.numeric:
        return column.to_numpy(dtype=np.float64)
    return column.astype(str).to_numpy()
