"""The feature store against a real Redis: push, read, atomic version switch, clean-up, failures."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pandas as pd
import pytest
import redis as redis_lib
from fs_support import fail_third_chunk

from churnops import feature_store as fs


def keys(client: Any, pattern: str = "*") -> list[bytes]:
    return list(client.scan_iter(match=pattern, count=1000))


def test_push_then_read_one_and_many_customers(store: Any, gold: pd.DataFrame, settings: Any,
                                               record_of: Callable) -> None:
    result = store.push(gold, event_time=1718000000.5)
    assert result.rows == len(gold) and result.previous is None and not result.skipped
    assert store.current_version() == result.version
    id_col = settings.schema.id_column
    one = store.get(gold[id_col].iloc[10])
    assert one.features == record_of(gold.iloc[10])
    assert one.version == result.version and one.event_time == 1718000000.5
    assert one.customer_id == str(gold[id_col].iloc[10])
    wanted = [gold[id_col].iloc[0], "nobody", str(gold[id_col].iloc[299])]
    many = store.get_many(wanted)
    assert many[1] is None
    assert many[0].features == record_of(gold.iloc[0]) and many[2].features == record_of(gold.iloc[299])
    info = store.info()
    assert info["version"] == result.version and info["rows"] == len(gold)
    assert info["event_time"] == 1718000000.5


def test_the_label_never_enters_redis(store: Any, gold: pd.DataFrame, settings: Any) -> None:
    frame = gold.copy()
    frame[settings.schema.target.column] = "Attrited Customer"
    store.push(frame)
    client = store.client
    customer_keys = [k for k in keys(client) if b":c:" in k]
    assert len(customer_keys) == len(gold)
    layout = fs.Layout.from_schema(settings.schema)
    for key in customer_keys[:50]:
        fields = client.hgetall(key)
        assert set(fields) == {b"features", b"event_time"}
        assert len(fields[b"features"]) == layout.size  # only the feature columns are packed
    everything = b" ".join(k + b" " + b" ".join(client.hgetall(k).values()) for k in keys(client, "*meta*"))
    for label in (b'"churn"', settings.schema.target.column.encode(), b"Attrited Customer"):
        assert label not in everything


def test_pushing_the_same_data_again_changes_nothing(store: Any, gold: pd.DataFrame) -> None:
    first = store.push(gold)
    count = len(keys(store.client))
    again = store.push(gold)
    assert again.skipped and again.version == first.version
    assert len(keys(store.client)) == count


def test_a_new_version_replaces_the_old_one_and_its_keys_are_removed(store: Any, gold: pd.DataFrame,
                                                                     settings: Any) -> None:
    first = store.push(gold)
    changed = gold.copy()
    changed["Customer_Age"] = 33
    second = store.push(changed, version="2024-07-01")
    assert second.version == "2024-07-01" and second.previous == first.version
    assert second.removed_keys == len(gold) + 2  # the old customers, the old meta and its id list
    assert store.get(gold[settings.schema.id_column].iloc[0]).features["Customer_Age"] == 33
    assert not keys(store.client, f"fs-test:fs:v:{first.version}:*")
    assert set(keys(store.client, "fs-test:fs:v:*")) == {  # the new customers, meta and id list
        *(fs.customer_key("fs-test", "2024-07-01", str(i)).encode() for i in gold[settings.schema.id_column]),
        fs.meta_key("fs-test", "2024-07-01").encode(), fs.ids_key("fs-test", "2024-07-01").encode()}


def test_readers_never_see_half_a_push(store: Any, gold: pd.DataFrame, settings: Any,
                                       record_of: Callable) -> None:
    id_col = settings.schema.id_column
    v1 = store.push(gold).version
    changed = gold.copy()
    changed["Months_on_book"] = 7
    ids = list(gold[id_col].iloc[::6])
    old = {str(i): record_of(r) for i, (_, r) in zip(gold[id_col], gold.iterrows(), strict=True)}
    new = {str(i): record_of(r) for i, (_, r) in zip(changed[id_col], changed.iterrows(), strict=True)}
    seen: list[str] = []
    problems: list[str] = []
    stop = threading.Event()
    reader = fs.FeatureStore.from_settings(settings)

    def read() -> None:
        while not stop.is_set():
            rows = reader.get_many(ids)
            versions = {r.version for r in rows}
            if None in rows or len(versions) != 1:
                problems.append(f"torn read: {versions}, missing={rows.count(None)}")
                continue
            version = versions.pop()
            expected = old if version == v1 else new
            if any(r.features != expected[r.customer_id] for r in rows):
                problems.append(f"values of another version under {version}")
            seen.append(version)

    thread = threading.Thread(target=read)
    thread.start()
    try:
        time.sleep(0.05)
        slow = fs.FeatureStore.from_settings(settings)
        slow.chunk_size = 4  # 75 chunks: plenty of reads land during the push
        v2 = slow.push(changed).version
        time.sleep(0.05)
    finally:
        stop.set()
        thread.join()
    assert not problems, problems[:3]
    assert v1 in seen and v2 in seen
    assert seen.index(v2) > 0 and all(v == v2 for v in seen[seen.index(v2):])  # never back to the old one


def test_a_failed_push_leaves_the_current_version_untouched(store: Any, gold: pd.DataFrame, settings: Any,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            record_of: Callable) -> None:
    v1 = store.push(gold).version
    fail_third_chunk(monkeypatch, RuntimeError("disk on fire"))
    changed = gold.copy()
    changed["Customer_Age"] = 50
    with pytest.raises(RuntimeError, match="disk on fire"):
        store.push(changed, version="broken")
    assert store.current_version() == v1
    assert store.get(gold[settings.schema.id_column].iloc[1]).features == record_of(gold.iloc[1])
    assert not keys(store.client, "fs-test:fs:v:broken:*")
    assert store.client.smembers(fs.registry_key("fs-test")) == {v1.encode()}  # unregistered again
    assert store.client.get(fs.lock_key("fs-test")) is None  # the lock was released


def test_redis_refusing_writes_fails_the_push_and_keeps_the_current_version(
        redis_process_factory: Any, settings: Any, gold: pd.DataFrame) -> None:
    own = redis_process_factory()
    local = settings.model_copy(update={"redis_url": own.url})
    store = fs.FeatureStore.from_settings(local)
    v1 = store.push(gold).version
    big = pd.concat([gold] * 40, ignore_index=True)
    big[settings.schema.id_column] = range(len(big))
    store.client.config_set("maxmemory", store.client.info("memory")["used_memory"] + 500_000)
    store.client.config_set("maxmemory-policy", "noeviction")
    try:
        with pytest.raises(fs.FeatureStoreError, match="refused .* writes .* current version is unchanged"):
            store.push(big)
    finally:
        store.client.config_set("maxmemory", 0)
    assert store.current_version() == v1
    assert store.get(gold[settings.schema.id_column].iloc[0]) is not None


def test_conflicting_content_under_the_current_version_is_refused(store: Any, gold: pd.DataFrame) -> None:
    store.push(gold, version="v1")
    changed = gold.copy()
    changed["Customer_Age"] = 40
    with pytest.raises(fs.FeatureStoreError, match="current feature set with different content"):
        store.push(changed, version="v1")


def test_a_second_push_while_one_runs_is_refused(store: Any, gold: pd.DataFrame) -> None:
    store.client.set(fs.lock_key("fs-test"), "someone-else", px=60_000)
    with pytest.raises(fs.FeatureStoreError, match="another push holds fs-test:fs:lock"):
        store.push(gold)
    assert store.current_version() is None


def test_bad_gold_layers_are_refused_with_the_reason(store: Any, gold: pd.DataFrame, settings: Any) -> None:
    id_col = settings.schema.id_column
    duplicated = pd.concat([gold.head(3), gold.head(1)])
    with pytest.raises(fs.FeatureStoreError, match="1 duplicated customer ids"):
        store.push(duplicated)
    missing_id = gold.head(3).astype({id_col: "object"})
    missing_id.loc[missing_id.index[0], id_col] = None
    with pytest.raises(fs.FeatureStoreError, match="1 rows have no customer id"):
        store.push(missing_id)
    with pytest.raises(fs.FeatureStoreError, match="gold layer not found"):
        store.push_file(settings.features_dir / "nothing.parquet")


def test_lookups_before_any_push_say_what_to_do(store: Any) -> None:
    with pytest.raises(fs.NoFeatureSet, match="churnops features push"):
        store.get("1")


def test_the_gold_file_is_pushed_without_reading_its_label(store: Any, gold: pd.DataFrame, settings: Any,
                                                           record_of: Callable) -> None:
    path = settings.features_dir / "customers.parquet"
    path.parent.mkdir(parents=True)
    gold.to_parquet(path)
    result = store.push_file(path)
    assert result.rows == len(gold)
    assert store.info()["source"] == str(path)
    assert store.info()["event_time"] == pytest.approx(path.stat().st_mtime)
    assert store.get(gold[settings.schema.id_column].iloc[2]).features == record_of(gold.iloc[2])


def test_the_slow_reply_path_gives_the_same_result(store: Any, gold: pd.DataFrame, settings: Any,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   record_of: Callable) -> None:
    """Without a raw socket the replies go through redis-py's parser: same outcome."""
    original = fs._ReplyReader.__init__

    def no_socket(self: Any, conn: Any) -> None:
        original(self, conn)
        self.sock = None

    monkeypatch.setattr(fs._ReplyReader, "__init__", no_socket)
    store.push(gold)
    assert store.get(gold[settings.schema.id_column].iloc[5]).features == record_of(gold.iloc[5])
    changed = gold.copy()
    changed["Customer_Age"] = 41
    replaced = store.push(changed, version="v2")  # the removal's UNLINK replies are counted by the parser
    assert replaced.removed_keys == len(gold) + 2
    assert len(keys(store.client, "fs-test:fs:v:*")) == len(gold) + 2


