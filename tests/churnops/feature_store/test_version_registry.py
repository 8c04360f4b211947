"""The version registry and the id lists against a real Redis: how a push removes the keys of other
versions (by name, or by a walk of the keyspace for versions without an id list), and what it removes."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fs_support import fail_third_chunk

from churnops import feature_store as fs
from churnops.feature_store import store as fs_store

NS = "fs-test"
REGISTRY = fs.registry_key(NS)


class Died(BaseException):
    """The push's process was killed: nothing after this point runs."""


def keys(client: Any, pattern: str) -> list[bytes]:
    return list(client.scan_iter(match=pattern, count=1000))


def registered(store: Any) -> set[str]:
    return {m.decode() for m in store.client.smembers(REGISTRY)}


@pytest.fixture
def walks(store: Any, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """(MATCH pattern, kept prefix) of every keyspace walk the store starts: every SCAN goes through the
    store's SCAN + UNLINK script, and a walk starts at cursor 0."""
    seen: list[tuple[str, str]] = []
    real = store._scan_unlink

    def counting(keys: Any = None, args: Any = None, client: Any = None) -> Any:
        cursor, pattern, _count, keep = args
        if cursor in (b"0", "0", 0):
            seen.append((pattern, keep))
        return real(keys=keys, args=args, client=client)

    monkeypatch.setattr(store, "_scan_unlink", counting)
    return seen


@pytest.fixture
def by_name(store: Any, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The versions whose customers the store removes by name (from an id list), in order."""
    seen: list[str] = []
    real = store._unlink_customers

    def recording(version: str, slices: Any, token: str) -> int:
        seen.append(version)
        return real(version, slices, token)

    monkeypatch.setattr(store, "_unlink_customers", recording)
    return seen


def spy_lock_refreshes(monkeypatch: pytest.MonkeyPatch, store: Any) -> list[Any]:
    seen: list[Any] = []
    real = store._refresh_lock

    def refreshing(keys: Any = None, args: Any = None, client: Any = None) -> Any:
        seen.append(args)
        return real(keys=keys, args=args, client=client)

    monkeypatch.setattr(store, "_refresh_lock", refreshing)
    return seen


def listed_ids(client: Any, version: str) -> list[str]:
    """The ids of a version's id list (every part, in order), read independently of the store."""
    raw = b""
    part = 0
    while client.exists(fs.ids_key(NS, version, part)):
        raw += client.get(fs.ids_key(NS, version, part))
        part += 1
    header, _, records = raw.partition(b"\n")
    fmt, width = header.split(b" ")
    assert fmt == b"churnops-ids/1" and len(records) % int(width) == 0
    w = int(width)
    return [records[i:i + w].rstrip(b"\x00").decode() for i in range(0, len(records), w)]


def kill_pushes_after_two_chunks(monkeypatch: pytest.MonkeyPatch, store: Any) -> None:
    """The next push dies while it writes: two chunks reach Redis, then the process is gone (its clean-up
    never runs)."""
    fail_third_chunk(monkeypatch, Died())
    monkeypatch.setattr(store, "_cleanup_failed", lambda *args: None)


def changed(gold: pd.DataFrame, age: int) -> pd.DataFrame:
    frame = gold.copy()
    frame["Customer_Age"] = age
    return frame


def test_a_first_push_into_an_empty_namespace_walks_nothing(store: Any, gold: pd.DataFrame, walks: list,
                                                            settings: Any) -> None:
    store.client.set("another-app:key", "x")  # other keys in the database are none of the push's business
    result = store.push(gold)
    assert walks == []
    assert result.removed_keys == 0 and result.previous is None
    assert registered(store) == {result.version}
    assert store.get(gold[settings.schema.id_column].iloc[0]) is not None
    assert store.client.get("another-app:key") == b"x"


def test_the_id_list_holds_every_customer_in_records_of_the_longest_id(store: Any, gold: pd.DataFrame,
                                                                       settings: Any) -> None:
    version = store.push(gold).version
    raw = store.client.get(fs.ids_key(NS, version))
    assert raw == b"churnops-ids/1 9\n" + b"".join(str(i).encode() for i in gold[settings.schema.id_column])
    assert listed_ids(store.client, version) == [str(i) for i in gold[settings.schema.id_column]]


def test_a_replacing_push_removes_the_previous_version_by_name_without_a_walk(
        store: Any, gold: pd.DataFrame, walks: list, by_name: list) -> None:
    store.client.set("another-app:key", "x")
    first = store.push(gold)
    second = store.push(changed(gold, 33), version="v2")
    assert walks == []  # nothing walked the keyspace
    assert by_name == [first.version]  # after the switch, by its id list
    assert second.removed_keys == len(gold) + 2  # its customers, meta and id list
    assert not keys(store.client, f"{NS}:fs:v:{first.version}:*")
    assert len(keys(store.client, f"{NS}:fs:v:v2:*")) == len(gold) + 2
    assert registered(store) == {"v2"} and store.client.get("another-app:key") == b"x"
    by_name.clear()
    assert store.push(changed(gold, 33), version="v2").skipped  # the same content again: nothing to do
    assert walks == [] and by_name == []


def test_customers_only_the_old_version_had_are_removed_too(store: Any, gold: pd.DataFrame, walks: list,
                                                            settings: Any) -> None:
    id_col = settings.schema.id_column
    first = store.push(gold)
    fewer = changed(gold, 40).iloc[::3]  # 100 of the 300 customers
    result = store.push(fewer, version="v2")
    assert walks == [] and result.removed_keys == len(gold) + 2
    assert set(keys(store.client, f"{NS}:fs:v:*")) == set(keys(store.client, f"{NS}:fs:v:v2:*"))
    assert len(keys(store.client, f"{NS}:fs:v:*")) == len(fewer) + 2
    assert not keys(store.client, f"{NS}:fs:v:{first.version}:*")
    assert store.get(gold[id_col].iloc[1]) is None  # only the old version had it
    assert store.get(gold[id_col].iloc[3]).features["Customer_Age"] == 40


def test_ids_of_any_length_and_text_round_trip_through_the_id_list(store: Any, gold: pd.DataFrame,
                                                                   walks: list, by_name: list,
                                                                   settings: Any) -> None:
    id_col = settings.schema.id_column
    texts = ["a", "7", "customer-000042", "with space", "x:y:z", "tab\tand\nnewline", "ünïcode-ß",
             "nul\x00inside", "12345678901234567890123456789", "*", "[brackets]", "0", "00"]
    frame = gold.head(len(texts) + 3).copy().astype({id_col: object})
    frame[id_col] = [*texts, 5, 123456, 2**40]  # ints and texts together: ids are text
    expected = [*texts, "5", "123456", str(2**40)]
    v1 = store.push(frame, version="v1").version
    assert listed_ids(store.client, v1) == expected
    width = max(len(t.encode()) for t in expected)
    assert store.client.getrange(fs.ids_key(NS, v1), 0, 63).startswith(b"churnops-ids/1 %d\n" % width)
    for text in expected:
        assert store.get(text) is not None, text
    assert store.get(2**40) is not None
    store.push(changed(frame, 61).tail(2), version="v2")  # replaces every one of them
    assert walks == [] and by_name == ["v1"]
    assert not keys(store.client, f"{NS}:fs:v:v1:*")
    assert len(keys(store.client, f"{NS}:fs:v:*")) == 2 + 2
    assert all(store.get(text) is None for text in texts)


def test_a_long_id_list_is_written_in_parts_and_read_in_slices(store: Any, gold: pd.DataFrame, walks: list,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               settings: Any) -> None:
    monkeypatch.setattr(fs_store, "IDS_PART_BYTES", 1000)  # 9-byte ids, chunks of 64: one chunk a part
    monkeypatch.setattr(fs_store, "IDS_SLICE_BYTES", 100)  # 11 ids a GETRANGE
    v1 = store.push(gold).version
    parts = sorted(k.decode() for k in keys(store.client, f"{NS}:fs:v:{v1}:ids:*"))
    assert parts == [fs.ids_key(NS, v1, k) for k in range(5)]  # 300 customers in chunks of 64
    assert listed_ids(store.client, v1) == [str(i) for i in gold[settings.schema.id_column]]
    refreshes = spy_lock_refreshes(monkeypatch, store)
    result = store.push(changed(gold, 35), version="v2")
    assert walks == [] and result.removed_keys == len(gold) + 1 + 5
    assert not keys(store.client, f"{NS}:fs:v:{v1}:*")
    assert len(refreshes) >= len(gold) // 11  # the lock was held all along: refreshed after every slice


def test_a_removal_that_loses_the_lock_stops_and_leaves_the_rest_to_the_next_push(
        store: Any, gold: pd.DataFrame, monkeypatch: pytest.MonkeyPatch, walks: list) -> None:
    monkeypatch.setattr(fs_store, "IDS_SLICE_BYTES", 90)  # 10 ids a slice: 30 slices
    v1 = store.push(gold).version
    with monkeypatch.context() as m:
        m.setattr(store, "_refresh_lock", lambda keys=None, args=None, client=None: 0)  # someone took it
        result = store.push(changed(gold, 36), version="v2")
    assert store.current_version() == "v2" and result.version == "v2"  # the push itself completed
    assert result.removed_keys == 0  # the removal stopped before its first UNLINK
    assert len(keys(store.client, f"{NS}:fs:v:{v1}:*")) == len(gold) + 2  # every key remains, registered:
    assert registered(store) == {v1, "v2"} and listed_ids(store.client, v1)
    store.push(changed(gold, 37), version="v3")
    assert registered(store) == {"v3"} and walks == []
    assert set(keys(store.client, f"{NS}:fs:v:*")) == set(keys(store.client, f"{NS}:fs:v:v3:*"))


def test_a_removal_stopped_before_its_last_step_is_done_again_by_the_next_push(
        store: Any, gold: pd.DataFrame, monkeypatch: pytest.MonkeyPatch, walks: list, by_name: list) -> None:
    """The lock is taken from this push after its customers' keys went: the meta, id list and registry
    entry stay (nothing is removed without the lock), and the next push removes the version by name."""
    v1 = store.push(gold).version
    real = store._unlink_customers

    def then_the_lock_is_taken(version: str, slices: Any, token: str) -> int:
        removed = real(version, slices, token)
        store.client.set(fs.lock_key(NS), "another-push", px=60_000)
        return removed

    with monkeypatch.context() as m:
        m.setattr(store, "_unlink_customers", then_the_lock_is_taken)
        result = store.push(changed(gold, 38), version="v2")
    assert store.current_version() == "v2" and result.removed_keys == len(gold)
    assert sorted(keys(store.client, f"{NS}:fs:v:{v1}:*")) == sorted(
        [fs.meta_key(NS, v1).encode(), fs.ids_key(NS, v1).encode()])
    assert registered(store) == {v1, "v2"}
    store.client.delete(fs.lock_key(NS))  # that other push is over
    by_name.clear()
    store.push(changed(gold, 39), version="v3")
    assert walks == [] and by_name == [v1, "v2"] and registered(store) == {"v3"}
    assert set(keys(store.client, f"{NS}:fs:v:*")) == set(keys(store.client, f"{NS}:fs:v:v3:*"))


def test_a_failed_first_push_unregisters_its_version_and_the_next_push_walks_nothing(
        store: Any, gold: pd.DataFrame, walks: list, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as m:
        fail_third_chunk(m, RuntimeError("boom"))
        with pytest.raises(RuntimeError, match="boom"):
            store.push(gold, version="broken")
    assert walks == []  # the failed push removed its own keys by name
    assert not keys(store.client, f"{NS}:fs:*")  # every one, its id list, and no registry left behind
    result = store.push(gold)
    assert walks == [] and registered(store) == {result.version}


@pytest.mark.parametrize("next_version", ["next", "killed"])
def test_keys_of_a_killed_push_are_removed_by_name_by_the_next_push(
        store: Any, gold: pd.DataFrame, walks: list, by_name: list, monkeypatch: pytest.MonkeyPatch,
        settings: Any, next_version: str) -> None:
    id_col = settings.schema.id_column
    v1 = store.push(gold).version
    with monkeypatch.context() as m:
        kill_pushes_after_two_chunks(m, store)
        with pytest.raises(Died):
            store.push(changed(gold, 50), version="killed")
    partial = keys(store.client, f"{NS}:fs:v:killed:*")
    written = {k.decode().rsplit(":c:", 1)[1] for k in partial if b":c:" in k}
    assert len(written) == 2 * store.chunk_size  # left behind, but listed:
    assert set(listed_ids(store.client, "killed")) == written
    assert registered(store) == {v1, "killed"}
    assert store.current_version() == v1

    fewer = changed(gold, 60).head(100)  # the killed push wrote customers this push does not have
    result = store.push(fewer, version=next_version)
    assert walks == []
    assert store.current_version() == next_version and registered(store) == {next_version}
    assert keys(store.client, f"{NS}:fs:v:*") and not keys(store.client, f"{NS}:fs:v:{v1}:*")
    assert len(keys(store.client, f"{NS}:fs:v:*")) == len(fewer) + 2  # the new customers, meta, id list
    assert store.get(gold[id_col].iloc[120]) is None  # written by the killed push only
    assert store.get(gold[id_col].iloc[0]).features["Customer_Age"] == 60
    if next_version == "killed":  # the same version again: its leftovers are removed before writing
        assert by_name == ["killed", v1]
        assert result.removed_keys == len(gold) + 2  # v1's customers, meta and id list
    else:
        assert sorted(by_name) == sorted(["killed", v1])
        assert result.removed_keys == len(gold) + 2 + len(partial)


def test_a_version_without_an_id_list_is_removed_by_a_walk(store: Any, gold: pd.DataFrame, walks: list,
                                                           by_name: list, settings: Any) -> None:
    """What an older churnops (registry, no id lists) leaves: the next push walks for that version."""
    client = store.client
    v1 = store.push(gold).version
    client.delete(fs.ids_key(NS, v1))
    client.set("another-app:key", "x")
    result = store.push(changed(gold, 47), version="v2")
    assert walks == [(f"{NS}:fs:v:{v1}:*", "")] and by_name == []
    assert result.removed_keys == len(gold) + 1  # its customers and meta
    assert not keys(client, f"{NS}:fs:v:{v1}:*") and registered(store) == {"v2"}
    assert len(keys(client, f"{NS}:fs:v:*")) == len(gold) + 2 and client.get("another-app:key") == b"x"
    assert store.get(gold[settings.schema.id_column].iloc[0]).features["Customer_Age"] == 47


def test_an_unreadable_id_list_falls_back_to_the_walk(store: Any, gold: pd.DataFrame, walks: list) -> None:
    v1 = store.push(gold).version
    store.client.set(fs.ids_key(NS, v1), b"something else entirely")
    result = store.push(changed(gold, 48), version="v2")
    assert walks == [(f"{NS}:fs:v:{v1}:*", "")] and result.removed_keys == len(gold) + 2
    assert not keys(store.client, f"{NS}:fs:v:{v1}:*")


def test_a_push_killed_before_anything_was_current_is_cleaned_by_the_next_push(store: Any,
                                                                               gold: pd.DataFrame) -> None:
    client = store.client
    client.sadd(REGISTRY, "dead")  # what a killed first push of an older churnops leaves: no id list
    for cid in ("1", "2", "3"):
        client.hset(fs.customer_key(NS, "dead", cid), mapping={"features": b"x", "event_time": "0"})
    result = store.push(gold)
    assert result.previous is None and result.removed_keys == 3
    assert not keys(client, f"{NS}:fs:v:dead:*") and registered(store) == {result.version}


@pytest.mark.parametrize("registry", ["missing", "stale"])
def test_a_namespace_written_without_the_registry_is_cleaned_by_the_next_push(
        store: Any, gold: pd.DataFrame, walks: list, by_name: list, settings: Any, registry: str) -> None:
    """An older churnops wrote the current version (and a crashed push's keys) without the registry nor id
    lists; or it pushed over a namespace whose registry then no longer lists the current version."""
    client = store.client
    v1 = store.push(gold).version
    client.delete(REGISTRY)
    if registry == "missing":
        client.delete(fs.ids_key(NS, v1))
    else:
        client.sadd(REGISTRY, "gone-long-ago")
    for version, cid in (("crashed", "1"), ("v2", "ghost")):  # unregistered leftovers of killed pushes
        client.hset(fs.customer_key(NS, version, cid), mapping={"features": b"x", "event_time": "0"})
    walks.clear()
    result = store.push(changed(gold, 44), version="v2")
    assert walks[0] == (f"{NS}:fs:v:*", f"{NS}:fs:v:{v1}:")  # adopting: everything but the current version
    if registry == "missing":  # v1 has no id list: a walk after the switch
        assert walks[1:] == [(f"{NS}:fs:v:{v1}:*", "")] and by_name == []
        assert result.removed_keys == len(gold) + 1
    else:  # v1 has its id list: by name
        assert walks[1:] == [] and by_name == [v1]
        assert result.removed_keys == len(gold) + 2
    assert result.previous == v1
    assert registered(store) == {"v2"} and store.current_version() == "v2"
    assert set(keys(client, f"{NS}:fs:v:*")) == set(keys(client, f"{NS}:fs:v:v2:*"))
    assert len(keys(client, f"{NS}:fs:v:*")) == len(gold) + 2
    assert store.get("ghost") is None
    assert store.get(gold[settings.schema.id_column].iloc[0]).features["Customer_Age"] == 44
    walks.clear()
    by_name.clear()
    store.push(changed(gold, 45), version="v3")  # from now on: the registry and the id lists
    assert walks == [] and by_name == ["v2"] and registered(store) == {"v3"}


def test_integer_and_text_ids_are_checked_for_duplicates_alike() -> None:
    ids = pd.Series([700, 5, 700, 12, 5, 700], dtype="int64")
    with pytest.raises(fs.FeatureStoreError, match=r"3 duplicated customer ids \(e.g. \['5', '700'\]\)"):
        fs.FeatureStore._id_bytes(ids, "gold")
    mixed = pd.Series([5, "5", "b", "a"], dtype=object)  # 5 and "5" are the same customer
    with pytest.raises(fs.FeatureStoreError, match=r"1 duplicated customer ids \(e.g. \['5'\]\)"):
        fs.FeatureStore._id_bytes(mixed, "gold")
    text = fs.FeatureStore._id_bytes(pd.Series(["b", 7, "a"], dtype=object), "gold")
    assert text.tolist() == [b"b", b"7", b"a"]
    big = fs.FeatureStore._id_bytes(pd.Series([2**63 + 1, 3], dtype="uint64"), "gold")
    assert big.tolist() == [str(2**63 + 1).encode(), b"3"]


def test_the_digest_is_the_sha256_of_the_layout_ids_and_values(settings: Any, gold: pd.DataFrame) -> None:
    """Default version names stay what they were: the digest of the concatenated bytes."""
    layout = fs.Layout.from_schema(settings.schema)
    ids = fs.FeatureStore._id_bytes(gold[settings.schema.id_column], "gold")
    packed = layout.encode(gold)
    expected = hashlib.sha256(layout.to_json().encode() + ids.tobytes() + packed.tobytes()).hexdigest()
    assert fs.FeatureStore._digest(layout, ids, packed) == expected
    assert fs.FeatureStore._digest(layout, ids[:0], packed[:0]) == hashlib.sha256(
        layout.to_json().encode()).hexdigest()
    assert np.array_equal(ids, gold[settings.schema.id_column].to_numpy().astype(np.bytes_))
