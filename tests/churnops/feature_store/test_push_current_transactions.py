"""With `source: transactions` the feature store holds every customer's features as of today, one per id."""

from __future__ import annotations

from churnops.feature_store import FeatureStore
from churnops.settings import load_settings
from churnops.transactions.build import current_features
from churnops.transactions.generate import RetailerProfile, generate_to_file


def test_push_current_writes_the_current_transactional_features(make_home, redis_url: str) -> None:
    home = make_home({"source": "transactions"})
    settings = load_settings(home=home, env={"REDIS_URL": redis_url})
    generate_to_file(settings.raw_path, settings.params.transactions.columns,
                     profile=RetailerProfile(customers=300), seed=4)
    store = FeatureStore.from_settings(settings)

    result = store.push_current(settings)

    expected = current_features(settings)
    assert result.rows == len(expected) > 100
    row = expected.iloc[7]
    found = store.get(str(row["customer_id"]))
    assert found is not None
    for column in settings.schema.feature_columns:  # stored as float32
        assert abs(found.features[column] - row[column]) <= 1e-6 * max(1.0, abs(row[column])), column
    assert set(found.features) == set(settings.schema.feature_columns)