def test_a_hung_redis_fails_lookups_fast_instead_of_hanging(redis_process_factory: Any, settings: Any,
                                                            gold: pd.DataFrame) -> None:
    own = redis_process_factory()
    local = settings.model_copy(update={"redis_url": own.url})
    store = fs.FeatureStore.from_settings(local)
    store.push(gold)
    own.pause()
    try:
        started = time.monotonic()
        with pytest.raises(fs.FeatureStoreUnavailable, match="unavailable"):
            store.get(gold[settings.schema.id_column].iloc[0])
        cfg = local.params.feature_store
        budget = 2 * (cfg.read_timeout_s + cfg.connect_timeout_s)
        assert time.monotonic() - started < budget + 1.0
        assert not store.ping()
    finally:
        own.resume()
    assert store.get(gold[settings.schema.id_column].iloc[0]) is not None  # recovers by itself
    own.stop(save=False)
    with pytest.raises(fs.FeatureStoreUnavailable):
        store.get(gold[settings.schema.id_column].iloc[0])


def test_features_commands_push_get_and_info(settings: Any, gold: pd.DataFrame, record_of: Callable) -> None:
    import json

    from click.testing import CliRunner

    from churnops.cli import main

    path = settings.features_dir / "customers.parquet"
    path.parent.mkdir(parents=True)
    gold.to_parquet(path)
    runner = CliRunner()
    home = ["--home", str(settings.home)]
    pushed = runner.invoke(main, [*home, "features", "push", "--version", "cli-1"])
    assert pushed.exit_code == 0, pushed.output
    assert "pushed 300 customers as feature set cli-1" in pushed.output
    cid = str(gold[settings.schema.id_column].iloc[4])
    got = runner.invoke(main, [*home, "features", "get", cid])
    assert got.exit_code == 0, got.output
    assert json.loads(got.output)["features"] == record_of(gold.iloc[4])
    assert runner.invoke(main, [*home, "features", "get", "nobody"]).exit_code == 1
    info = runner.invoke(main, [*home, "features", "info"])
    assert json.loads(info.output)["version"] == "cli-1"
    again = runner.invoke(main, [*home, "features", "push", "--version", "cli-1"])
    assert again.exit_code == 0 and "already is current" in again.output


