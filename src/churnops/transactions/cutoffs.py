"""Cut-off dates: when features are computed, which ones train and which one is held out.

A cut-off is a date (midnight): features read the lines strictly before it, the label the horizon that
starts on it. Time-based evaluation trains on the earlier cut-offs and holds out the latest; every training
cut-off lies at least one horizon before the hold-out, so no training label looks past the hold-out's
cut-off (:func:`plan_cutoffs` refuses explicit dates that would).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

import pandas as pd

from churnops.settings import TransactionSettings

EPOCH = date(1970, 1, 1)


class CutoffError(ValueError):
    """The cut-offs do not fit the history (or each other); the message names the dates and the setting."""


@dataclass(frozen=True)
class CutoffPlan:
    train: tuple[date, ...]
    holdout: date
    first_day: date  # of the history
    last_day: date  # of the history: the last day with a line

    @property
    def all(self) -> tuple[date, ...]:
        return (*self.train, self.holdout)

    def to_dict(self) -> dict[str, object]:
        return {"train": [d.isoformat() for d in self.train], "holdout": self.holdout.isoformat(),
                "history": [self.first_day.isoformat(), self.last_day.isoformat()]}


def day_number(d: date) -> int:
    """Days since 1970-01-01 (the ``day_number`` and ``t`` scale of the clean table)."""
    return (d - EPOCH).days


def plan_cutoffs(cfg: TransactionSettings, first: datetime | date, last: datetime | date,
                 today: date | None = None) -> CutoffPlan:
    """The cut-offs for a history from `first` to `last` (its first and last line), checked against it."""
    first_day = first.date() if isinstance(first, datetime) else first
    last_day = last.date() if isinstance(last, datetime) else last
    today = today or datetime.now().date()
    horizon, least = cfg.horizon_days, cfg.min_history_days
    span = (last_day - first_day).days + 1
    where = f"the history runs from {first_day} to {last_day} ({span} days)"
    if span < least + horizon:
        raise CutoffError(
            f"transactions.horizon_days ({horizon}) is longer than the history allows: {where}, but a "
            f"cut-off "
            f"needs min_history_days ({least}) before it and the horizon after it ({least + horizon} days)")
    earliest = first_day + timedelta(days=least)
    latest = last_day + timedelta(days=1) - timedelta(days=horizon)  # its horizon ends with the history
    if cfg.cutoffs.dates:
        dates = list(cfg.cutoffs.dates)
        for d in dates:
            if d > today:
                raise CutoffError(f"transactions.cutoffs.dates: {d} is in the future (today is {today})")
            if d + timedelta(days=horizon) > last_day + timedelta(days=1):
                raise CutoffError(
                    f"transactions.cutoffs.dates: the {horizon}-day horizon after {d} ends on "
                    f"{d + timedelta(days=horizon - 1)}, after the last day of the history ({last_day}): its "
                    f"labels are not known yet; the latest cut-off possible is {latest}")
            if d < earliest:
                raise CutoffError(
                    f"transactions.cutoffs.dates: {d} leaves less than min_history_days ({least}) of "
                    f"history before it ({where}); the earliest cut-off possible is {earliest}")
        holdout, train = dates[-1], dates[:-1]
        late = [d for d in train if d + timedelta(days=horizon) > holdout]
        if late:
            raise CutoffError(
                f"transactions.cutoffs.dates: the training cut-offs {[str(d) for d in late]} are less than "
                f"horizon_days ({horizon}) before the hold-out cut-off {holdout}: their labels would read "
                f"purchases after it")
        return CutoffPlan(tuple(train), holdout, first_day, last_day)
    holdout = latest
    every, count = cfg.cutoffs.every_days, cfg.cutoffs.count
    train = [holdout - timedelta(days=horizon + k * every) for k in reversed(range(count))]
    if train[0] < earliest:
        need = least + horizon * 2 + (count - 1) * every
        raise CutoffError(
            f"{where}: too short for {count} training cut-offs {every} days apart, a hold-out and a "
            f"{horizon}-day horizon after each (needs {need} days with min_history_days {least}); lower "
            f"transactions.cutoffs.count, cutoffs.every_days or horizon_days")
    return CutoffPlan(tuple(train), holdout, first_day, last_day)


def cutoff_frame(plan: CutoffPlan, cfg: TransactionSettings) -> pd.DataFrame:
    """The ``cutoffs`` relation the feature SQL reads: per cut-off, its bounds on the ``t`` scale."""
    rows = []
    for d in plan.all:
        at = float(day_number(d))
        population = at - cfg.population_days if cfg.population_days else -1e9
        rows.append({"cutoff_t": at, "horizon_end_t": at + cfg.horizon_days,
                     "trend_start_t": at - cfg.trend_days, "population_start_t": float(population)})
    return pd.DataFrame(rows)


def split_by_cutoff(frame: pd.DataFrame, plan: CutoffPlan,
                    column: str = "cutoff") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training rows: the earlier cut-offs, hold-out rows: the latest one)."""
    when = pd.to_datetime(frame[column]).dt.date
    test = when == plan.holdout
    train = when.isin(set(plan.train))
    return frame[train].reset_index(drop=True), frame[test].reset_index(drop=True)
