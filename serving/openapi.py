"""The OpenAPI document of the server, generated from the schema in params.yaml.

Field names, types, ranges and categories come from ``settings.schema``: a different schema serves (and
documents) different fields with no code change. The document lists exactly the routes, bodies, status
codes and response shapes that :mod:`serving.app` implements; the fuzzing test holds the two together.
"""

from __future__ import annotations

import math
from typing import Any

from churnops.settings import Settings

# Realistic values for the BankChurners columns (the request applications already send) and the
# transactional source's; other schemas fall back to each column's lower bound and first category.
EXAMPLE_BY_COLUMN: dict[str, Any] = {
    "Customer_Age": 45, "Dependent_count": 3, "Months_on_book": 39, "Total_Relationship_Count": 5,
    "Months_Inactive_12_mon": 1, "Contacts_Count_12_mon": 3, "Credit_Limit": 12691.0,
    "Total_Revolving_Bal": 777, "Avg_Open_To_Buy": 11914.0, "Total_Amt_Chng_Q4_Q1": 1.335,
    "Total_Trans_Amt": 1144, "Total_Trans_Ct": 42, "Total_Ct_Chng_Q4_Q1": 1.625,
    "Avg_Utilization_Ratio": 0.061, "Gender": "F", "Education_Level": "Graduate",
    "Marital_Status": "Single", "Income_Category": "$60K - $80K", "Card_Category": "Blue",
    # the transactional source's features (transactions.schema)
    "recency_days": 34.5, "frequency": 6, "monetary": 1210.4, "avg_basket_value": 201.7,
    "avg_items_per_invoice": 48.0, "distinct_products": 41, "active_days": 6, "tenure_days": 410.2,
    "recent_invoices": 1, "invoice_trend": 0.76, "spend_trend": 0.64, "return_rate": 0.02,
}

JSON = "application/json"


def example_request(settings: Settings) -> dict[str, Any]:
    """A valid full-payload body for the configured schema (API field names)."""
    schema = settings.schema
    body: dict[str, Any] = {}
    for col, spec in schema.numeric.items():
        value = EXAMPLE_BY_COLUMN.get(col)
        lo = spec.min if spec.min is not None else -math.inf
        hi = spec.max if spec.max is not None else math.inf
        usable = isinstance(value, (int, float)) and lo <= value <= hi
        if not usable or (spec.integer and value != int(value)):
            value = spec.min if spec.min is not None else 0
        body[schema.api_field(col)] = int(value) if spec.integer else value
    for col, cats in schema.categorical.items():
        value = EXAMPLE_BY_COLUMN.get(col)
        body[schema.api_field(col)] = value if value in cats else cats[0]
    return body


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _security(scheme: str, required: bool) -> list[dict[str, list[str]]]:
    """The operation's security requirement: the scheme, or (without configured tokens) the scheme or
    nothing."""
    return [{scheme: []}] if required else [{scheme: []}, {}]


def _auth_responses(kind: str) -> dict[str, Any]:
    return {"401": _json(_ref("Error"), f"No bearer token, or an unknown one (a {kind} token is needed)"),
            "403": _json(_ref("Error"), f"A token of the other kind: this endpoint takes {kind} tokens")}


