"""Reliability of the real server: fuzzing from its own OpenAPI document, champion swaps under load, and a
Redis outage under load."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import pytest
import requests

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_1000_generated_requests_from_the_openapi_document_get_no_5xx(live_server: Any) -> None:
    """schemathesis generates valid and invalid requests for every operation; every answer must be a
    documented status with a body matching the document, and never a server error."""
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    schema = schemathesis.openapi.from_url(live_server.url + "/openapi.json")
    strategy = st.one_of(schema.as_strategy(schemathesis.GenerationMode.POSITIVE),
                         schema.as_strategy(schemathesis.GenerationMode.NEGATIVE))
    statuses: Counter[int] = Counter()
    operations: Counter[str] = Counter()
    checks = [not_a_server_error, status_code_conformance, content_type_conformance,
              response_schema_conformance]
    session = requests.Session()

    @settings(max_examples=1100, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def exercise(case: Any) -> None:
        response = case.call(base_url=live_server.url, session=session, timeout=20)
        statuses[response.status_code] += 1
        operations[f"{case.method} {case.path}"] += 1
        case.validate_response(response, checks=checks)

    exercise()
    total = sum(statuses.values())
    assert total >= 1000, statuses
    assert not [s for s in statuses if s >= 500], statuses
    assert statuses[200] > 50 and statuses[422] > 50, statuses  # both valid and invalid bodies were sent
    assert operations["POST /predict"] > 500, operations


def test_50_clients_see_no_failure_while_the_champion_is_swapped_10_times(
        live_server: Any, champion_v1: Any, example_body: dict[str, Any]) -> None:
    store = champion_v1
    v1, v2 = store.versions
    cid = str(store.gold.iloc[3][store.settings.schema.id_column])
    stop = threading.Event()
    results: Counter[tuple[int, str]] = Counter()
    failures: list[str] = []
    lock = threading.Lock()
    last_version = {"value": v1}

    def client(i: int) -> None:
        body = example_body if i % 2 else {"customer_id": cid}
        with requests.Session() as session:
            while not stop.is_set():
                try:
                    response = session.post(live_server.url + "/predict", json=body, timeout=30)
                except requests.RequestException as exc:
                    with lock:
                        failures.append(repr(exc))
                    continue
                version = response.json().get("model_version", "") if response.status_code == 200 else ""
                with lock:
                    results[(response.status_code, version)] += 1
                    if version:
                        last_version["value"] = version
                    if response.status_code != 200:
                        failures.append(f"{response.status_code}: {response.text[:200]}")

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(50)]
    for t in threads:
        t.start()
    try:
        for swap in range(10):
            target = v2 if swap % 2 == 0 else v1
            store.set_champion(target)
            deadline = time.monotonic() + 30
            while last_version["value"] != target and time.monotonic() < deadline:
                time.sleep(0.05)
            assert last_version["value"] == target, f"swap {swap}: version {target} never answered"
            time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert not failures, failures[:5]
    assert {version for (_, version) in results} == {v1, v2}
    assert sum(results.values()) > 200


def test_redis_outage_keeps_full_payloads_answering_and_recovers_by_itself(
        redis_process_factory: Any, server_factory: Any, champion_v1: Any,
        example_body: dict[str, Any]) -> None:
    """A Redis of the test's own is stopped under load: full payloads keep succeeding, lookups by id answer
    503 with a message, /health says degraded; when Redis is back everything recovers without a restart,
    and the rows scored during the outage reach the prediction log."""
    from churnops.feature_store import FeatureStore
    from churnops.prediction_log import PredictionLog
    from churnops.settings import load_settings

    store = champion_v1
    redis = redis_process_factory()
    settings = load_settings(home=store.home, env={"REDIS_URL": redis.url})
    FeatureStore.from_settings(settings).push(store.features)
    server = server_factory({"REDIS_URL": redis.url})
    url = server.url
    cid = str(store.gold.iloc[4][settings.schema.id_column])

    phase = {"value": "up"}
    stop = threading.Event()
    seen: Counter[tuple[str, str, int]] = Counter()
    messages: list[str] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client(kind: str) -> None:
        body = example_body if kind == "full" else {"customer_id": cid}
        with requests.Session() as session:
            while not stop.is_set():
                before = phase["value"]
                try:
                    response = session.post(url + "/predict", json=body, timeout=30)
                except requests.RequestException as exc:
                    with lock:
                        errors.append(repr(exc))
                    continue
                # a request that straddles a phase change belongs to neither phase
                current = before if phase["value"] == before else "transition"
                with lock:
                    seen[(current, kind, response.status_code)] += 1
                    if response.status_code == 503:
                        messages.append(response.json()["error"])
                time.sleep(0.01)

    threads = [threading.Thread(target=client, args=(kind,), daemon=True)
               for kind in ("full", "full", "id", "id")]
    for t in threads:
        t.start()
    try:
        time.sleep(1.5)
        phase["value"] = "transition"
        redis.stop(save=True)
        time.sleep(1.0)
        phase["value"] = "down"
        time.sleep(2.5)
        health = requests.get(url + "/health", timeout=10)
        assert health.status_code == 200
        assert health.json()["status"] == "degraded" and health.json()["redis"] == "unavailable"
        phase["value"] = "recovering"
        redis.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if requests.post(url + "/predict", json={"customer_id": cid}, timeout=10).status_code == 200:
                break
            time.sleep(0.1)
        phase["value"] = "back"
        time.sleep(1.5)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)

    assert not errors, errors[:5]
    statuses = {(p, k): sorted({s for (pp, kk, s) in seen if (pp, kk) == (p, k)}) for (p, k, _) in seen}
    assert {s for (_, k, s) in seen if k == "full"} == {200}, statuses  # full payloads never fail
    assert seen[("down", "full", 200)] > 0, statuses  # ... including while Redis was down
    assert statuses[("up", "id")] == [200]
    assert statuses[("down", "id")] == [503], statuses
    assert statuses[("back", "id")] == [200], statuses
    assert messages and all("feature store is unavailable" in m for m in messages), messages[:3]
    assert requests.get(url + "/health", timeout=10).json()["status"] == "healthy"

    scored = sum(n for (p, k, s), n in seen.items() if s == 200)
    log = PredictionLog.from_settings(settings)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(log.read_window()) < scored:
        time.sleep(0.2)
    logged = len(log.read_window())
    assert logged >= scored, f"{scored} rows scored, {logged} in the prediction log"
