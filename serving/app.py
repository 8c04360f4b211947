"""The Flask application: ``create_app(settings)`` builds it; gunicorn (``churnops serve``) runs it.

Routes: ``POST /predict`` (fields, ``customer_id`` or ``instances``; ``?explain=true``), ``GET /health``,
``GET /metrics``, ``GET /model``, ``GET /openapi.json``, ``GET /``. ``/predict``, ``/model`` and ``/metrics``
take bearer tokens when tokens are configured (:mod:`serving.auth`); ``/predict`` takes only
``application/json`` (415 otherwise: a page on another site cannot post a form or text into the log).

The request path is lean: the body is parsed once, checked by a validator compiled from the schema, and the
validated row is encoded once and scored by the champion (its compiled trees, :mod:`churnops.trees`, and
its outlier detector); the prediction log is appended to a queue that a background thread
sends to Redis. Bad input is answered with 400/413/422, never 5xx; a missing model or an unreachable
feature store with 503 and a message.
"""

from __future__ import annotations

import json
import time
from typing import Any

import orjson
from flask import Flask, Response, request
from werkzeug.exceptions import BadRequest, HTTPException, RequestEntityTooLarge, RequestTimeout

from churnops.feature_store import (
    FeatureStore,
    FeatureStoreError,
    FeatureStoreUnavailable,
    NoFeatureSet,
    connect,
)
from churnops.logs import get_logger
from churnops.prediction_log import PredictionLog
from churnops.settings import Settings, load_settings
from serving.auth import Auth
from serving.metrics import Metrics
from serving.model import ModelHolder
from serving.openapi import build_spec
from serving.page import render_page
from serving.validation import BadJson, Parsed, RequestError, RequestValidator, parse_json

log = get_logger(__name__)

JSON_TYPE = "application/json"
EXTENSION = "churnops"
_TRUE = {"true", "1", "yes", ""}
_FALSE = {"false", "0", "no"}


class ServingState:
    """Everything the routes share; one per app (per worker process)."""

    def __init__(self, settings: Settings, holder: ModelHolder, store: FeatureStore, plog: PredictionLog,
                 metrics: Metrics, auth: Auth | None = None) -> None:
        self.settings = settings
        self.auth = auth or Auth()
        self.holder = holder
        self.store = store
        self.plog = plog
        self.metrics = metrics
        serving = settings.params.serving
        self.validator = RequestValidator(settings.schema, serving.max_batch)
        self.max_body = serving.max_body_bytes
        self.risk = serving.risk_levels
        self.top_k = serving.explain_top_k
        self.positive = settings.schema.target.positive
        self.negative = settings.schema.target.negative
        self.spec = json.dumps(build_spec(settings, auth_required=self.auth.enabled)).encode()
        schema = settings.schema
        self.api_name = {c: schema.api_field(c) for c in schema.feature_columns}
        for a, b in schema.ratios.values():
            self.api_name[f"{a}/{b}"] = f"{schema.api_field(a)}/{schema.api_field(b)}"

    def close(self) -> None:
        self.holder.stop()
        self.plog.close()


def _json(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(doc), status=status, mimetype=JSON_TYPE, headers=headers)


def _error(status: int, message: str, **extra: Any) -> Response:
    return _json({"error": message, **extra}, status)


def create_app(settings: Settings | None = None, *, holder: ModelHolder | None = None,
               redis_client: Any = None, background: bool = True, auth: Auth | None = None) -> Flask:
    """Build the app: load the champion (a missing one is retried in the background), connect lazily to
    Redis, start the reload thread when `background`. Tokens come from the environment unless `auth` is
    given."""
    settings = settings or load_settings()
    auth = auth or Auth()
    metrics = Metrics()
    fs = settings.params.feature_store
    client = redis_client or connect(settings.redis_url, connect_timeout_s=fs.connect_timeout_s,
                                     socket_timeout_s=fs.read_timeout_s)
    store = FeatureStore.from_settings(settings, client=client)
    plog = PredictionLog.from_settings(
        settings, client=client,
        on_written=lambda n: metrics.prediction_log_rows.labels("written").inc(n),
        on_dropped=lambda n: metrics.prediction_log_rows.labels("dropped").inc(n))
    holder = holder or ModelHolder(settings, on_change=metrics.model_changed, on_check=metrics.model_checked)
    holder.check()
    if background:
        holder.start()
    state = ServingState(settings, holder, store, plog, metrics, auth)

    app = Flask("churnops_serving")
    app.config["MAX_CONTENT_LENGTH"] = settings.params.serving.max_body_bytes
    app.extensions[EXTENSION] = state
    _register_hooks(app, state)
    _register_routes(app, state)
    return app


