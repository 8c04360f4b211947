"""Retention actions: a customer's risk drivers matched against the rules of ``analytics.actions``.

Among the rules whose drivers include one of the customer's top risk drivers, the one with the lowest
``priority`` wins (ties: the rule of the stronger driver); no match gives ``analytics.default_action``.
The reason is said in words from ``analytics.reasons`` ("transactions down 40% Q4 vs Q1; 5 contacts in
12 months"), one phrase per driver, strongest first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from churnops.analytics.drivers import driver_values
from churnops.settings import AnalyticsSettings, SchemaSettings

DEFAULT_ACTION_NAME = "default"


@dataclass(frozen=True)
class Recommendation:
    action_name: str
    action: str
    reason: str


def change_in_words(ratio: float) -> str:
    """A period-over-period ratio in words: 0.6 -> "down 40%", 1.25 -> "up 25%"."""
    pct = (float(ratio) - 1.0) * 100.0
    if abs(pct) < 0.5:
        return "unchanged"
    return f"{'down' if pct < 0 else 'up'} {abs(pct):.0f}%"


def phrase(driver: str, value: object, reasons: dict[str, str]) -> str:
    """One driver in words, from its template (``{value}``, ``{change}``) or as ``name value``."""
    template = reasons.get(driver)
    if isinstance(value, (int, float, np.floating, np.integer)):
        number = float(value)
        if template:
            return template.format(value=number, change=change_in_words(number))
        return f"{driver} {number:g}"
    return template.format(value=value, change=value) if template else f"{driver} {value}"


def recommend(
    names: np.ndarray, frame: pd.DataFrame, schema: SchemaSettings, cfg: AnalyticsSettings
) -> list[Recommendation]:
    """One recommendation per row of `frame` from its drivers (`names`, rows x k, None where empty)."""
    rules = cfg.actions
    used = {d for row in names for d in row if d is not None}
    values = {d: driver_values(frame, schema, d) for d in used}
    out = []
    for i, row in enumerate(names):
        drivers = [d for d in row if d is not None]
        matches = [(rule.priority, min(drivers.index(d) for d in rule.drivers if d in drivers), rule)
                   for rule in rules if any(d in rule.drivers for d in drivers)]
        chosen = min(matches, key=lambda m: m[:2])[2] if matches else None
        reason = "; ".join(phrase(d, values[d][i], cfg.reasons) for d in drivers)
        if chosen is None:
            out.append(Recommendation(DEFAULT_ACTION_NAME, cfg.default_action,
                                      reason or "no single driver stands out"))
        else:
            out.append(Recommendation(chosen.name, chosen.action, reason))
    return out
