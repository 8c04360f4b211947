"""The prediction log: a capped Redis stream written in the background and read as typed windows."""

from __future__ import annotations

import time
from typing import Any

import pandas as pd
import pytest

from churnops.prediction_log import PredictionLog, read_window, stream_key


def rows(settings: Any, n: int, start_age: int = 20) -> list[dict[str, Any]]:
    schema = settings.schema
    base: dict[str, Any] = {c: (int(spec.min or 0) if spec.integer else 1.25)
                            for c, spec in schema.numeric.items()}
    base.update({c: cats[0] for c, cats in schema.categorical.items()})
    return [dict(base, Customer_Age=start_age + i) for i in range(n)]


def test_appended_rows_are_read_back_typed_and_in_order(settings: Any) -> None:
    log = PredictionLog.from_settings(settings)
    log.append(rows(settings, 3), [0.1, 0.5, 0.9], "7", customer_ids=[None, "42", None], ts=1000.0)
    log.append(rows(settings, 2, start_age=60), [0.2, 0.3], "8", ts=1001.0)
    assert log.flush(5)
    window = log.read_window()
    assert list(window.columns[:5]) == ["entry_id", "ts", "model_version", "probability", "customer_id"]
    assert list(window.columns[5:]) == settings.schema.feature_columns
    assert list(window["Customer_Age"]) == [20, 21, 22, 60, 61]
    assert window["Customer_Age"].dtype == "int64" and window["Credit_Limit"].dtype == "float64"
    assert list(window["probability"]) == [0.1, 0.5, 0.9, 0.2, 0.3]
    assert list(window["model_version"]) == ["7", "7", "7", "8", "8"]
    assert list(window["customer_id"]) == ["", "42", "", "", ""]
    assert list(log.read_window(last_n=2)["Customer_Age"]) == [60, 61]
    assert log.written == 5 and log.pending == 0
    # the documented contract, read with nothing but redis-py
    entry = log.client.xrange(stream_key("fs-test"), count=1)[0][1]
    assert set(entry) == {b"ts", b"model_version", b"probability", b"customer_id", b"features"}


def test_windows_by_time_select_rows_scored_since(settings: Any) -> None:
    log = PredictionLog.from_settings(settings)
    log.append(rows(settings, 2), [0.1, 0.2], "1", ts=time.time() - 3600)
    assert log.flush(5)
    since = time.time() - 1
    log.append(rows(settings, 3, start_age=50), [0.3, 0.4, 0.5], "1")
    assert log.flush(5)
    assert list(log.read_window(since_ts=since)["Customer_Age"]) == [50, 51, 52]
    assert list(log.read_window(last_n=2, since_ts=since)["Customer_Age"]) == [51, 52]
    assert list(read_window(settings, last_n=1)["Customer_Age"]) == [52]
    assert len(log.read_window(since_ts=time.time() + 60)) == 0


def test_the_stream_is_capped_near_its_maxlen(settings: Any) -> None:
    log = PredictionLog.from_settings(settings, batch_size=1000)
    maxlen = settings.params.serving.prediction_log_maxlen
    for _ in range(4):
        log.append(rows(settings, 1000), [0.5] * 1000, "1")
        assert log.flush(10)
    length = log.client.xlen(log.key)
    assert maxlen <= length < maxlen + 200  # approximate trimming (whole stream nodes of 100 entries)
    assert len(log.read_window(last_n=1500)) == length


def test_rows_wait_in_memory_while_redis_is_down_and_arrive_when_it_is_back(
        redis_process_factory: Any, settings: Any) -> None:
    own = redis_process_factory()
    local = settings.model_copy(update={"redis_url": own.url})
    own.stop(save=False)
    dropped: list[int] = []
    log = PredictionLog.from_settings(local, buffer_size=10, on_dropped=dropped.append)
    started = time.monotonic()
    log.append(rows(local, 4), [0.1] * 4, "1")
    log.append(rows(local, 8, start_age=40), [0.2] * 8, "1")
    assert time.monotonic() - started < 0.05  # appending never waits for Redis
    assert not log.flush(0.5)
    assert log.pending == 10 and log.dropped == 2 and sum(dropped) == 2  # the two oldest rows went
    own.start()
    assert log.flush(15)
    ages = list(log.read_window()["Customer_Age"])
    assert ages == [22, 23, *range(40, 48)]
    log.close()


def test_appending_never_blocks_on_a_hung_redis(redis_process_factory: Any, settings: Any) -> None:
    own = redis_process_factory()
    local = settings.model_copy(update={"redis_url": own.url})
    log = PredictionLog.from_settings(local)
    own.pause()
    try:
        started = time.monotonic()
        for _ in range(100):
            log.append(rows(local, 1), [0.3], "1")
        assert time.monotonic() - started < 0.1
    finally:
        own.resume()
    assert log.flush(15)
    assert len(log.read_window()) == 100
    log.close()


def test_a_stream_entry_of_another_shape_is_reported_with_its_id(settings: Any) -> None:
    log = PredictionLog.from_settings(settings)
    entry_id = log.client.xadd(log.key, {"something": "else"}).decode()
    with pytest.raises(Exception, match=entry_id):
        log.read_window()


def test_an_empty_log_reads_as_an_empty_typed_frame(settings: Any) -> None:
    window = PredictionLog.from_settings(settings).read_window(last_n=10)
    assert isinstance(window, pd.DataFrame) and len(window) == 0
    assert list(window.columns[5:]) == settings.schema.feature_columns
