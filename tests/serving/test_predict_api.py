"""POST /predict and the other routes, in-process (Flask test client) on a real registered model and a real
Redis: exact bodies, every validation problem, lookups by id, batches, explanations."""

from __future__ import annotations

import json
from typing import Any

import pytest

from churnops.prediction_log import PredictionLog


@pytest.fixture(scope="module")
def app(model_store: Any, pushed: str) -> Any:
    from serving.app import create_app

    model_store.set_champion(model_store.versions[0])
    application = create_app(model_store.settings, background=False)
    yield application
    application.extensions["churnops"].close()


@pytest.fixture
def client(app: Any) -> Any:
    return app.test_client()


@pytest.fixture(scope="module")
def champion(app: Any) -> Any:
    return app.extensions["churnops"].holder.current


def post(client: Any, body: Any, query: str = "") -> Any:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return client.post("/predict" + query, data=data, content_type="application/json")


def expected_for(champion: Any, settings: Any, record: dict[str, Any]) -> dict[str, Any]:
    p = float(champion.scorer.predict_proba_records([record])[0])
    label = int(p >= champion.scorer.threshold)
    target = settings.schema.target
    doc = {"prediction": label, "attrition_probability": round(p, 6),
           "retention_probability": round(1 - p, 6), "status": target.positive if label else target.negative,
           "risk_level": settings.params.serving.risk_levels.level(p), "model_version": champion.version}
    if champion.outliers is not None:  # the champion's own Isolation Forest, logged with its run
        doc["anomaly"] = champion.outliers.score_records([record])[0].to_dict()
    return doc


def as_record(settings: Any, body: dict[str, Any]) -> dict[str, Any]:
    return {column: body[field] for field, column in settings.schema.api_fields.items()}


def test_full_payload_answers_exactly_the_documented_body(client: Any, champion: Any, model_store: Any,
                                                          example_body: dict[str, Any]) -> None:
    response = post(client, example_body)
    assert response.status_code == 200, response.get_json()
    assert response.content_type == "application/json"
    body = response.get_json()
    assert list(body) == ["prediction", "attrition_probability", "retention_probability", "status",
                          "risk_level", "model_version", "anomaly"]
    assert body == expected_for(champion, model_store.settings, as_record(model_store.settings, example_body))
    assert body["model_version"] == model_store.versions[0]
    assert set(body["anomaly"]) == {"score", "is_outlier", "out_of_range"}


def test_anomaly_flags_a_customer_unlike_the_training_data(client: Any, example_body: dict[str, Any]) -> None:
    odd = {**example_body, "credit_limit": 900_000.0, "avg_open_to_buy": 899_000.0}
    anomaly = post(client, odd).get_json()["anomaly"]
    assert anomaly["is_outlier"] is True
    assert "Credit_Limit" in anomaly["out_of_range"]


def test_status_and_risk_level_follow_the_probability_and_params(client: Any, champion: Any,
                                                                 model_store: Any) -> None:
    """Many real customers: every answer agrees with the model's own probability and the thresholds."""
    settings = model_store.settings
    schema = settings.schema
    seen_levels = set()
    for row in model_store.gold.head(120).to_dict("records"):
        body = {schema.api_field(c): row[c] for c in schema.feature_columns}
        got = post(client, body).get_json()
        assert got == expected_for(champion, settings, {c: row[c] for c in schema.feature_columns})
        assert (got["status"] == "Attrited Customer") == (got["prediction"] == 1)
        seen_levels.add(got["risk_level"])
    assert seen_levels == {"Low", "Medium", "High"}, "the sample should exercise all three risk levels"


def test_every_bad_field_is_named_in_one_422(client: Any, example_body: dict[str, Any]) -> None:
    body = dict(example_body)
    del body["customer_age"]  # missing
    body["dependent_count"] = True  # a JSON boolean is not a number
    body["months_on_book"] = 1.5  # integer column
    body["credit_limit"] = "12691"  # wrong type
    body["avg_utilization_ratio"] = 1.7  # out of range [0, 1]
    body["gender"] = "X"  # unknown category
    body["customer_agee"] = 45  # unknown field
    response = post(client, body)
    assert response.status_code == 422
    problems = {e["field"]: e["problem"] for e in response.get_json()}
    assert set(problems) == {"customer_age", "dependent_count", "months_on_book", "credit_limit",
                             "avg_utilization_ratio", "gender", "customer_agee"}
    assert problems["customer_age"] == "missing"
    assert "boolean" in problems["dependent_count"]
    assert problems["months_on_book"] == "expected an integer, got 1.5"
    assert problems["credit_limit"] == "expected a number, got a string"
    assert problems["avg_utilization_ratio"] == "must be between 0 and 1, got 1.7"
    assert "unknown category 'X'" in problems["gender"] and "'F'" in problems["gender"]
    assert problems["customer_agee"] == "unknown field; did you mean 'customer_age'?"


