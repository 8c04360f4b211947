"""Cut-offs: train on earlier ones, hold out the latest, and refuse schedules the history cannot label."""

from __future__ import annotations

from datetime import date, timedelta

import pandas as pd
import pytest

from churnops.settings import TransactionSettings
from churnops.transactions.cutoffs import CutoffError, CutoffPlan, plan_cutoffs, split_by_cutoff

FIRST, LAST = date(2009, 12, 1), date(2011, 12, 9)


def settings(**values: object) -> TransactionSettings:
    return TransactionSettings.model_validate(values)


def test_the_default_schedule_holds_out_the_latest_labelled_cutoff_and_trains_a_horizon_before_it() -> None:
    cfg = settings(horizon_days=90, cutoffs={"count": 3, "every_days": 30})
    plan = plan_cutoffs(cfg, FIRST, LAST)

    assert plan.holdout == LAST + timedelta(days=1) - timedelta(days=90)
    assert plan.train == (plan.holdout - timedelta(days=150), plan.holdout - timedelta(days=120),
                          plan.holdout - timedelta(days=90))
    # no training label window reaches past the hold-out's cut-off
    assert all(d + timedelta(days=90) <= plan.holdout for d in plan.train)


def test_a_horizon_longer_than_the_history_stops_naming_both() -> None:
    with pytest.raises(CutoffError, match=r"horizon_days \(800\) is longer than the history allows: the "
                                          r"history runs from 2009-12-01 to 2011-12-09 \(739 days\)"):
        plan_cutoffs(settings(horizon_days=800), FIRST, LAST)


def test_too_many_training_cutoffs_for_the_history_say_what_to_lower() -> None:
    with pytest.raises(CutoffError, match="too short for 30 training cut-offs 30 days apart"):
        plan_cutoffs(settings(cutoffs={"count": 30}), FIRST, LAST)


def test_explicit_dates_are_checked_against_the_history_and_each_other() -> None:
    with pytest.raises(CutoffError, match="the 90-day horizon after 2011-10-01 ends on 2011-12-29, after "
                                          "the last day of the history"):
        plan_cutoffs(settings(cutoffs={"dates": ["2011-01-01", "2011-10-01"]}), FIRST, LAST)
    with pytest.raises(CutoffError, match="less than horizon_days"):
        plan_cutoffs(settings(cutoffs={"dates": ["2011-05-01", "2011-06-01"]}), FIRST, LAST)
    with pytest.raises(CutoffError, match="leaves less than min_history_days"):
        plan_cutoffs(settings(cutoffs={"dates": ["2009-12-15", "2011-06-01"]}), FIRST, LAST)
    with pytest.raises(CutoffError, match="is in the future"):
        plan_cutoffs(settings(cutoffs={"dates": ["2011-01-01", "2011-06-01"]}), FIRST, LAST,
                     today=date(2011, 5, 1))
    plan = plan_cutoffs(settings(cutoffs={"dates": ["2011-01-01", "2011-06-01"]}), FIRST, LAST)
    assert plan.train == (date(2011, 1, 1),) and plan.holdout == date(2011, 6, 1)


def test_cutoff_dates_must_ascend() -> None:
    with pytest.raises(ValueError, match="strictly ascending"):
        settings(cutoffs={"dates": ["2011-06-01", "2011-01-01"]})


def test_the_split_trains_on_earlier_cutoffs_and_tests_on_the_latest() -> None:
    plan = CutoffPlan((date(2011, 1, 1), date(2011, 2, 1)), date(2011, 6, 1), FIRST, LAST)
    frame = pd.DataFrame({"customer_id": list("abcde"),
                          "cutoff": [date(2011, 1, 1), date(2011, 2, 1), date(2011, 6, 1), date(2011, 6, 1),
                                     date(2011, 1, 1)]})
    train, test = split_by_cutoff(frame, plan)
    assert list(train["customer_id"]) == ["a", "b", "e"] and list(test["customer_id"]) == ["c", "d"]
