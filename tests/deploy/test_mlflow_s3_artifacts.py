"""MLflow artifacts in S3: a model logged through churnops.tracking into an experiment whose artifact root is
an s3:// URI, registered, promoted to @champion and loaded back through churnops.registry, with nothing but
credentials and AWS_ENDPOINT_URL_S3 in the environment (no MLFLOW_S3_ENDPOINT_URL)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml

from churnops.storage import iter_keys, parse_s3_uri, s3_client

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_model_logged_to_s3_loads_back_as_champion_with_equal_predictions(
    s3_env: dict[str, str], bucket: str, make_home: Callable[..., Path], tmp_path: Path
) -> None:
    import mlflow
    from mlflow import MlflowClient
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from churnops import registry, tracking
    from churnops.data.generate import generate
    from churnops.features import FeatureEncoder
    from churnops.settings import load_settings

    assert "MLFLOW_S3_ENDPOINT_URL" not in os.environ and "AWS_ENDPOINT_URL" not in os.environ
    artifact_root = f"s3://{bucket}/mlflow/artifacts"
    settings = load_settings(
        home=make_home(),
        env={
            "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
            "CHURNOPS_ARTIFACT_ROOT": artifact_root,
        },
    )

    experiment_id = tracking.configure_tracking(settings)
    experiment = MlflowClient(settings.mlflow_tracking_uri).get_experiment(experiment_id)
    assert experiment.artifact_location == artifact_root

    schema = settings.schema
    table = generate(schema, 400, 11)
    X = table[schema.feature_columns]  # noqa: N806
    y = (table[schema.target.column] == schema.target.positive).astype(int).to_numpy()
    pipeline = Pipeline(
        [
            ("encode", FeatureEncoder.from_schema(schema)),
            ("scale", StandardScaler()),
            ("model", LogisticRegression(max_iter=1000)),
        ]
    ).fit(X, y)

    with mlflow.start_run(experiment_id=experiment_id) as run:
        info = tracking.log_model(pipeline, X, settings)
        mlflow.log_param("threshold", 0.5)
        mlflow.log_metric("test_roc_auc", 0.8)
        mlflow.set_tags(
            {
                tracking.TAG_MODEL_URI: info.model_uri,
                tracking.TAG_MODEL_ID: info.model_id,
                "candidate": "logistic_regression",
                "data_version": "s3-test",
            }
        )
    version = registry.register(settings, run.info.run_id)
    MlflowClient(settings.mlflow_tracking_uri).set_registered_model_alias(
        settings.params.register_.model_name, "champion", version
    )

    # The model files are objects in the bucket, under the experiment's artifact root.
    keys = set(iter_keys(s3_client(s3_env), parse_s3_uri(artifact_root)))
    model_dir = next(
        k.rsplit("/", 1)[0] for k in keys if k.endswith(f"/models/{info.model_id}/artifacts/MLmodel")
    )
    mlmodel = yaml.safe_load(
        s3_client(s3_env).get_object(Bucket=bucket, Key=f"{model_dir}/MLmodel")["Body"].read()
    )
    data = mlmodel["flavors"]["python_function"]["data"]  # the churnops model format: no pickle
    assert {f"{model_dir}/{data}/churnops_model.json", f"{model_dir}/requirements.txt"} <= keys
    assert not (tmp_path / "mlruns").exists() and not (settings.home / "mlflow" / "artifacts").exists()

    expected = pipeline.predict_proba(X)[:, 1]
    champion = registry.load_champion(settings)
    assert champion.version == version
    np.testing.assert_array_equal(champion.scorer.predict_proba_frame(X), expected)
    direct = mlflow.pyfunc.load_model(info.model_uri)
    np.testing.assert_array_equal(direct.predict(tracking.signature_frame(X, settings))[:, 1], expected)
