"""The store: :class:`FeatureStore` pushes a gold layer under a new version, switches readers to it and
removes the older versions; it reads customers from the current version (see the package's docstring)."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from churnops.feature_store.connection import connect
from churnops.feature_store.errors import FeatureStoreError, FeatureStoreUnavailable, NoFeatureSet, _LockLost
from churnops.feature_store.keys import (
    check_version,
    current_key,
    customer_key,
    ids_key,
    lock_key,
    meta_key,
    normalise_id,
    registry_key,
    version_prefix,
    versions_prefix,
)
from churnops.feature_store.layout import Layout
from churnops.feature_store.results import PushResult, StoredFeatures
from churnops.feature_store.scripts import (
    _FORGET_VERSION_LUA,
    _LOOKUP_LUA,
    _REFRESH_LOCK_LUA,
    _RELEASE_LOCK_LUA,
    _SCAN_UNLINK_LUA,
    _SWITCH_LUA,
)
from churnops.feature_store.wire import (
    IDS_FORMAT,
    _id_lengths,
    _ReplyReader,
    encode_hset_chunk,
    encode_ids_append,
    encode_unlink,
    ids_header,
)
from churnops.held_connections import HeldConnections
from churnops.logs import get_logger, progress
from churnops.redaction import redact_url
from churnops.settings import SchemaSettings, Settings

if TYPE_CHECKING:
    import redis

log = get_logger("churnops.feature_store")  # the package's name: the logger events carried before the split

LOCK_TTL_MS = 120_000
IN_FLIGHT_CHUNKS = 2
IDS_PART_BYTES = 16 << 20  # an id list is split into parts of at most this many bytes (whole chunks)
IDS_SLICE_BYTES = 4 << 20  # a removal reads an id list this many bytes at a time


class FeatureStore:
    """Push and read customers' features. Create with :meth:`from_settings`; nothing connects before use."""

    def __init__(self, client: redis.Redis, schema: SchemaSettings, *, namespace: str = "churnops",
                 chunk_size: int = 5000, push_timeout_s: float = 60.0, url: str = "redis") -> None:
        self.client = client
        self.schema = schema
        self.namespace = namespace
        self.chunk_size = chunk_size
        self.push_timeout_s = push_timeout_s
        self.url = redact_url(url)
        self._layouts: dict[str, Layout] = {}
        self._lookup = client.register_script(_LOOKUP_LUA)
        self._readers = HeldConnections(client)  # lookups: a connection per thread, ~2x cheaper than the pool
        self._refresh_lock = client.register_script(_REFRESH_LOCK_LUA)
        self._switch = client.register_script(_SWITCH_LUA)
        self._release_lock = client.register_script(_RELEASE_LOCK_LUA)
        self._scan_unlink = client.register_script(_SCAN_UNLINK_LUA)
        self._forget_version = client.register_script(_FORGET_VERSION_LUA)

    @classmethod
    def from_settings(cls, settings: Settings, client: redis.Redis | None = None) -> FeatureStore:
        cfg = settings.params.feature_store
        client = client or connect(settings.redis_url, connect_timeout_s=cfg.connect_timeout_s,
                                   socket_timeout_s=cfg.read_timeout_s)
        return cls(client, settings.schema, namespace=cfg.namespace, chunk_size=cfg.chunk_size,
                   push_timeout_s=cfg.push_timeout_s, url=settings.redis_url)

    # -- errors ----------------------------------------------------------------------------------
    @contextmanager
    def _redis_errors(self, what: str) -> Iterator[None]:
        import redis

        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, TimeoutError,
                ConnectionError, OSError) as exc:
            raise FeatureStoreUnavailable(f"Redis at {self.url} is unavailable ({what}): {exc}") from exc
        except redis.RedisError as exc:
            raise FeatureStoreError(f"Redis at {self.url} refused {what}: {exc}") from exc

    def ping(self) -> bool:
        """True when Redis answers (within the read timeout)."""
        import redis

        try:
            return bool(self.client.ping())
        except (redis.RedisError, OSError):
            return False

    # -- reads -----------------------------------------------------------------------------------
    def current_version(self) -> str | None:
        with self._redis_errors("reading the current feature-set version"):
            value = self.client.get(current_key(self.namespace))
        return value.decode() if value is not None else None

    def info(self) -> dict[str, Any] | None:
        """The current version's meta (rows, event_time, pushed_at, source, digest), or None."""
        version = self.current_version()
        if version is None:
            return None
        with self._redis_errors("reading the feature-set meta"):
            raw = self.client.hgetall(meta_key(self.namespace, version))
        doc: dict[str, Any] = {k.decode(): v.decode() for k, v in raw.items()}
        doc.pop("layout", None)
        for key in ("rows",):
            if key in doc:
                doc[key] = int(doc[key])
        for key in ("event_time", "pushed_at", "seconds"):
            if key in doc:
                doc[key] = float(doc[key])
        return {"version": version, **doc}

    def layout(self, version: str) -> Layout:
        cached = self._layouts.get(version)
        if cached is not None:
            return cached
        with self._redis_errors("reading the feature-set layout"):
            text = self.client.hget(meta_key(self.namespace, version), "layout")
        if text is None:
            raise FeatureStoreError(f"feature set {version!r} has no meta in Redis at {self.url} "
                                    f"(was it deleted by hand?): push the features again")
        layout = Layout.from_json(text)
        self._layouts[version] = layout
        return layout

    def get(self, customer_id: Any) -> StoredFeatures | None:
        """One customer's features from the current version; None for an unknown customer."""
        return self.get_many([customer_id])[0]

    def get_many(self, customer_ids: Sequence[Any]) -> list[StoredFeatures | None]:
        """Many customers in one round trip (None for each unknown one), all from the same version.

        Raises NoFeatureSet when nothing was pushed, FeatureStoreUnavailable when Redis does not answer.
        """
        ids = [normalise_id(c) for c in customer_ids]
        if not ids:
            return []
        with self._redis_errors("reading customers' features"):
            reply = self._read_lookup(ids)
        if not reply:
            raise NoFeatureSet(f"no features have been pushed to Redis at {self.url} "
                               f"(namespace {self.namespace!r}): run `churnops features push`")
        version = reply[0].decode()
        layout = self.layout(version)
        out: list[StoredFeatures | None] = []
        for i, cid in enumerate(ids):
            blob, event_time = reply[1 + 2 * i], reply[2 + 2 * i]
            if blob is None:
                out.append(None)
                continue
            out.append(StoredFeatures(cid, version, float(event_time or 0), layout.decode(blob)))
        return out

    def _read_lookup(self, ids: list[str]) -> Any:
        import redis

        packed = self._readers.pack("EVALSHA", self._lookup.sha, 1, current_key(self.namespace),
                                    versions_prefix(self.namespace), *ids)
        try:
            return self._readers.call(packed)
        except redis.exceptions.NoScriptError:  # a restarted or flushed Redis forgot the script
            self.client.script_load(_LOOKUP_LUA)
            return self._readers.call(packed)

    # -- push ------------------------------------------------------------------------------------
    def push_file(self, path: Path | str, *, version: str | None = None,
                  event_time: float | None = None) -> PushResult:
        """Push the gold layer file (id + feature columns; the label column is never read).

        The event time defaults to the file's modification time: when these features were computed.
        """
        path = Path(path)
        if not path.is_file():
            raise FeatureStoreError(f"gold layer not found: {path} (run the pipeline first: "
                                    f"`churnops train`, or `churnops stage featurize`)")
        columns = [self.schema.id_column, *self.schema.feature_columns]
        try:
            import pyarrow.parquet as pq

            available = set(pq.read_schema(path).names)
        except Exception as exc:
            raise FeatureStoreError(f"cannot read the gold layer {path}: {exc}") from exc
        missing = [c for c in columns if c not in available]
        if missing:
            raise FeatureStoreError(f"gold layer {path} lacks columns {missing} of the schema in "
                                    f"params.yaml: rebuild it (`churnops stage featurize`)")
        frame = pd.read_parquet(path, columns=columns)
        return self.push(frame, version=version, source=str(path),
                         event_time=event_time if event_time is not None else path.stat().st_mtime)

    def push_current(self, settings: Settings, *, version: str | None = None) -> PushResult:
        """Push what scoring by id reads: the gold layer's customers (``customers.parquet``) or, with
        ``source: transactions``, every customer's features as of the day after the last line of the raw
        transactions (the gold layer holds one row per customer and cut-off)."""
        if settings.source != "transactions":
            return self.push_file(settings.features_dir / "customers.parquet", version=version)
        from churnops.transactions.build import current_features

        try:
            frame = current_features(settings)
        except ValueError as exc:  # the raw transactions cannot make the table: say why
            raise FeatureStoreError(f"cannot compute the current features: {exc}") from exc
        return self.push(frame, version=version, source=str(frame.attrs.get("source", settings.raw_path)))

    def push(self, frame: pd.DataFrame, *, version: str | None = None, event_time: float | None = None,
             source: str = "frame") -> PushResult:
        """Write every row's features under a new version and make it current (see the module doc)."""
        started = time.perf_counter()
        schema = self.schema
        layout = Layout.from_schema(schema)
        if schema.id_column not in frame.columns:
            raise FeatureStoreError(f"{source} has no id column {schema.id_column!r}")
        ids = self._id_bytes(frame[schema.id_column], source)
        packed = layout.encode(frame, source)  # only the schema's feature columns: never the label
        digest = self._digest(layout, ids, packed)
        lengths = _id_lengths(ids)
        width = max(1, int(lengths.max())) if len(ids) else 1
        if width < ids.dtype.itemsize:  # integer ids come as S21: records of the longest id's length
            ids = ids.astype(f"S{width}")
        version = check_version(version or digest[:12])
        event_time = time.time() if event_time is None else float(event_time)
        with self._push_lock() as token:
            previous = self.current_version()
            if previous == version:
                with self._redis_errors("reading the current feature-set meta"):
                    existing = self.client.hget(meta_key(self.namespace, version), "digest")
                if existing is not None and existing.decode() == digest:
                    log.info("features.push_skipped", version=version, rows=len(frame),
                             reason="the same features already are the current version")
                    return PushResult(version, len(frame), time.perf_counter() - started, previous, 0,
                                      skipped=True)
                raise FeatureStoreError(
                    f"version {version!r} is the current feature set with different content: push under a "
                    f"new --version (or none: the default is a digest of the content)")
            registered = self._registered_versions()
            if previous is not None and previous not in registered:
                registered = self._adopt_unregistered(previous, token)
            if version in registered:  # a push of this version failed or was killed: remove its leftovers
                removed = self._remove_version(version, token)
                log.info("features.leftovers_removed", version=version, keys=removed)
            with self._redis_errors("registering the feature-set version"):
                pipe = self.client.pipeline(transaction=True)  # before any key of it exists
                pipe.sadd(registry_key(self.namespace), version)
                pipe.set(ids_key(self.namespace, version), ids_header(width))
                pipe.execute()
            try:
                write_started = time.perf_counter()
                self._write(version, ids, lengths, packed, event_time, token)
                write_seconds = time.perf_counter() - write_started
                meta = {"rows": len(frame), "event_time": repr(event_time), "pushed_at": repr(time.time()),
                        "source": source, "digest": digest, "layout": layout.to_json(),
                        "seconds": repr(round(time.perf_counter() - started, 3))}
                with self._redis_errors("writing the feature-set meta"):
                    self.client.hset(meta_key(self.namespace, version), mapping=meta)
                    switched = self._switch(keys=[lock_key(self.namespace), current_key(self.namespace)],
                                            args=[token, version])
                if not switched:
                    raise FeatureStoreError(f"the push lock {lock_key(self.namespace)} expired or was taken "
                                            f"during the push; version {version!r} was not made current")
            except BaseException:
                self._cleanup_failed(version, ids, token)
                raise
            self._layouts[version] = layout
            log.info("features.switched", version=version, previous=previous, rows=len(frame))
            removed = self._remove_old_versions(keep=version, token=token)
        seconds = time.perf_counter() - started
        result = PushResult(version, len(frame), seconds, previous, removed, write_seconds=write_seconds)
        log.info("features.pushed", **result.to_dict())
        return result

    @staticmethod
    def _id_bytes(ids: pd.Series, source: str) -> np.ndarray:
        """The ids as a numpy bytes array (their text); refuses missing, empty and duplicated ids."""
        if ids.isna().any():
            raise FeatureStoreError(f"{source}: {int(ids.isna().sum())} rows have no customer id")
        if pd.api.types.is_bool_dtype(ids):
            raise FeatureStoreError(f"{source}: customer ids are booleans")
        if pd.api.types.is_integer_dtype(ids):
            values = ids.to_numpy()
            text = values.astype(np.bytes_)
            # distinct integers have distinct texts: a hash table on the integers, no sort of byte strings
            duplicated = pd.Index(values).duplicated()
            extra = int(duplicated.sum())
            examples = sorted({str(v) for v in values[duplicated]})[:5] if extra else []
        elif pd.api.types.is_float_dtype(ids):
            raise FeatureStoreError(f"{source}: customer ids are floating-point numbers; store them as "
                                    f"integers or strings")
        else:
            text = np.array([normalise_id(v).encode() for v in ids.tolist()], dtype=np.bytes_)
            if (text == b"").any():
                raise FeatureStoreError(f"{source}: some customer ids are empty strings")
            unique, counts = np.unique(text, return_counts=True)  # fixed-width bytes: faster than hashing
            extra = len(text) - len(unique)
            examples = [v.decode(errors="replace") for v in unique[counts > 1][:5]]
        if extra:
            raise FeatureStoreError(f"{source}: {extra} duplicated customer ids (e.g. {examples}); "
                                    f"ids must be unique")
        return text

    @staticmethod
    def _digest(layout: Layout, ids: np.ndarray, packed: np.ndarray) -> str:
        """SHA-256 of the layout, the ids' bytes and the packed values (the default version name).

        Fed incrementally from the arrays' buffers: the same digest as of the concatenated bytes, without
        copying them.
        """
        digest = hashlib.sha256(layout.to_json().encode())
        for array in (ids, packed):
            digest.update(np.ascontiguousarray(array))
        return digest.hexdigest()

    @contextmanager
    def _pipelined(self, what: str) -> Iterator[_ReplyReader]:
        """A connection of the pool, for a stream of pipelined commands (``reader.conn``) whose one-line
        replies `reader` reads, with the push timeout. It goes back to the pool only fully read."""
        pool = self.client.connection_pool
        with self._redis_errors(what):
            conn = pool.get_connection()
        ok = False
        try:
            with self._redis_errors(what):
                conn.connect()
                if getattr(conn, "_sock", None) is not None:
                    conn._sock.settimeout(self.push_timeout_s)
                reader = _ReplyReader(conn)
                yield reader
                ok = reader.drained
        finally:
            if not ok:
                conn.disconnect()  # unread replies or a broken stream: never hand it back to the pool
            else:
                sock = getattr(conn, "_sock", None)
                if sock is not None:
                    sock.settimeout(conn.socket_timeout)
            pool.release(conn)

    def _write(self, version: str, ids: np.ndarray, lengths: np.ndarray, packed: np.ndarray,
               event_time: float, token: str) -> None:
        """Every chunk: APPEND its ids to the version's id list, then HSET its customers, in one stream."""
        prefix = customer_key(self.namespace, version, "").encode()
        et = repr(event_time).encode()
        n = len(ids)
        chunks = range(0, n, self.chunk_size)
        chunks_per_part = max(1, IDS_PART_BYTES // (ids.dtype.itemsize * self.chunk_size))
        with self._pipelined("writing features") as reader:
            conn = reader.conn
            in_flight: list[int] = []
            for i, start in enumerate(progress(chunks, task="features.push", total=len(chunks))):
                stop = min(n, start + self.chunk_size)
                chunk = ids[start:stop]
                part = ids_key(self.namespace, version, i // chunks_per_part).encode()
                listed = encode_ids_append(part, chunk)
                hsets = encode_hset_chunk(prefix, chunk, packed[start:stop], et, lengths[start:stop])
                conn.send_packed_command([listed, hsets], check_health=False)  # the ids before the keys
                in_flight.append(stop - start + 1)
                if len(in_flight) >= IN_FLIGHT_CHUNKS:
                    self._check_replies(reader.read(in_flight.pop(0)), version)
                if i % 20 == 19:
                    self._refresh_lock(keys=[lock_key(self.namespace)], args=[token, LOCK_TTL_MS])
            for count in in_flight:
                self._check_replies(reader.read(count), version)

    @staticmethod
    def _check_replies(errors: list[bytes], version: str) -> None:
        if errors:
            first = errors[0].decode(errors="replace").lstrip("-")
            raise FeatureStoreError(f"Redis refused {len(errors)} writes of feature set {version!r} "
                                    f"(first: {first}); the current version is unchanged")

    def _cleanup_failed(self, version: str, ids: np.ndarray, token: str) -> None:
        """Remove the keys of this process's failed push by the ids it was pushing (exact even when Redis
        refused an APPEND to the id list), then its id list and meta, and unregister it."""
        try:
            removed = self._remove_version(version, token, ids=ids)
            log.warning("features.push_failed", version=version, removed_keys=removed,
                        hint="the current version is unchanged")
        except FeatureStoreError as exc:
            log.error("features.cleanup_failed", version=version, error=str(exc),
                      hint=f"keys {version_prefix(self.namespace, version)}* remain; "
                           f"the next push removes them")

    def _registered_versions(self) -> set[str]:
        with self._redis_errors("reading the registered feature-set versions"):
            members = self.client.smembers(registry_key(self.namespace))
        return {m.decode() for m in members}

    def _adopt_unregistered(self, current: str, token: str) -> set[str]:
        """Bring a namespace written without the registry (an older churnops) under it: remove every
        version's keys except the current one's (one walk), then register the current version alone."""
        removed = self._delete_versions(keep=current, token=token)
        with self._redis_errors("registering the current feature-set version"):
            pipe = self.client.pipeline(transaction=True)
            pipe.delete(registry_key(self.namespace))
            pipe.sadd(registry_key(self.namespace), current)
            pipe.execute()
        log.info("features.registry_created", current=current, removed_keys=removed)
        return {current}

    def _remove_old_versions(self, keep: str, token: str) -> int:
        """After the switch: remove the keys of every registered version but `keep` and unregister them,
        each by its id list (or by a walk when it has none). Nothing is done when the registry lists no
        other version; should the push lock be lost, the versions not yet removed stay registered."""
        old = sorted(self._registered_versions() - {keep})
        removed = 0
        try:
            for version in old:
                removed += self._remove_version(version, token)
        except _LockLost as exc:
            removed += exc.removed
            log.warning("features.old_versions_left", versions=old, error=str(exc),
                        hint="the next push removes the versions that are still registered")
        if old:
            log.info("features.old_versions_removed", versions=old, keys=removed)
        for version in list(self._layouts):
            if version != keep:
                self._layouts.pop(version, None)
        return removed

    def _remove_version(self, version: str, token: str, ids: np.ndarray | None = None) -> int:
        """UNLINK every key of `version` (never the current one) and unregister it; the number of keys.

        By name: the customers listed in its id list (or `ids`, the ids a failed push was writing) with
        pipelined UNLINKs, then its meta, id list and registry entry in one atomic step, only while this
        push holds the lock (a removal stopped before that step is simply done again by the next push). A
        version without an id list (an older churnops's) is removed with a walk of the keyspace.
        """
        if ids is None:
            listed = self._id_list_header(version)
            if listed is None:
                removed = self._delete_versions(only=version, token=token)
                return removed + self._forget(version, token, [meta_key(self.namespace, version)], removed)
            slices = self._stored_ids(version, *listed)
        else:
            step = max(1, IDS_SLICE_BYTES // ids.dtype.itemsize)
            slices = (ids[i:i + step] for i in range(0, len(ids), step))
        removed = self._unlink_customers(version, slices, token)
        with self._redis_errors("reading a feature-set version's id list"):
            parts = self._id_list_parts(version)
        return removed + self._forget(version, token, [meta_key(self.namespace, version), *parts], removed)

    def _forget(self, version: str, token: str, keys: list[str], removed: int) -> int:
        """UNLINK `keys` (the version's meta and id list) and unregister the version, atomically, while
        this push holds the lock; the number of keys unlinked (`removed`: the version's keys removed before,
        for the error)."""
        with self._redis_errors("removing a feature-set version"):
            n = int(self._forget_version(keys=[lock_key(self.namespace), registry_key(self.namespace), *keys],
                                         args=[token, version]))
        if n < 0:
            lost = _LockLost(f"the push lock {lock_key(self.namespace)} expired or was taken while version "
                             f"{version!r} was being removed")
            lost.removed = removed
            raise lost
        return n

    def _id_list_header(self, version: str) -> tuple[int, int] | None:
        """(record width, header length) of the version's id list; None when it has none."""
        key = ids_key(self.namespace, version)
        with self._redis_errors("reading a feature-set version's id list"):
            head = self.client.getrange(key, 0, 63)
        line, newline, _ = head.partition(b"\n")
        fmt, _, width = line.partition(b" ")
        if not newline or fmt != IDS_FORMAT or not width.isdigit() or int(width) < 1:
            if head:
                log.warning("features.id_list_unreadable", key=key, header=head[:64].decode(errors="replace"),
                            hint="the version's keys are removed by a walk of the keyspace")
            return None
        return int(width), len(line) + 1

    def _stored_ids(self, version: str, width: int, header: int) -> Iterator[np.ndarray]:
        """The ids of the version's id list, a slice (GETRANGE, IDS_SLICE_BYTES) at a time, part by part."""
        step = max(1, IDS_SLICE_BYTES // width) * width
        part = 0
        while True:
            key = ids_key(self.namespace, version, part)
            offset = header if part == 0 else 0
            found = part == 0
            while True:
                with self._redis_errors("reading a feature-set version's id list"):
                    data = self.client.getrange(key, offset, offset + step - 1)
                if data:
                    found = True
                    yield np.frombuffer(data, dtype=f"S{width}", count=len(data) // width)
                offset += len(data)
                if len(data) < step:
                    break
            if not found:  # parts are written in order: the first missing one ends the list
                return
            part += 1

    def _id_list_parts(self, version: str) -> list[str]:
        """The names of the version's id list parts that exist (they are written in order, from 0)."""
        parts: list[str] = []
        while True:
            batch = [ids_key(self.namespace, version, len(parts) + k) for k in range(16)]
            found = int(self.client.exists(*batch))
            parts += batch[:found]
            if found < len(batch):
                return parts

    def _unlink_customers(self, version: str, slices: Iterator[np.ndarray], token: str) -> int:
        """UNLINK the customer keys of `version` for the ids of every slice: pipelined commands of
        UNLINK_BATCH keys packed by numpy, two slices in flight, replies counted in bulk; the lock is
        refreshed before every slice. The number of keys that existed."""
        prefix = customer_key(self.namespace, version, "").encode()
        what = f"removing feature-set version {version!r}"
        removed = 0
        with self._pipelined(what) as reader:
            in_flight: list[int] = []
            try:
                for ids in slices:
                    self._hold_lock(token)  # before every slice: never remove keys without the lock
                    payload, commands = encode_unlink(prefix, ids)
                    if commands:
                        reader.conn.send_packed_command([payload], check_health=False)
                        in_flight.append(commands)
                    if len(in_flight) >= IN_FLIGHT_CHUNKS:
                        removed += self._unlinked(reader.read_counts(in_flight.pop(0)), what)
            except _LockLost as lost:
                for count in in_flight:  # what was sent before is done: count it
                    removed += self._unlinked(reader.read_counts(count), what)
                lost.removed = removed
                raise
            for count in in_flight:
                removed += self._unlinked(reader.read_counts(count), what)
        return removed

    @staticmethod
    def _unlinked(counted: tuple[int, list[bytes]], what: str) -> int:
        total, errors = counted
        if errors:
            first = errors[0].decode(errors="replace").lstrip("-")
            raise FeatureStoreError(f"Redis refused {len(errors)} commands {what} (first: {first})")
        return total

    def _hold_lock(self, token: str) -> None:
        """Extend the push lock; raise _LockLost when this push no longer holds it."""
        key = lock_key(self.namespace)
        with self._redis_errors("refreshing the push lock"):
            held = self._refresh_lock(keys=[key], args=[token, LOCK_TTL_MS])
        if not held:
            raise _LockLost(f"the push lock {key} expired or was taken while old feature-set keys were "
                            f"being removed")

    def _delete_versions(self, *, keep: str | None = None, only: str | None = None,
                         token: str | None = None) -> int:
        """UNLINK the keys of every version except `keep` (or only of version `only`) by a walk.

        The keyspace is walked with SCAN in slices of 5,000 inside a server-side script, so no key travels
        to the client and Redis serves other clients between slices; the push lock (`token`) is refreshed
        before every 50 slices. The registry is left to the caller.
        """
        pattern = (version_prefix(self.namespace, only) if only else versions_prefix(self.namespace)) + "*"
        keep_prefix = version_prefix(self.namespace, keep) if keep else ""
        removed = 0
        cursor = b"0"
        steps = 0
        with self._redis_errors("removing old feature-set versions"):
            while True:
                if token is not None and steps % 50 == 0:
                    try:
                        self._hold_lock(token)
                    except _LockLost as lost:
                        lost.removed = removed
                        raise
                cursor, n = self._scan_unlink(args=[cursor, pattern, 5000, keep_prefix])
                removed += int(n)
                steps += 1
                if cursor in (b"0", 0, "0"):
                    break
        return removed

    @contextmanager
    def _push_lock(self) -> Iterator[str]:
        token = uuid.uuid4().hex
        key = lock_key(self.namespace)
        with self._redis_errors("taking the push lock"):
            acquired = self.client.set(key, token, nx=True, px=LOCK_TTL_MS)
        if not acquired:
            with self._redis_errors("reading the push lock"):
                ttl = self.client.pttl(key)
            raise FeatureStoreError(
                f"another push holds {key} (expires in {max(ttl, 0) / 1000:.0f} s): wait for it to finish; "
                f"if that push died, the lock expires by itself")
        try:
            yield token
        finally:
            try:
                self._release_lock(keys=[key], args=[token])
            except Exception as exc:  # the lock expires by itself; say so instead of masking the push's error
                log.warning("features.lock_release_failed", key=key, error=str(exc),
                            hint=f"it expires within {LOCK_TTL_MS // 1000} s")
