"""Prometheus metrics of the serving process, correct under gunicorn's several worker processes.

Under gunicorn (``churnops serve``) ``PROMETHEUS_MULTIPROC_DIR`` is set before any worker starts: every
worker writes its samples to memory-mapped files there, and ``GET /metrics`` (answered by any one worker)
aggregates all of them with ``MultiProcessCollector``; the gunicorn ``child_exit`` hook marks dead workers.
Without that variable (tests, a single process) each app gets its own registry.

Metrics:
    churnops_http_requests_total{endpoint,method,status}
    churnops_http_request_duration_seconds{endpoint,method,status}   histogram
    churnops_predictions_total{risk_level,model_version}             one per scored row
    churnops_model_workers{version}        workers serving each model version (live workers only)
    churnops_model_checks_total{outcome}   champion checks: unchanged, loaded, load_failed, registry, ...
    churnops_model_last_check_timestamp_seconds{pid}   when each live worker last asked for the champion
    churnops_feature_store_errors_total{kind}   unavailable, no_feature_set, error, incompatible
    churnops_prediction_log_rows_total{outcome} written, dropped
"""

from __future__ import annotations

import os
import time
from typing import Any

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_enabled() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


class Metrics:
    def __init__(self, multiprocess: bool | None = None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values

        self.multiprocess = multiprocess_enabled() if multiprocess is None else multiprocess
        if self.multiprocess:
            path = os.environ.get(MULTIPROC_ENV)
            if not path or not os.path.isdir(path):
                raise RuntimeError(f"{MULTIPROC_ENV}={path!r} must name an existing directory for "
                                   f"multiprocess metrics")
            if values.ValueClass.__name__ != "MmapedValue":
                # prometheus_client picks its value class when first imported; if that happened before the
                # variable was set (another module imported it first), pick again now.
                values.ValueClass = values.get_value_class()
            registry = None
        else:
            registry = CollectorRegistry(auto_describe=True)
        self.registry = registry
        self.requests = Counter("churnops_http_requests_total",
                                "HTTP requests by endpoint, method and status",
                                ["endpoint", "method", "status"], registry=registry)
        self.latency = Histogram("churnops_http_request_duration_seconds",
                                 "Time to answer a request, by endpoint, method and status",
                                 ["endpoint", "method", "status"], buckets=LATENCY_BUCKETS, registry=registry)
        self.predictions = Counter("churnops_predictions_total",
                                   "Scored rows by risk level and model version",
                                   ["risk_level", "model_version"], registry=registry)
        self.model_workers = Gauge("churnops_model_workers", "Worker processes serving each model version",
                                   ["version"], multiprocess_mode="livesum", registry=registry)
        self.model_checks = Counter("churnops_model_checks_total", "Champion checks by outcome", ["outcome"],
                                    registry=registry)
        self.last_check = Gauge("churnops_model_last_check_timestamp_seconds",
                                "When each worker last asked the registry for @champion (Unix time)",
                                multiprocess_mode="liveall", registry=registry)
        self.feature_store_errors = Counter("churnops_feature_store_errors_total",
                                            "Failed feature-store lookups by kind", ["kind"],
                                            registry=registry)
        self.prediction_log_rows = Counter("churnops_prediction_log_rows_total",
                                           "Prediction-log rows written to Redis or dropped", ["outcome"],
                                           registry=registry)
        self.last_checked_at: float | None = None
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._prediction_children: dict[tuple[str, str], Any] = {}

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        key = (endpoint, method, status)
        children = self._request_children.get(key)
        if children is None:
            labels = (endpoint, method, str(status))
            children = (self.requests.labels(*labels), self.latency.labels(*labels))
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def count_prediction(self, risk_level: str, model_version: str, n: int = 1) -> None:
        key = (risk_level, model_version)
        child = self._prediction_children.get(key)
        if child is None:
            child = self._prediction_children[key] = self.predictions.labels(risk_level, model_version)
        child.inc(n)

    def model_changed(self, old: Any, new: Any) -> None:
        if old is not None:
            self.model_workers.labels(str(old.version)).set(0)
        if new is not None:
            self.model_workers.labels(str(new.version)).set(1)

    def model_checked(self, outcome: str) -> None:
        self.model_checks.labels(outcome).inc()
        self.last_checked_at = time.time()
        self.last_check.set(self.last_checked_at)

    def worker_checks(self) -> list[dict[str, Any]]:
        """Every live worker's last champion check: ``[{"pid", "last_checked_at"}]`` (one entry, without
        a pid, in a single process)."""
        from prometheus_client import CollectorRegistry
        from prometheus_client.multiprocess import MultiProcessCollector

        if not self.multiprocess:
            return [{"pid": os.getpid(), "last_checked_at": self.last_checked_at}]
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        out = []
        for family in registry.collect():
            if family.name == "churnops_model_last_check_timestamp_seconds":
                out.extend({"pid": int(sample.labels["pid"]), "last_checked_at": sample.value or None}
                           for sample in family.samples)
        return sorted(out, key=lambda w: w["pid"])

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector

        if self.multiprocess:
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