def state_of(app: Flask) -> ServingState:
    return app.extensions[EXTENSION]


# -- hooks: metrics and errors --------------------------------------------------------------------
_METHODS = {"GET", "POST", "HEAD", "OPTIONS", "PUT", "DELETE", "PATCH"}


def _register_hooks(app: Flask, state: ServingState) -> None:
    metrics = state.metrics

    auth = state.auth

    @app.before_request
    def _start_timer() -> Response | None:
        environ = request.environ
        environ["churnops.t0"] = time.perf_counter()
        if auth.enabled:
            denied = auth.check(environ.get("PATH_INFO", ""), environ.get("HTTP_AUTHORIZATION"))
            if denied is not None:
                return _json({"error": denied.message}, denied.status,
                             {"WWW-Authenticate": denied.challenge})
        return None

    @app.after_request
    def _observe(response: Response) -> Response:
        t0 = request.environ.get("churnops.t0")
        if t0 is not None:
            rule = request.url_rule
            method = request.method if request.method in _METHODS else "other"
            metrics.observe_request(rule.rule if rule is not None else "unmatched", method,
                                    response.status_code, time.perf_counter() - t0)
        return response

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        if status == 413:
            message = (f"the body is larger than {app.config['MAX_CONTENT_LENGTH']} bytes "
                       f"(serving.max_body_bytes); send fewer instances per request")
        elif status == 404:
            message = f"no route {request.path}; the API is described at /openapi.json"
        elif status == 405:
            message = f"{request.method} is not allowed on {request.path}"
        else:
            message = exc.description or exc.name
        headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
        return _json({"error": message}, status, headers)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.error("request.failed", path=request.path, method=request.method, error=repr(exc), exc_info=True)
        return _error(500, "internal error; the server log has the details")


# -- routes ---------------------------------------------------------------------------------------
def _register_routes(app: Flask, state: ServingState) -> None:
    validator = state.validator
    holder = state.holder

    @app.post("/predict")
    def predict() -> Response:
        return handle_predict(state)

    @app.get("/health")
    def health() -> Response:
        model = holder.current
        problems = []
        try:
            fs_version = state.store.current_version()
            redis_state = "ok"
            if fs_version is None:
                problems.append("no features pushed: lookups by customer_id answer 503 "
                                "(run `churnops features push`)")
        except FeatureStoreError as exc:
            fs_version, redis_state = None, "unavailable"
            problems.append(f"Redis unavailable: lookups by customer_id answer 503 and the prediction log "
                            f"is queued in memory ({exc})")
        if model is None:
            problems.insert(0, "no model loaded: " + (holder.last_error or "the champion is loading"))
        elif holder.last_error:
            problems.append(f"serving version {model.version}; the last champion check failed: "
                            f"{holder.last_error}")
        status = "unhealthy" if model is None else ("healthy" if not problems else "degraded")
        doc = {"status": status, "model_loaded": model is not None,
               "model_version": str(model.version) if model is not None else None,
               "features_count": len(validator.specs), "redis": redis_state,
               "feature_set_version": fs_version, "problems": problems}
        return _json(doc, 503 if model is None else 200)

    @app.get("/model")
    def model_info() -> Response:
        model = holder.current
        if model is None:
            return _error(503, "no model is loaded: " + (holder.last_error or "the champion is loading"))
        info = dict(model.info or {})
        doc = {"name": info.get("name") or state.settings.model_name,
               "version": str(model.version), "run_id": model.run_id, "candidate": info.get("candidate"),
               "kind": model.scorer.kind, "metrics": info.get("metrics") or {},
               "data_version": info.get("data_version"), "threshold": float(model.scorer.threshold),
               "scoring": model.scorer.describe(),
               "loaded_at": holder.loaded_at, "load_s": holder.load_s, "last_checked_at": holder.last_check,
               "reload_interval_s": holder.interval_s, "workers": state.metrics.worker_checks(),
               # the served files matched this digest when loaded; `refused`: a newer champion this worker
               # would not load because its files differ from their registered digest
               "integrity": {"model_sha256": info.get("model_sha256"), "verified": True,
                             "refused": holder.last_refusal},
               "problem": holder.last_error}
        for key in ("registered_at", "champion_since", "git_commit", "params_hash", "model_uri"):
            if info.get(key) is not None:
                doc[key] = info[key]
        return _json(doc)

    @app.get("/metrics")
    def metrics() -> Response:
        payload, content_type = state.metrics.render()
        return Response(payload, mimetype=None, content_type=content_type)

    @app.get("/openapi.json")
    def openapi() -> Response:
        return Response(state.spec, mimetype=JSON_TYPE)

    @app.get("/")
    def page() -> Response:
        model = holder.current
        return Response(render_page(state.settings, str(model.version) if model is not None else None),
                        mimetype="text/html")