def build_spec(settings: Settings, *, auth_required: bool = False) -> dict[str, Any]:
    """The document; `auth_required`: the server was started with tokens (serving.auth), so the protected
    operations require them (otherwise they are documented as optional)."""
    schema = settings.schema
    serving = settings.params.serving
    properties: dict[str, Any] = {}
    for col, spec in schema.numeric.items():
        prop: dict[str, Any] = {"type": "integer" if spec.integer else "number",
                                "description": f"column {col}"}
        if spec.min is not None:
            prop["minimum"] = int(spec.min) if spec.integer else spec.min
        if spec.max is not None:
            prop["maximum"] = int(spec.max) if spec.integer else spec.max
        properties[schema.api_field(col)] = prop
    for col, cats in schema.categorical.items():
        properties[schema.api_field(col)] = {"type": "string", "enum": list(cats),
                                             "description": f"column {col}"}
    for col, policy in schema.missing.items():  # null or absent: filled by the model as in training
        prop = properties[schema.api_field(col)]
        prop["nullable"] = True
        if "enum" in prop:
            prop["enum"] = [*prop["enum"], None]  # OpenAPI 3.0: an enum must list null for it to pass
        prop["description"] += (f"; may be null or omitted: imputed ({policy.impute}"
                                f"{', with a missing-indicator feature' if policy.indicator else ''})")
    optional = {schema.api_field(col) for col in schema.missing}
    customer = {"type": "object", "description": "The customer's features, by API field name.",
                "properties": properties, "required": [f for f in properties if f not in optional],
                "additionalProperties": False, "example": example_request(settings)}
    by_id = {"type": "object", "description": "Score a customer whose features are in the feature store.",
             "properties": {"customer_id": {"anyOf": [
                 {"type": "string", "minLength": 1, "maxLength": 128, "pattern": "^[^\\x00-\\x1f\\x7f]+$"},
                 {"type": "integer", "minimum": 0}]}},
             "required": ["customer_id"], "additionalProperties": False,
             "example": {"customer_id": "768805383"}}
    instance = {"oneOf": [_ref("Customer"), _ref("CustomerId")]}
    batch = {"type": "object", "properties": {"instances": {"type": "array", "items": instance, "minItems": 1,
                                                            "maxItems": serving.max_batch}},
             "required": ["instances"], "additionalProperties": False}
    contribution = {"type": "object", "required": ["feature", "effect"], "additionalProperties": False,
                    "properties": {"feature": {"type": "string", "description": "API field (or ratio a/b)"},
                                   "effect": {"type": "number",
                                              "description": "contribution to the log-odds of churn (random "
                                                             "forests: to the probability)"}}}
    explanation = {"type": "object", "required": ["raises_risk", "lowers_risk"],
                   "additionalProperties": False,
                   "properties": {"raises_risk": {"type": "array", "items": contribution},
                                  "lowers_risk": {"type": "array", "items": contribution}}}
    target = schema.target
    prediction = {
        "type": "object",
        "required": ["prediction", "attrition_probability", "retention_probability", "status", "risk_level",
                     "model_version"],
        "additionalProperties": False,
        "properties": {
            "prediction": {"type": "integer", "enum": [0, 1],
                           "description": "1 when attrition_probability reaches the model's threshold"},
            "attrition_probability": {"type": "number", "minimum": 0, "maximum": 1},
            "retention_probability": {"type": "number", "minimum": 0, "maximum": 1},
            "status": {"type": "string", "enum": [target.negative, target.positive]},
            "risk_level": {"type": "string", "enum": ["Low", "Medium", "High"],
                           "description": (f"High above {serving.risk_levels.high}, Medium above "
                                           f"{serving.risk_levels.medium}, else Low")},
            "model_version": {"type": "string"},
            "customer_id": {"type": "string", "description": "present when scored by customer_id"},
            "feature_set_version": {"type": "string", "description": "present when scored by customer_id"},
            "anomaly": {
                "type": "object", "required": ["score", "is_outlier", "out_of_range"],
                "additionalProperties": False,
                "description": "the champion's Isolation Forest (fitted on its training data): is this "
                               "customer unlike those the model learned from?",
                "properties": {"score": {"type": "number"}, "is_outlier": {"type": "boolean"},
                               "out_of_range": {"type": "array", "items": {"type": "string"}}}},
            "explanation": explanation,
        },
    }
    batch_response = {"type": "object", "required": ["predictions", "model_version"],
                      "additionalProperties": False,
                      "properties": {"predictions": {"type": "array", "items": _ref("Prediction")},
                                     "model_version": {"type": "string"}}}
    field_error = {"type": "object", "required": ["field", "problem"], "additionalProperties": False,
                   "properties": {"field": {"type": "string"}, "problem": {"type": "string"}}}
    error = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
    health = {
        "type": "object", "required": ["status", "model_loaded", "model_version", "features_count", "redis"],
        "properties": {
            "status": {"type": "string", "enum": ["healthy", "degraded", "unhealthy"]},
            "model_loaded": {"type": "boolean"},
            "model_version": {"type": "string", "nullable": True},
            "features_count": {"type": "integer"},
            "redis": {"type": "string", "enum": ["ok", "unavailable"]},
            "feature_set_version": {"type": "string", "nullable": True},
            "problems": {"type": "array", "items": {"type": "string"}},
        },
    }
    model = {"type": "object",
             "required": ["name", "version", "run_id", "metrics", "data_version", "threshold"],
             "properties": {"name": {"type": "string"}, "version": {"type": "string"},
                            "run_id": {"type": "string"}, "candidate": {"type": "string", "nullable": True},
                            "kind": {"type": "string"},
                            "metrics": {"type": "object", "additionalProperties": {"type": "number"}},
                            "data_version": {"type": "string", "nullable": True},
                            "threshold": {"type": "number"}, "loaded_at": {"type": "number"},
                            "load_s": {"type": "number", "nullable": True, "description": (
                                "seconds this worker took to load the served version: download, file "
                                "check, tree compilation, a test row")},
                            "last_checked_at": {"type": "number", "nullable": True,
                                                "description": "when this worker last asked for @champion"},
                            "reload_interval_s": {"type": "number"},
                            "integrity": {"type": "object", "description": (
                                "the served files matched their registered SHA-256 (model_sha256) when "
                                "loaded; refused: a newer @champion this worker would not load because its "
                                "files differ from their digest (null when none)"),
                                "properties": {"model_sha256": {"type": "string", "nullable": True},
                                               "verified": {"type": "boolean"},
                                               "refused": {"type": "object", "nullable": True, "properties": {
                                                   "version": {"type": "string"},
                                                   "error": {"type": "string"},
                                                   "at": {"type": "number"}}}}},
                            "problem": {"type": "string", "nullable": True,
                                        "description": "this worker's last champion-check problem"},
                            "workers": {"type": "array", "description": "every live worker's last check",
                                        "items": {
                                "type": "object", "required": ["pid", "last_checked_at"],
                                "properties": {"pid": {"type": "integer"},
                                               "last_checked_at": {"type": "number", "nullable": True}}}},
                            "scoring": {"type": "object", "description": (
                                "how rows are scored: path 'compiled' (the model's trees compiled and "
                                "verified against the library when loaded) or 'library'"),
                                "properties": {"path": {"type": "string", "enum": ["compiled", "library"]},
                                               "trees": {"type": "integer"}, "depth": {"type": "integer"},
                                               "layout": {"type": "string"},
                                               "verified_max_abs_diff": {"type": "number"}}}}}
    errors_422 = _json({"type": "array", "items": _ref("FieldError"), "minItems": 1},
                       "Invalid request: every bad field with its problem")
    predict_ok = {"description": "The prediction (a batch: one per instance, in order)", "content": {JSON: {
        "schema": {"oneOf": [_ref("Prediction"), _ref("BatchPrediction")]}}}}
    return {
        "openapi": "3.0.3",
        "info": {"title": "churnops serving", "version": "1",
                 "description": "Churn predictions from the @champion model of the MLflow registry."},
        "paths": {
            "/predict": {"post": {
                "summary": "Score one customer (fields or customer_id) or a batch of instances",
                "operationId": "predict",
                "parameters": [{"name": "explain", "in": "query", "required": False,
                                "schema": {"type": "boolean", "default": False},
                                "description": "add the features that raise and lower this customer's risk"}],
                "requestBody": {"required": True, "content": {JSON: {"schema": {"oneOf": [
                    _ref("Customer"), _ref("CustomerId"), _ref("Batch")]}}}},
                "security": _security("predictToken", auth_required),
                "responses": {
                    "200": predict_ok,
                    "400": _json(_ref("Error"), "The body is not JSON, or the HTTP request is malformed"),
                    **_auth_responses("predict"),
                    "404": _json(_ref("Error"), "Unknown customer_id"),
                    "413": _json(_ref("Error"), f"Body larger than {serving.max_body_bytes} bytes"),
                    "415": _json(_ref("Error"), "The body is not declared as application/json"),
                    "422": errors_422,
                    "503": _json(_ref("Error"), "No model loaded, or the feature store is unavailable "
                                                "(lookups by customer_id)"),
                }}},
            "/health": {"get": {"summary": "Liveness and readiness", "operationId": "health", "responses": {
                "200": _json(_ref("Health"), "Healthy, or degraded (Redis unavailable: lookups by id fail)"),
                "503": _json(_ref("Health"), "Unhealthy: no model loaded")}}},
            "/model": {"get": {"summary": "The champion being served", "operationId": "model",
                               "security": _security("operatorToken", auth_required), "responses": {
                "200": _json(_ref("Model"), "Version, metrics, data version, each worker's last check"),
                **_auth_responses("operator"),
                "503": _json(_ref("Error"), "No model loaded")}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "operationId": "metrics",
                                 "security": _security("operatorToken", auth_required), "responses": {
                "200": {"description": "Prometheus text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}}},
                **_auth_responses("operator")}}},
            "/openapi.json": {"get": {"summary": "This document", "operationId": "openapi", "responses": {
                "200": _json({"type": "object"}, "OpenAPI 3.0 document")}}},
            "/": {"get": {"summary": "A page to try a prediction", "operationId": "page", "responses": {
                "200": {"description": "HTML page",
                        "content": {"text/html": {"schema": {"type": "string"}}}}}}},
        },
        "components": {"securitySchemes": {
            "predictToken": {"type": "http", "scheme": "bearer", "description": (
                "A token of CHURNOPS_PREDICT_TOKENS(_FILE); required when the server has tokens")},
            "operatorToken": {"type": "http", "scheme": "bearer", "description": (
                "A token of CHURNOPS_OPERATOR_TOKENS(_FILE), for /model and /metrics")},
        }, "schemas": {
            "Customer": customer, "CustomerId": by_id, "Batch": batch, "Prediction": prediction,
            "BatchPrediction": batch_response, "FieldError": field_error, "Error": error, "Health": health,
            "Model": model, "Explanation": explanation,
        }},
    }