@pytest.mark.parametrize("raw, status", [
    (b"{not json", 400), (b"", 400), (b'{"customer_age": NaN}', 400), (b"[" * 100_000 + b"]" * 100_000, 413),
    (b"[" * 20_000 + b"]" * 20_000, 400), (b"\xff\xfe\x00", 400), (b"[1, 2]", 422), (b'"text"', 422),
    (b"null", 422), (b"{}", 422),
])
def test_malformed_or_wrong_bodies_are_4xx_never_5xx(client: Any, raw: bytes, status: int) -> None:
    response = post(client, raw)
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    assert "error" in response.get_json() or isinstance(response.get_json(), list)


def test_a_body_over_the_limit_is_413(client: Any, example_body: dict[str, Any], model_store: Any) -> None:
    limit = model_store.settings.params.serving.max_body_bytes
    body = {"instances": [example_body] * (limit // len(json.dumps(example_body)) + 5)}
    response = post(client, body)
    assert response.status_code == 413
    assert str(limit) in response.get_json()["error"]


def test_lookup_by_customer_id_scores_the_stored_features(client: Any, champion: Any,
                                                          model_store: Any) -> None:
    settings = model_store.settings
    schema = settings.schema
    row = model_store.gold.iloc[5]
    for cid in (str(row[schema.id_column]), int(row[schema.id_column])):
        response = post(client, {"customer_id": cid})
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        expected = expected_for(champion, settings, {c: row[c] for c in schema.feature_columns})
        assert {k: body[k] for k in expected} == expected
        assert body["customer_id"] == str(row[schema.id_column])
        assert body["feature_set_version"]


def test_unknown_customer_is_404_and_a_bad_id_422(client: Any) -> None:
    response = post(client, {"customer_id": "no-such-customer"})
    assert response.status_code == 404
    assert "no-such-customer" in response.get_json()["error"]
    for bad in ({"customer_id": ""}, {"customer_id": True}, {"customer_id": -3}, {"customer_id": 1.5},
                {"customer_id": "a\nb"}):
        assert post(client, bad).status_code == 422
    response = post(client, {"customer_id": "1", "gender": "F"})
    assert response.status_code == 422
    assert response.get_json()[0]["field"] == "gender"


def test_batch_answers_in_order_and_names_bad_instances_by_index(client: Any, champion: Any, model_store: Any,
                                                                 example_body: dict[str, Any]) -> None:
    settings = model_store.settings
    schema = settings.schema
    row = model_store.gold.iloc[9]
    other = dict(example_body, customer_age=30, gender="M")
    response = post(client, {"instances": [example_body, {"customer_id": str(row[schema.id_column])}, other]})
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["model_version"] == champion.version
    preds = body["predictions"]
    assert len(preds) == 3
    assert preds[0] == expected_for(champion, settings, as_record(settings, example_body))
    assert preds[2] == expected_for(champion, settings, as_record(settings, other))
    assert preds[1]["customer_id"] == str(row[schema.id_column])

    bad = dict(example_body, gender="unknown-gender")
    response = post(client, {"instances": [example_body, example_body, example_body, bad]})
    assert response.status_code == 422
    assert [e["field"] for e in response.get_json()] == ["instances[3].gender"]

    limit = settings.params.serving.max_batch
    response = post(client, {"instances": [example_body] * (limit + 1)})
    assert response.status_code == 422 and response.get_json()[0]["field"] == "instances"
    assert post(client, {"instances": []}).status_code == 422
    assert post(client, {"instances": [example_body], "extra": 1}).status_code == 422
    response = post(client, {"instances": [example_body, {"customer_id": "missing-1"}]})
    assert response.status_code == 404 and "missing-1" in response.get_json()["error"]


def test_explain_lists_the_features_raising_and_lowering_risk(client: Any, champion: Any, model_store: Any,
                                                              example_body: dict[str, Any]) -> None:
    response = post(client, example_body, "?explain=true")
    assert response.status_code == 200
    explanation = response.get_json()["explanation"]
    contributions = champion.scorer.explain([as_record(model_store.settings, example_body)])[0]
    top_k = model_store.settings.params.serving.explain_top_k
    raising = [c for c in contributions if c.effect > 0][:top_k]
    assert [e["feature"] for e in explanation["raises_risk"]] == [
        model_store.settings.schema.api_field(c.feature) if "/" not in c.feature else
        "/".join(model_store.settings.schema.api_field(p) for p in c.feature.split("/")) for c in raising]
    assert all(e["effect"] > 0 for e in explanation["raises_risk"])
    assert all(e["effect"] < 0 for e in explanation["lowers_risk"])
    fields = set(model_store.settings.schema.api_fields)
    named = {e["feature"] for e in explanation["raises_risk"] + explanation["lowers_risk"]}
    assert all(n in fields or "/" in n for n in named)
    assert "explanation" not in post(client, example_body, "?explain=false").get_json()
    assert post(client, example_body, "?explain=maybe").status_code == 422


def test_health_model_openapi_page_and_metrics(client: Any, champion: Any, model_store: Any,
                                               pushed: str) -> None:
    health = client.get("/health")
    assert health.status_code == 200
    assert health.get_json() | {"problems": []} == {
        "status": "healthy", "model_loaded": True, "model_version": champion.version,
        "features_count": len(model_store.settings.schema.feature_columns), "redis": "ok",
        "feature_set_version": pushed, "problems": []}

    model = client.get("/model").get_json()
    assert model["version"] == champion.version and model["run_id"] == champion.run_id
    assert model["data_version"] == "test-data" and model["metrics"] == {"roc_auc": 0.9}
    assert model["threshold"] == 0.5
    assert model["scoring"]["path"] == "compiled" and model["scoring"]["verified_max_abs_diff"] <= 1e-6

    spec = client.get("/openapi.json").get_json()
    customer = spec["components"]["schemas"]["Customer"]
    assert set(customer["required"]) == set(model_store.settings.schema.api_fields)
    assert customer["properties"]["customer_age"] == {"type": "integer", "description": "column Customer_Age",
                                                      "minimum": 18, "maximum": 100}

    page = client.get("/")
    assert page.status_code == 200 and 'name="customer_age"' in page.get_data(as_text=True)

    post(client, {"customer_id": "nobody"})
    text = client.get("/metrics").get_data(as_text=True)
    assert 'churnops_http_requests_total{endpoint="/predict",method="POST",status="404"}' in text
    assert f'churnops_model_workers{{version="{champion.version}"}} 1.0' in text
    assert "churnops_http_request_duration_seconds_bucket" in text
    assert f'churnops_predictions_total{{model_version="{champion.version}",risk_level="Low"}}' in text


def test_unknown_routes_and_methods_answer_json_4xx(client: Any) -> None:
    assert client.get("/nope").status_code == 404
    response = client.get("/predict")
    assert response.status_code == 405 and "POST" in response.headers["Allow"]
    assert response.get_json()["error"]


def test_scored_rows_reach_the_prediction_log(client: Any, app: Any, model_store: Any,
                                              example_body: dict[str, Any]) -> None:
    state = app.extensions["churnops"]
    assert state.plog.flush(5)
    before = len(state.plog.read_window())
    post(client, {"instances": [example_body, example_body]})
    assert state.plog.flush(5)
    window = PredictionLog.from_settings(model_store.settings).read_window(last_n=2)
    assert len(state.plog.read_window()) == before + 2
    assert list(window["Customer_Age"]) == [45, 45] and list(window["customer_id"]) == ["", ""]
    assert set(window["model_version"]) == {state.holder.current.version}


def test_an_explanation_the_model_cannot_compute_is_a_422_not_a_500(client: Any, model_store: Any,
                                                                    example_body: dict[str, Any]) -> None:
    """A ratio over a denominator near zero overflows float32, which XGBoost's explanation refuses."""
    schema = model_store.settings.schema
    tiny = [(num, den) for num, den in schema.ratios.values()
            if not schema.numeric[den].integer and (schema.numeric[den].min or 0) <= 0]
    if not tiny:
        pytest.skip("no ratio in the schema divides by a column that may be zero")
    num, den = tiny[0]
    body = dict(example_body, **{schema.api_field(den): 1e-300,
                                 schema.api_field(num): schema.numeric[num].max or 1e6})
    assert post(client, body).status_code == 200  # the prediction itself is fine
    response = post(client, body, "?explain=true")
    assert response.status_code == 422
    assert response.get_json()[0]["field"] == "explain"