def test_redis_errors_surface_as_feature_store_errors(settings: Any) -> None:
    local = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    store = fs.FeatureStore.from_settings(local)
    with pytest.raises(fs.FeatureStoreUnavailable, match="127.0.0.1:1"):
        store.current_version()
    assert isinstance(fs.connect("redis://127.0.0.1:1/0", connect_timeout_s=0.1, socket_timeout_s=0.1),
                      redis_lib.Redis)


def test_lookups_survive_a_forgotten_script_and_a_dropped_connection(
        store: Any, gold: pd.DataFrame, settings: Any, record_of: Callable) -> None:
    """Lookups run on a connection each thread holds: a Redis that forgot the lookup script (restart,
    SCRIPT FLUSH) or closed that connection is answered again on the next call, not failed."""
    store.push(gold)
    cid = gold[settings.schema.id_column].iloc[5]
    assert store.get(cid).features == record_of(gold.iloc[5])
    store.client.script_flush()
    assert store.get(cid).features == record_of(gold.iloc[5])
    killed = store.client.client_kill_filter(_type="normal", skipme=True)
    assert killed >= 1  # the held connection is gone on the server's side
    assert store.get(cid).features == record_of(gold.iloc[5])


def test_threads_and_forked_processes_read_on_connections_of_their_own(store: Any, gold: pd.DataFrame,
                                                                       settings: Any,
                                                                       record_of: Callable) -> None:
    import os

    store.push(gold)
    ids = gold[settings.schema.id_column].tolist()
    expected = {str(i): record_of(gold.iloc[k]) for k, i in enumerate(ids)}
    problems: list[str] = []

    def reader(offset: int) -> None:
        for k in range(offset, offset + 150):
            found = store.get(ids[k % len(ids)])
            if found is None or found.features != expected[found.customer_id]:
                problems.append(f"thread {offset}: wrong answer for {ids[k % len(ids)]}")

    threads = [threading.Thread(target=reader, args=(n * 37,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert problems == []
    assert store.get(ids[0]).features == expected[str(ids[0])]  # this thread's connection now exists
    parents = store._readers._local.held
    pid = os.fork()
    if pid == 0:  # the child reads on its own connection, then its parent must still read correctly
        ok = all(store.get(i).features == expected[str(i)] for i in ids[:50])
        os._exit(0 if ok and store._readers._local.held is not parents else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert all(store.get(i).features == expected[str(i)] for i in ids[50:100])
