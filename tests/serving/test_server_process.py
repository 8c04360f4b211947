"""The real server: `churnops serve` (gunicorn, 2 worker processes) answering over HTTP."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import requests

from churnops.prediction_log import PredictionLog


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the Prometheus text `text` (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and line.split(" ")[0] != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_gunicorn_serves_full_payloads_and_lookups_by_id(live_server: Any, model_store: Any,
                                                         example_body: dict[str, Any]) -> None:
    response = requests.post(live_server.url + "/predict", json=example_body, timeout=10)
    assert response.status_code == 200, response.text
    assert response.json()["model_version"] == model_store.versions[0]
    cid = str(model_store.gold.iloc[0][model_store.settings.schema.id_column])
    response = requests.post(live_server.url + "/predict", json={"customer_id": cid}, timeout=10)
    assert response.status_code == 200 and response.json()["customer_id"] == cid


def test_metrics_aggregate_all_workers(live_server: Any, example_body: dict[str, Any]) -> None:
    """Whichever worker answers /metrics, it reports the requests every worker served."""
    url = live_server.url
    before = metric(requests.get(url + "/metrics", timeout=10).text, "churnops_http_requests_total",
                    endpoint="/predict", method="POST", status="200")
    n = 40
    with requests.Session() as session:
        for _ in range(n):
            assert session.post(url + "/predict", json=example_body, timeout=10).status_code == 200
    texts = [requests.get(url + "/metrics", timeout=10).text for _ in range(6)]
    for text in texts:
        after = metric(text, "churnops_http_requests_total", endpoint="/predict", method="POST", status="200")
        assert after - before == n
        assert metric(text, "churnops_model_workers", version="1") == 2  # both live workers serve v1
        assert metric(text, "churnops_http_request_duration_seconds_count", endpoint="/predict",
                      method="POST", status="200") >= n


def test_body_over_the_limit_is_413_over_http(live_server: Any, model_store: Any,
                                               example_body: dict[str, Any]) -> None:
    limit = model_store.settings.params.serving.max_body_bytes
    payload = json.dumps({"instances": [example_body] * (limit // 500 + 10)})
    assert len(payload) > limit
    response = requests.post(live_server.url + "/predict", data=payload, timeout=10,
                             headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert str(limit) in response.json()["error"]


def test_chunked_bodies_are_read_and_limited_too(live_server: Any, model_store: Any,
                                                example_body: dict[str, Any]) -> None:
    """A body without Content-Length (chunked transfer encoding) takes the framework's reader: it is
    scored like any other, and one over the limit is still 413."""
    def chunks(data: bytes, size: int = 100) -> Any:
        for i in range(0, len(data), size):
            yield data[i:i + size]

    data = json.dumps(example_body).encode()
    response = requests.post(live_server.url + "/predict", data=chunks(data), timeout=10,
                             headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    assert response.json()["model_version"] == model_store.versions[0]
    limit = model_store.settings.params.serving.max_body_bytes
    big = json.dumps({"instances": [example_body] * (limit // 500 + 10)}).encode()
    response = requests.post(live_server.url + "/predict", data=chunks(big, 65536), timeout=10,
                             headers={"Content-Type": "application/json"})
    assert response.status_code == 413


def test_every_scored_row_reaches_the_prediction_log(live_server: Any, model_store: Any,
                                                     example_body: dict[str, Any]) -> None:
    log = PredictionLog.from_settings(model_store.settings)
    marker = dict(example_body, customer_age=77, months_on_book=11)
    with requests.Session() as session:
        for _ in range(5):
            response = session.post(live_server.url + "/predict", json={"instances": [marker, marker]},
                                    timeout=10)
            assert response.status_code == 200
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        window = log.read_window(last_n=500)
        rows = window[(window["Customer_Age"] == 77) & (window["Months_on_book"] == 11)]
        if len(rows) == 10:
            break
        time.sleep(0.1)
    assert len(rows) == 10
    assert set(rows["model_version"]) == {model_store.versions[0]}
    assert rows["probability"].between(0, 1).all()


def test_health_reports_the_champion_and_redis(live_server: Any, model_store: Any, pushed: str) -> None:
    doc = requests.get(live_server.url + "/health", timeout=10).json()
    assert doc["status"] == "healthy" and doc["redis"] == "ok" and doc["feature_set_version"] == pushed


def test_threaded_workers_serve_concurrent_requests(server_factory: Any, model_store: Any, pushed: str,
                                                    example_body: dict[str, Any]) -> None:
    """gthread workers (serving.threads > 1): one model, one prediction log, many threads at once."""
    from concurrent.futures import ThreadPoolExecutor

    server = server_factory(workers=1, threads=4)
    cid = str(model_store.gold.iloc[2][model_store.settings.schema.id_column])
    bodies = [example_body if i % 2 else {"customer_id": cid} for i in range(60)]

    def send(body: dict[str, Any]) -> tuple[int, str]:
        response = requests.post(server.url + "/predict?explain=true", json=body, timeout=30)
        return response.status_code, response.json().get("model_version", "")

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(send, bodies))
    assert results == [(200, model_store.versions[0])] * len(bodies)
    text = requests.get(server.url + "/metrics", timeout=10).text
    served = metric(text, "churnops_http_requests_total", endpoint="/predict", method="POST", status="200")
    assert served == 60