def request_body(environ: dict[str, Any], limit: int) -> bytes:
    """The request body, read straight from the server's input (gunicorn has already framed it); over
    `limit` bytes raises 413 before anything is parsed. Without a declared length (chunked transfer
    encoding) at most `limit` + 1 bytes are read to tell. A body that stops arriving is 408; one whose
    framing is broken (a bad chunk size, cut off half-way) is 400."""
    length = environ.get("CONTENT_LENGTH")
    stream = environ["wsgi.input"]
    try:
        if length:
            if not length.isdigit():
                raise BadRequest(f"Content-Length {length[:40]!r} is not a number")
            n = int(length)
            if n > limit:
                raise RequestEntityTooLarge()
            return stream.read(n) if n else b""
        if environ.get("wsgi.input_terminated"):
            data = stream.read(limit + 1)
            if len(data) > limit:
                raise RequestEntityTooLarge()
            return data
    except TimeoutError as exc:
        raise RequestTimeout("the body did not arrive in time; send it whole") from exc
    except OSError as exc:  # the server's framing errors (gunicorn: InvalidChunkSize, NoMoreData, ...)
        raise BadRequest(f"the body is malformed or was cut off: {str(exc)[:200] or type(exc).__name__}") \
            from exc
    return b""


def is_json(environ: dict[str, Any]) -> bool:
    """Whether the request declares a JSON body (``application/json``, any parameters)."""
    content_type = environ.get("CONTENT_TYPE") or ""
    return content_type.split(";", 1)[0].strip().lower() == JSON_TYPE


def handle_predict(state: ServingState) -> Response:
    """POST /predict for the current request (see the module doc)."""
    environ = request.environ
    # the query string is parsed only when there is one (most requests have none)
    explain = request.args.get("explain") if environ.get("QUERY_STRING") else None
    if explain is not None:
        value = explain.lower()
        if value in _TRUE:
            explain = True
        elif value in _FALSE:
            explain = False
        else:
            problem = f"expected true or false, got {explain!r}"
            return _json([{"field": "explain", "problem": problem}], 422)
    if not is_json(environ):
        got = (environ.get("CONTENT_TYPE") or "none")[:80]
        return _error(415, f"/predict takes a JSON body: send 'Content-Type: application/json' (got {got!r})")
    try:
        body = parse_json(request_body(environ, state.max_body))
    except BadJson as exc:
        return _error(400, str(exc))
    try:
        parsed = state.validator.parse(body)
    except RequestError as exc:
        return _json(exc.errors, 422)
    holder = state.holder
    model = holder.current  # read once: a swap cannot change the model under this request
    if model is None:
        return _error(503, "no model is loaded: " + (holder.last_error or "the champion is loading"))
    if explain and not _explains(model):
        return _json([{"field": "explain", "problem": (
            f"explanations are not available for the current champion ({model.scorer.kind})")}], 422)
    return _score(state, model, parsed, bool(explain))


