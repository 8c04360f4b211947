"""The champion is swapped without a restart, never under a request in flight, and a bad new champion
never replaces a good one."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from serving.app import create_app
from serving.model import ModelHolder


def test_a_new_champion_is_picked_up_by_the_next_check(champion_v1: Any) -> None:
    store = champion_v1
    holder = ModelHolder(store.settings)
    assert holder.check() is True and holder.current.version == store.versions[0]
    assert holder.check() is False  # unchanged: nothing is loaded again
    old = holder.current
    store.set_champion(store.versions[1])
    assert holder.check() is True
    assert holder.current.version == store.versions[1] and holder.current.scorer.threshold == 0.4
    # the old model object still scores for whoever holds it (a request in flight)
    assert old.scorer.predict_proba_records([holder._sample])[0] >= 0


def test_the_background_thread_swaps_within_the_reload_interval(champion_v1: Any) -> None:
    store = champion_v1
    holder = ModelHolder(store.settings, interval_s=0.1)
    holder.check()
    holder.start()
    try:
        store.set_champion(store.versions[1])
        deadline = time.monotonic() + 20
        while holder.current.version != store.versions[1] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert holder.current.version == store.versions[1]
    finally:
        holder.stop()


def test_a_champion_that_cannot_load_never_replaces_the_current_one(champion_v1: Any) -> None:
    from churnops import registry

    store = champion_v1
    outcomes: list[str] = []
    attempts = {"n": 0}

    def broken_load(settings: Any) -> Any:
        attempts["n"] += 1
        if attempts["n"] > 1:
            raise OSError("artifact store unreachable")
        return registry.load_champion(settings)

    holder = ModelHolder(store.settings, load_champion=broken_load, on_check=outcomes.append)
    holder.check()
    store.set_champion(store.versions[1])
    assert holder.check() is False
    assert holder.current.version == store.versions[0]
    assert "artifact store unreachable" in holder.last_error
    assert outcomes == ["loaded", "load_failed"]


def FakeChampion(version: str, scorer: Any) -> Any:  # noqa: N802 (reads as the class it builds)
    from churnops.registry import ChampionModel

    return ChampionModel(version=version, run_id="run", scorer=scorer, info={})


class GatedScorer:
    """Wraps a real scorer; blocks inside predict until released (a request in flight)."""

    def __init__(self, scorer: Any) -> None:
        self.scorer = scorer
        self.entered = threading.Event()
        self.release = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.scorer, name)

    def predict_proba_encoded(self, encoded: Any) -> Any:
        self.entered.set()
        assert self.release.wait(30)
        return self.scorer.predict_proba_encoded(encoded)


def test_a_request_in_flight_finishes_on_the_model_it_started_with(model_store: Any, pushed: str) -> None:
    from churnops import registry

    real = registry.load_champion(model_store.settings).scorer
    gated = GatedScorer(real)
    models = {"a": FakeChampion("a", gated), "b": FakeChampion("b", real)}
    current = {"version": "a"}
    holder = ModelHolder(model_store.settings, champion_version=lambda s: current["version"],
                         load_champion=lambda s: models[current["version"]])
    gated.release.set()  # let the warm-up through
    app = create_app(model_store.settings, holder=holder, background=False)
    gated.release.clear()
    gated.entered.clear()  # the warm-up went through the scorer too
    from serving.openapi import example_request

    body = json.dumps(example_request(model_store.settings))
    answer: dict[str, Any] = {}

    def request() -> None:
        answer["response"] = app.test_client().post("/predict", data=body, content_type="application/json")

    thread = threading.Thread(target=request)
    thread.start()
    assert gated.entered.wait(30)
    current["version"] = "b"
    assert holder.check() is True and holder.current.version == "b"  # swapped while the request waits
    gated.release.set()
    thread.join(30)
    assert answer["response"].status_code == 200
    assert answer["response"].get_json()["model_version"] == "a"
    assert app.test_client().post("/predict", data=body, content_type="application/json").get_json()[
        "model_version"] == "b"
    app.extensions["churnops"].close()


def test_without_a_champion_the_server_is_unhealthy_and_says_why(model_store: Any, pushed: str) -> None:
    holder = ModelHolder(model_store.settings, champion_version=lambda s: None,
                         load_champion=lambda s: pytest.fail("nothing to load"))
    app = create_app(model_store.settings, holder=holder, background=False)
    client = app.test_client()
    health = client.get("/health")
    assert health.status_code == 503
    assert health.get_json()["status"] == "unhealthy" and health.get_json()["model_loaded"] is False
    assert "no model holds @champion" in health.get_json()["problems"][0]
    response = client.post("/predict", json={"customer_id": "1"})
    assert response.status_code == 503 and "churnops train" in response.get_json()["error"]
    assert client.get("/model").status_code == 503
    app.extensions["churnops"].close()
