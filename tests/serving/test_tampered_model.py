"""A champion whose files were changed in the artifact store is refused by the running server (real
gunicorn over HTTP): the workers keep the model they have, say why in /health and /metrics, and the
command planted in the files never runs."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests

from tests.conftest import plant_pickle_model, version_folder
from tests.serving.conftest import register_xgboost

pytestmark = pytest.mark.integration


def _checks(server: Any, outcome: str) -> float:
    text = requests.get(server.url + "/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("churnops_model_checks_total{") and f'outcome="{outcome}"' in line)


def _workers_on(server: Any, version: str) -> float:
    text = requests.get(server.url + "/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(f'churnops_model_workers{{version="{version}"}}'))


def test_a_hot_reload_to_a_tampered_champion_keeps_the_old_model_and_never_runs_its_command(
        live_server: Any, champion_v1: Any, example_body: dict[str, Any], tmp_path: Any) -> None:
    store = champion_v1
    serving = store.versions[0]
    # a version of this test's own to tamper with (the suite's v1 and v2 stay intact)
    tampered = register_xgboost(store.settings, store.gold, n_estimators=5, max_depth=2, threshold=0.5)
    marker = tmp_path / "marker"
    plant_pickle_model(version_folder(store.settings, tampered), marker)
    refused_before = _checks(live_server, "integrity_failed")

    store.set_champion(tampered)
    deadline = time.monotonic() + 120
    in_a_row = 0  # /health of either worker: several answers in a row must all report the refusal
    while in_a_row < 8 and time.monotonic() < deadline:
        health = requests.get(live_server.url + "/health", timeout=5).json()
        refused = any(f"refused champion version {tampered}" in p for p in health["problems"])
        in_a_row = in_a_row + 1 if refused else 0
        time.sleep(0.1)
    assert in_a_row >= 8, health
    assert health["status"] == "degraded" and health["model_version"] == serving
    assert any("do not match the SHA-256" in p and f"still serving version {serving}" in p
               for p in health["problems"]), health
    assert _checks(live_server, "integrity_failed") >= refused_before + 2
    assert _workers_on(live_server, serving) == 2 and _workers_on(live_server, tampered) == 0

    for _ in range(6):
        answer = requests.post(live_server.url + "/predict", json=example_body, timeout=10)
        assert answer.status_code == 200 and answer.json()["model_version"] == serving
    for _ in range(4):  # either worker: the served version's digest and the refused version, with the reason
        info = requests.get(live_server.url + "/model", timeout=5).json()
        assert info["version"] == serving and info["integrity"]["verified"] is True, info
        assert len(info["integrity"]["model_sha256"]) == 64, info
        refused = info["integrity"]["refused"]
        assert refused["version"] == tampered and "do not match the SHA-256" in refused["error"], info
    assert not marker.exists()
    assert "model.check_failed" in live_server.log() and "integrity_failed" in live_server.log()


def test_a_server_started_on_a_tampered_champion_serves_nothing_and_says_why(
        model_store: Any, champion_v1: Any, tmp_path: Any) -> None:
    from tests.serving.conftest import LiveServer

    store = champion_v1
    tampered = register_xgboost(store.settings, store.gold, n_estimators=5, max_depth=2, threshold=0.5)
    marker = tmp_path / "marker"
    plant_pickle_model(version_folder(store.settings, tampered), marker)
    store.set_champion(tampered)
    server = LiveServer(store, tmp_path / "serve.log", workers=1)
    try:
        deadline = time.monotonic() + 300
        health: dict[str, Any] = {}
        while time.monotonic() < deadline:
            assert server.proc.poll() is None, server.log()
            try:
                answer = requests.get(server.url + "/health", timeout=5)
            except requests.RequestException:
                time.sleep(0.3)
                continue
            health = answer.json()
            if any(f"refused champion version {tampered}" in p for p in health.get("problems", [])):
                break
            time.sleep(0.3)
        assert answer.status_code == 503 and health["status"] == "unhealthy", health
        assert not health["model_loaded"], health
        assert any("do not match the SHA-256" in p for p in health["problems"]), health
        predict = requests.post(server.url + "/predict", json={"customer_id": "1"}, timeout=10)
        assert predict.status_code == 503 and "refused champion version" in predict.json()["error"]
        assert not marker.exists()
    finally:
        server.stop()