def _explains(model: Any) -> bool:
    return bool(model.scorer.explains)


def _score(state: ServingState, model: Any, parsed: Parsed, explain: bool) -> Response:
    items = parsed.items
    records: list[dict[str, Any] | None] = [item.record for item in items]
    ids = [item.customer_id for item in items]
    fs_version = None
    if parsed.kind != "features":
        lookup = [i for i, cid in enumerate(ids) if cid is not None]
        try:
            stored = state.store.get_many([ids[i] for i in lookup])
        except FeatureStoreUnavailable as exc:
            state.metrics.feature_store_errors.labels("unavailable").inc()
            return _error(503, f"the feature store is unavailable, so customers cannot be scored by id; "
                               f"send the customer's fields instead, or retry later ({exc})")
        except NoFeatureSet as exc:
            state.metrics.feature_store_errors.labels("no_feature_set").inc()
            return _error(503, str(exc))
        except FeatureStoreError as exc:
            state.metrics.feature_store_errors.labels("error").inc()
            return _error(503, f"the feature store cannot be read: {exc}")
        unknown = [ids[i] for i, found in zip(lookup, stored, strict=True) if found is None]
        if unknown:
            return _error(404, f"unknown customer_id: {', '.join(map(str, unknown[:10]))}"
                               + (f" (and {len(unknown) - 10} more)" if len(unknown) > 10 else ""),
                          customer_ids=unknown[:100])
        for i, found in zip(lookup, stored, strict=True):
            problems = state.validator.check_record(found.features)
            if problems:
                state.metrics.feature_store_errors.labels("incompatible").inc()
                return _error(503, f"the stored features of customer {found.customer_id} (feature set "
                                   f"{found.version}) do not fit the current schema: push the features again "
                                   f"(churnops features push)", problems=problems)
            records[i] = found.features
            fs_version = found.version
    probabilities, anomalies = model.score_records(records)
    explanations = None
    if explain:
        try:
            explanations = model.scorer.explain(records)
        except Exception as exc:  # e.g. XGBoost refuses a derived feature that overflows float32
            log.warning("explain.failed", model_version=model.version, error=str(exc).splitlines()[0][:300])
            return _json([{"field": "explain", "problem": (
                "the model cannot explain this request (a derived feature is out of the model's numeric "
                "range); the prediction alone is available without explain=true")}], 422)
    version = str(model.version)
    threshold = model.scorer.threshold
    risk = state.risk
    out = []
    counts: dict[str, int] = {}
    for i, p in enumerate(probabilities.tolist()):
        label = 1 if p >= threshold else 0
        level = risk.level(p)
        counts[level] = counts.get(level, 0) + 1
        doc = {"prediction": label, "attrition_probability": round(p, 6),
               "retention_probability": round(1.0 - p, 6),
               "status": state.positive if label else state.negative, "risk_level": level,
               "model_version": version}
        if ids[i] is not None:
            doc["customer_id"] = ids[i]
            doc["feature_set_version"] = fs_version
        if anomalies is not None:
            doc["anomaly"] = anomalies[i].to_dict()
        if explanations is not None:
            doc["explanation"] = _explanation(explanations[i], state)
        out.append(doc)
    state.plog.append(records, probabilities, version, ids)
    for level, n in counts.items():
        state.metrics.count_prediction(level, version, n)
    if parsed.kind == "batch":
        return _json({"predictions": out, "model_version": version})
    return _json(out[0])


def _explanation(contributions: list[Any], state: ServingState) -> dict[str, list[dict[str, Any]]]:
    name = state.api_name
    k = state.top_k
    raises = [c for c in contributions if c.effect > 0][:k]
    lowers = [c for c in contributions if c.effect < 0][:k]
    return {"raises_risk": [{"feature": name.get(c.feature, c.feature), "effect": round(c.effect, 4)}
                            for c in raises],
            "lowers_risk": [{"feature": name.get(c.feature, c.feature), "effect": round(c.effect, 4)}
                            for c in lowers]}
