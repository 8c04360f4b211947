"""The version registry against a real Redis: which pushes walk the keyspace, and what each walk removes."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pandas as pd
import pytest

from churnops import feature_store as fs

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


def kill_pushes_after_two_chunks(monkeypatch: pytest.MonkeyPatch, store: Any) -> None:
    """The next push dies while it writes: two chunks reach Redis, then the process is gone (its clean-up
    never runs)."""
    calls = {"n": 0}
    real = fs.encode_hset_chunk

    def dying(*args: Any, **kwargs: Any) -> bytes:
        calls["n"] += 1
        if calls["n"] == 3:
            raise Died()
        return real(*args, **kwargs)

    monkeypatch.setattr(fs, "encode_hset_chunk", dying)
    monkeypatch.setattr(store, "_cleanup_failed", lambda version: None)


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


def test_a_replacing_push_removes_the_previous_version_in_one_walk(store: Any, gold: pd.DataFrame,
                                                                   walks: list) -> None:
    first = store.push(gold)
    second = store.push(changed(gold, 33), version="v2")
    assert walks == [(f"{NS}:fs:v:*", f"{NS}:fs:v:v2:")]  # after the switch, keeping the new version
    assert second.removed_keys == len(gold) + 1
    assert not keys(store.client, f"{NS}:fs:v:{first.version}:*")
    assert len(keys(store.client, f"{NS}:fs:v:v2:*")) == len(gold) + 1
    assert registered(store) == {"v2"}
    walks.clear()
    assert store.push(changed(gold, 33), version="v2").skipped  # the same content again: nothing to do
    assert walks == []


def test_a_failed_first_push_unregisters_its_version_and_the_next_push_walks_nothing(
        store: Any, gold: pd.DataFrame, walks: list, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as m:
        m.setattr(fs, "encode_hset_chunk", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
        with pytest.raises(RuntimeError, match="boom"):
            store.push(gold, version="broken")
    assert walks == [(f"{NS}:fs:v:broken:*", "")]  # the failed push removed its own keys
    assert not keys(store.client, f"{NS}:fs:*")  # and left no registry behind
    walks.clear()
    result = store.push(gold)
    assert walks == [] and registered(store) == {result.version}


@pytest.mark.parametrize("next_version", ["next", "killed"])
def test_keys_of_a_killed_push_are_removed_by_the_next_push(store: Any, gold: pd.DataFrame, walks: list,
                                                            monkeypatch: pytest.MonkeyPatch, settings: Any,
                                                            next_version: str) -> None:
    id_col = settings.schema.id_column
    v1 = store.push(gold).version
    with monkeypatch.context() as m:
        kill_pushes_after_two_chunks(m, store)
        with pytest.raises(Died):
            store.push(changed(gold, 50), version="killed")
    partial = keys(store.client, f"{NS}:fs:v:killed:*")
    assert len(partial) >= store.chunk_size  # left behind, but known:
    assert registered(store) == {v1, "killed"}
    assert store.current_version() == v1

    walks.clear()
    fewer = changed(gold, 60).head(100)  # the killed push wrote customers this push does not have
    result = store.push(fewer, version=next_version)
    assert store.current_version() == next_version and registered(store) == {next_version}
    assert keys(store.client, f"{NS}:fs:v:*") and not keys(store.client, f"{NS}:fs:v:{v1}:*")
    assert len(keys(store.client, f"{NS}:fs:v:*")) == len(fewer) + 1  # the new customers and their meta
    assert store.get(gold[id_col].iloc[120]) is None  # written by the killed push only
    assert store.get(gold[id_col].iloc[0]).features["Customer_Age"] == 60
    after_switch = (f"{NS}:fs:v:*", f"{NS}:fs:v:{next_version}:")
    if next_version == "killed":  # the same version again: its leftovers are removed before writing
        assert walks == [(f"{NS}:fs:v:killed:*", ""), after_switch]
        assert result.removed_keys == len(gold) + 1  # v1's customers and meta
    else:
        assert walks == [after_switch]
        assert result.removed_keys == len(gold) + 1 + len(partial)


def test_a_push_killed_before_anything_was_current_is_cleaned_by_the_next_push(store: Any,
                                                                               gold: pd.DataFrame) -> None:
    client = store.client
    client.sadd(REGISTRY, "dead")  # what a killed first push leaves: registered, some customers, no meta
    for cid in ("1", "2", "3"):
        client.hset(fs.customer_key(NS, "dead", cid), mapping={"features": b"x", "event_time": "0"})
    result = store.push(gold)
    assert result.previous is None and result.removed_keys == 3
    assert not keys(client, f"{NS}:fs:v:dead:*") and registered(store) == {result.version}


@pytest.mark.parametrize("registry", ["missing", "stale"])
def test_a_namespace_written_without_the_registry_is_cleaned_by_the_next_push(
        store: Any, gold: pd.DataFrame, walks: list, settings: Any, registry: str) -> None:
    """An older churnops wrote the current version (and a crashed push's keys) without the registry; or it
    pushed over a namespace whose registry then no longer lists the current version."""
    client = store.client
    v1 = store.push(gold).version
    client.delete(REGISTRY)
    if registry == "stale":
        client.sadd(REGISTRY, "gone-long-ago")
    for version, cid in (("crashed", "1"), ("v2", "ghost")):  # unregistered leftovers of killed pushes
        client.hset(fs.customer_key(NS, version, cid), mapping={"features": b"x", "event_time": "0"})
    walks.clear()
    result = store.push(changed(gold, 44), version="v2")
    assert walks[0] == (f"{NS}:fs:v:*", f"{NS}:fs:v:{v1}:")  # adopting: everything but the current version
    assert len(walks) == 2  # and v1 after the switch
    assert result.previous == v1 and result.removed_keys == len(gold) + 1
    assert registered(store) == {"v2"} and store.current_version() == "v2"
    assert set(keys(client, f"{NS}:fs:v:*")) == set(keys(client, f"{NS}:fs:v:v2:*"))
    assert len(keys(client, f"{NS}:fs:v:*")) == len(gold) + 1
    assert store.get("ghost") is None
    assert store.get(gold[settings.schema.id_column].iloc[0]).features["Customer_Age"] == 44
    walks.clear()
    store.push(changed(gold, 45), version="v3")  # from now on: the registry
    assert walks == [(f"{NS}:fs:v:*", f"{NS}:fs:v:v3:")] and registered(store) == {"v3"}


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
