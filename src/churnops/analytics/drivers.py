"""Risk drivers: the features that raise a customer's churn risk most, from the model itself.

The contributions are the model's own (XGBoost's SHAP values, a linear model's coefficient x value), the
same that ``/predict?explain=true`` returns, summed per raw column; a ratio of params.yaml is a driver of
its own (``avg_trans_amt``). A driver is kept only when it raises the risk (positive contribution).
``analytics.driver_method: approx`` takes XGBoost's path attribution instead of its exact SHAP values
(about 40x cheaper; the same drivers for most customers, the order of close ones may differ).
"""

from __future__ import annotations

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
    scorer: Scorer, schema: SchemaSettings, frame: pd.DataFrame, k: int, chunk_size: int = 5000,
    approx: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(names, effects), both rows x `k`: each row's `k` strongest risk-raising drivers, strongest first.

    Slots without a risk-raising driver hold None (names) and 0.0 (effects). Raises NotImplementedError
    for models without contributions (random forests)."""
    per_feature = driver_of_features(scorer, schema)
    drivers = list(dict.fromkeys(per_feature))
    projection = np.zeros((len(per_feature), len(drivers)))
    for i, d in enumerate(per_feature):
        projection[i, drivers.index(d)] = 1.0
    names = np.full((len(frame), k), None, dtype=object)
    effects = np.zeros((len(frame), k))
    labels = np.asarray(drivers, dtype=object)
    for start in range(0, len(frame), chunk_size):
        part = frame.iloc[start : start + chunk_size]
        by_driver = scorer.contributions_encoded(scorer.encoder.transform(part), approx) @ projection
        top = np.argsort(-by_driver, axis=1, kind="stable")[:, :k]
        eff = np.take_along_axis(by_driver, top, axis=1)
        got = labels[top]
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
