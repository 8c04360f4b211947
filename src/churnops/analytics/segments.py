"""Segments: the customer dimension's columns (the schema's categories and bands of chosen numeric columns).

A band holds ``[edge, next edge)``: edges ``[30, 40]`` give ``<30``, ``30-40``, ``40+``. Dimension names in
the marts are lower case (``gender``, ``customer_age_band``) so SQL tools need no quoting.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from churnops.settings import Settings

UNKNOWN = "Unknown"


@dataclass(frozen=True)
class Dimension:
    name: str  # column in the customer dimension and the segment marts
    source: str  # schema column it comes from
    labels: tuple[str, ...]  # every value, in display order
    edges: tuple[float, ...] = ()  # bands only


def _number(x: float) -> str:
    return f"{int(x):,}" if float(x).is_integer() else f"{x:g}"


def band_labels(edges: list[float] | tuple[float, ...]) -> list[str]:
    """``[30, 40, 50]`` -> ``["<30", "30-40", "40-50", "50+"]``."""
    labels = [f"<{_number(edges[0])}"]
    labels += [f"{_number(a)}-{_number(b)}" for a, b in zip(edges, edges[1:], strict=False)]
    return [*labels, f"{_number(edges[-1])}+"]


def band(values: pd.Series | np.ndarray, edges: list[float] | tuple[float, ...]) -> np.ndarray:
    """The band label of each value (a missing value: ``Unknown``)."""
    x = np.asarray(values, dtype=np.float64)
    labels = np.asarray(band_labels(edges), dtype=object)
    out = labels[np.searchsorted(np.asarray(edges, dtype=np.float64), x, side="right")]
    out[np.isnan(x)] = UNKNOWN
    return out


def dimensions(settings: Settings) -> list[Dimension]:
    """The customer dimension's columns: every categorical column of the schema, then the configured bands."""
    dims = [Dimension(col.lower(), col, tuple(cats)) for col, cats in settings.schema.categorical.items()]
    for col, edges in settings.analytics.bands.items():
        dims.append(Dimension(f"{col.lower()}_band", col, tuple(band_labels(edges)), tuple(edges)))
    return dims


def customer_dimension(frame: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    """customer_id + one column per dimension, for the customers of `frame` (raw feature columns)."""
    out = {"customer_id": frame[settings.schema.id_column].astype(str).to_numpy()}
    for dim in dimensions(settings):
        if dim.edges:
            out[dim.name] = band(frame[dim.source], dim.edges)
        else:
            values = frame[dim.source].astype(object)
            out[dim.name] = values.where(values.notna(), UNKNOWN).astype(str)
    return pd.DataFrame(out)
