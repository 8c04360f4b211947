"""A generated table is a valid table of the configured schema, shaped like the real file."""

from __future__ import annotations

import numpy as np
import pandas as pd

from churnops.settings import SchemaSettings


def test_columns_are_id_target_and_features_in_the_real_files_order(synthetic: pd.DataFrame,
                                                                      schema: SchemaSettings,
                                                                      real_frame: pd.DataFrame) -> None:
    assert list(synthetic.columns) == list(real_frame.columns)
    assert set(synthetic.columns) == set(schema.required_columns)
    assert not set(schema.drop_columns) & set(synthetic.columns)


def test_ids_are_unique_integers(synthetic: pd.DataFrame, schema: SchemaSettings) -> None:
    ids = synthetic[schema.id_column]
    assert pd.api.types.is_integer_dtype(ids.dtype)
    assert ids.is_unique
    assert ids.min() > 0


def test_target_holds_only_the_two_labels(synthetic: pd.DataFrame, schema: SchemaSettings) -> None:
    assert set(synthetic[schema.target.column]) == {schema.target.positive, schema.target.negative}


def test_categories_are_allowed_and_all_appear(synthetic: pd.DataFrame, schema: SchemaSettings) -> None:
    for col, cats in schema.categorical.items():
        assert set(synthetic[col]) == set(cats), col


def test_numbers_lie_within_the_schema_ranges(synthetic: pd.DataFrame, schema: SchemaSettings) -> None:
    for col, spec in schema.numeric.items():
        values = synthetic[col]
        assert values.notna().all(), col
        assert values.min() >= spec.min, col
        assert values.max() <= spec.max, col


def test_integer_columns_are_integers(synthetic: pd.DataFrame, schema: SchemaSettings,
                                      real_frame: pd.DataFrame) -> None:
    for col, spec in schema.numeric.items():
        if spec.integer or pd.api.types.is_integer_dtype(real_frame[col].dtype):
            assert pd.api.types.is_integer_dtype(synthetic[col].dtype), col


def test_values_have_no_more_decimals_than_the_real_file(synthetic: pd.DataFrame,
                                                         real_frame: pd.DataFrame) -> None:
    for col in synthetic.select_dtypes("float").columns:
        real = real_frame[col].to_numpy()
        decimals = next(d for d in range(7) if np.allclose(real, np.round(real, d), rtol=0, atol=1e-9))
        values = synthetic[col].to_numpy()
        assert np.array_equal(values, np.round(values, decimals)), col


def test_accounting_identities_hold_on_every_row(synthetic: pd.DataFrame) -> None:
    limit, balance = synthetic["Credit_Limit"], synthetic["Total_Revolving_Bal"]
    assert np.allclose(synthetic["Avg_Open_To_Buy"], limit - balance, rtol=0, atol=1e-6)
    assert np.allclose(synthetic["Avg_Utilization_Ratio"], (balance / limit).round(3), rtol=0, atol=1e-9)
    assert (balance <= limit).all()
    assert synthetic["Avg_Utilization_Ratio"].max() < 1
