"""The request validator and the OpenAPI document, compiled from the schema (no server needed)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest

from serving.openapi import build_spec, example_request
from serving.validation import BadJson, RequestError, RequestValidator, parse_json


@pytest.fixture
def settings(settings_factory: Callable[..., Any]) -> Any:
    return settings_factory({"serving": {"max_batch": 3}})


@pytest.fixture
def validator(settings: Any) -> RequestValidator:
    return RequestValidator(settings.schema, settings.params.serving.max_batch)


@pytest.fixture
def body(settings: Any) -> dict[str, Any]:
    return example_request(settings)


def problems(validator: RequestValidator, body: Any) -> dict[str, str]:
    with pytest.raises(RequestError) as info:
        validator.parse(body)
    return {e["field"]: e["problem"] for e in info.value.errors}


def test_a_valid_body_becomes_a_typed_record_keyed_by_column(validator: RequestValidator,
                                                             body: dict[str, Any], settings: Any) -> None:
    parsed = validator.parse(dict(body, customer_age=45.0, credit_limit=12691))
    assert parsed.kind == "features" and len(parsed.items) == 1
    record = parsed.items[0].record
    assert set(record) == set(settings.schema.feature_columns)
    assert record["Customer_Age"] == 45 and type(record["Customer_Age"]) is int  # an integral float is fine
    assert record["Credit_Limit"] == 12691.0 and type(record["Credit_Limit"]) is float
    assert record["Gender"] == "F"


@pytest.mark.parametrize("field, value, expected", [
    ("customer_age", 1.5, "expected an integer, got 1.5"),
    ("customer_age", True, "expected an integer, got a boolean"),
    ("customer_age", "45", "expected an integer, got a string"),
    ("customer_age", None, "expected an integer, got null"),
    ("customer_age", 17, "must be between 18 and 100, got 17"),
    ("customer_age", 10**40, "must be between 18 and 100, got " + "1" + "0" * 36 + "..."),
    ("credit_limit", 10**400, "must be between 0 and 1000000, got " + "1" + "0" * 36 + "..."),
    ("credit_limit", False, "expected a number, got a boolean"),
    ("credit_limit", [1], "expected a number, got an array"),
    ("credit_limit", -0.5, "must be between 0 and 1000000, got -0.5"),
    ("credit_limit", math.inf, "expected a finite number"),
    ("gender", "f", "unknown category 'f'; expected one of ['F', 'M']"),
    ("gender", 1, "expected a string, one of ['F', 'M']; got a number"),
    ("card_category", {"a": 1},
     "expected a string, one of ['Blue', 'Silver', 'Gold', 'Platinum']; got an object"),
])
def test_each_kind_of_bad_value_is_named_with_its_problem(validator: RequestValidator, body: dict[str, Any],
                                                          field: str, value: Any, expected: str) -> None:
    assert problems(validator, dict(body, **{field: value})) == {field: expected}


def test_missing_and_unknown_fields_are_all_listed(validator: RequestValidator, body: dict[str, Any],
                                                   settings: Any) -> None:
    assert problems(validator, {}) == {f: "missing" for f in settings.schema.api_fields}
    found = problems(validator, dict(body, Gender="F", zzz=1))
    assert found == {"Gender": "unknown field; did you mean 'gender'?", "zzz": "unknown field"}


def test_batches_name_instances_by_index_and_respect_the_size_limit(validator: RequestValidator,
                                                                    body: dict[str, Any]) -> None:
    parsed = validator.parse({"instances": [body, {"customer_id": 12}, body]})
    assert parsed.kind == "batch"
    assert [i.customer_id for i in parsed.items] == [None, "12", None]
    found = problems(validator, {"instances": [body, "x", dict(body, gender="?", customer_age=5)]})
    assert set(found) == {"instances[1]", "instances[2].gender", "instances[2].customer_age"}
    assert problems(validator, {"instances": [body] * 4}) == {
        "instances": "at most 3 instances per request, got 4"}
    assert problems(validator, {"instances": {"a": body}}) == {
        "instances": "expected an array of instances, got an object"}


def test_lookups_by_id_take_strings_or_non_negative_integers(validator: RequestValidator) -> None:
    assert validator.parse({"customer_id": "768805383"}).items[0].customer_id == "768805383"
    assert validator.parse({"customer_id": 768805383}).items[0].customer_id == "768805383"
    for bad in ("", "x" * 129, "a\x00b", "\ud9f3", -1, 1.0, True, None, ["1"]):
        assert "customer_id" in problems(validator, {"customer_id": bad})


def test_the_error_list_is_capped(validator: RequestValidator) -> None:
    with pytest.raises(RequestError) as info:
        validator.parse({f"unknown_{i}": i for i in range(500)})
    errors = info.value.errors
    assert len(errors) == 201 and errors[-1]["field"] == "body" and "more problems" in errors[-1]["problem"]


@pytest.mark.parametrize("raw", [b"", b"{", b"NaN", b'{"a": Infinity}', b"\xff", b"[" * 50_000])
def test_malformed_json_is_refused_without_crashing(raw: bytes) -> None:
    with pytest.raises(BadJson):
        parse_json(raw)


def test_a_different_schema_serves_different_fields_with_no_code_change(
        settings_factory: Callable[..., Any]) -> None:
    renamed = settings_factory({"schema": {"fields": {"Gender": "sex"},
                                           "numeric": {"Customer_Age": {"min": 21, "max": 90, "integer": True,
                                                                        "field": "age"}}}})
    validator = RequestValidator(renamed.schema, 10)
    body = example_request(renamed)
    assert "age" in body and "sex" in body and "customer_age" not in body and "gender" not in body
    assert validator.parse(body).items[0].record["Customer_Age"] == 45
    assert problems(validator, dict(body, age=20)) == {"age": "must be between 21 and 90, got 20"}
    spec = build_spec(renamed)["components"]["schemas"]["Customer"]
    assert spec["properties"]["age"] == {"type": "integer", "description": "column Customer_Age",
                                         "minimum": 21, "maximum": 90}
    assert spec["properties"]["sex"]["enum"] == ["F", "M"]
    assert "customer_age" not in spec["properties"]


def test_the_openapi_document_is_valid_and_matches_the_settings(settings: Any) -> None:
    from openapi_spec_validator import validate

    spec = build_spec(settings)
    validate(spec)
    assert spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
    batch = spec["components"]["schemas"]["Batch"]["properties"]["instances"]
    assert batch["maxItems"] == 3
    assert set(spec["paths"]) == {"/predict", "/health", "/model", "/metrics", "/openapi.json", "/"}
    assert spec["components"]["schemas"]["Customer"]["example"] == example_request(settings)
