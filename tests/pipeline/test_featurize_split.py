"""The featurize stage's train/test split: copies of a customer's features never straddle it."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from churnops.data.generate import generate_to_csv
from pipeline.layers import GoldPaths, featurize_stage, validate_stage

ROWS = 1000


def featurized(settings, edit=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    path = generate_to_csv(settings.schema, rows=ROWS, seed=11, out=settings.home / "incoming.csv")
    if edit is not None:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        edit(frame).to_csv(path, index=False)
    settings.raw_path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, settings.raw_path)
    validate_stage(settings)
    paths = featurize_stage(settings)
    return pd.read_parquet(paths.train), pd.read_parquet(paths.test)


def with_copies(settings, share: float):
    """The last `share` of the rows become copies of the first ones under their own ids."""
    id_column = settings.schema.id_column

    def edit(frame: pd.DataFrame) -> pd.DataFrame:
        n = int(len(frame) * share)
        copies = frame.iloc[:n].copy()
        copies[id_column] = frame[id_column].iloc[len(frame) - n:].to_numpy()
        return pd.concat([frame.iloc[: len(frame) - n], copies], ignore_index=True)

    return edit


@pytest.mark.parametrize("share", [0.01, 0.05])
def test_copies_of_a_customer_never_straddle_the_split(settings_factory, share: float) -> None:
    settings = settings_factory()
    train, test = featurized(settings, with_copies(settings, share))
    columns = settings.schema.feature_columns

    train_keys = set(train[columns].itertuples(index=False))
    test_keys = set(test[columns].itertuples(index=False))
    assert train_keys.isdisjoint(test_keys)
    assert len(train) + len(test) == ROWS
    assert len(test) == pytest.approx(0.2 * ROWS, abs=0.2 * ROWS * share + 2)
    assert test["churn"].mean() == pytest.approx(train["churn"].mean(), abs=0.02)  # still stratified


def test_without_copies_the_split_is_the_plain_stratified_one(settings_factory) -> None:
    from sklearn.model_selection import train_test_split

    settings = settings_factory()
    train, test = featurized(settings)
    gold = pd.read_parquet(GoldPaths.of(settings).customers)
    fs = settings.params.features
    want_train, want_test = train_test_split(gold, test_size=fs.test_size, random_state=fs.seed,
                                             stratify=gold["churn"])
    pd.testing.assert_frame_equal(train, want_train.reset_index(drop=True))
    pd.testing.assert_frame_equal(test, want_test.reset_index(drop=True))
