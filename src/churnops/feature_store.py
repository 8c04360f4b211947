"""The Redis feature store: every customer's features, for scoring by customer id.

Key space (``N`` = ``feature_store.namespace``, ``V`` = a feature-set version)::

    N:fs:current            string   the version readers use (switched atomically after a complete push)
    N:fs:versions           set      every version that may have keys: the current one, and any whose push
                                     failed or was killed before its keys were removed
    N:fs:v:V:meta           hash     rows, event_time, pushed_at, source, digest, layout (JSON)
    N:fs:v:V:c:<id>         hash     one per customer: ``features`` (packed values), ``event_time``
    N:fs:v:V:ids:<k>        string   the ids of the customers the version wrote (k = 0, 1, ...: parts of at
                                     most 16 MB); part 0 starts with the header line ``churnops-ids/1 <W>``,
                                     then the parts hold the ids as records of W bytes (NUL-padded)
    N:fs:lock               string   held by the push in progress (one push at a time)

A push registers its version in ``N:fs:versions`` and creates the (empty) id list with its header in one
transaction, before it writes any key of the version. It then writes the version's hashes with pipelined
``HSET`` commands in chunks of ``feature_store.chunk_size`` (the protocol is packed by numpy, two chunks in
flight, so the client keeps up with the server); each chunk is preceded in the same stream by one
``APPEND`` of its ids to the id list, so whatever a push wrote (even one killed mid-way) is listed. It
writes the version's meta, then switches ``N:fs:current`` with one ``SET``: readers see the old feature set
or the new one, never half a push. The registry's other versions are then removed by name: their id lists
are read in slices (``GETRANGE``, 4 MB at a time) and their keys removed with pipelined ``UNLINK`` commands
(1,000 keys each), then their meta, id list and registry entry go in one atomic step. The cost is
proportional to the removed version's size; nothing else in the keyspace is visited. A version without an
id list (written by an older churnops) is removed with a ``SCAN`` + ``UNLINK`` walk of the keyspace instead
(never ``KEYS``). The push lock is refreshed while the keys are written and before every slice of a
removal; a removal that finds the lock lost stops, and what it did not remove stays registered. A push
that fails leaves the current version untouched, removes its own partial keys (by the ids it was pushing)
and unregisters its version; a push that was killed stays registered with its id list, so the next push
removes its keys (before writing, when it pushes the same version again; after the switch, otherwise).
Pushing the same data again is a no-op (the default version is a content digest). The id list costs Redis
W bytes per customer and Redis's growth reserve (W: the longest id's length): 10.5 bytes for 1M 9-digit
ids, 18 for 100k (a string under 1 MB may be allocated twice its length).

A namespace written by a churnops without the registry (``N:fs:current`` set, the registry missing or not
listing it) is adopted by the next push: one walk removes every version's keys except the current one's,
then the current version is registered (and removed, after the switch, by its id list when it has one,
else by a walk). Keys of an older churnops's push killed before any push ever completed in the namespace
(no current version) are not detected.

The ``features`` field packs the feature values in the order of the version's ``layout`` (stored in its
meta): numeric columns as little-endian float64, categorical columns as little-endian uint16 codes into the
layout's category list. A packed value costs the server one field instead of one per column (about 4x
faster pushes) and is exact; `churnops features get ID` shows it decoded. Labels never enter the store:
only the id and the schema's feature columns are read from the gold layer.

Reads resolve the current version and fetch the customers in one server-side script (one round trip,
atomic with respect to a version switch): :meth:`FeatureStore.get` and :meth:`FeatureStore.get_many`.
Every command has a timeout (``feature_store.*_timeout_s``); an unreachable Redis raises
:class:`FeatureStoreUnavailable` quickly instead of hanging a request.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pandas as pd

from churnops.held_connections import HeldConnections
from churnops.logs import get_logger, progress
from churnops.settings import SchemaSettings, Settings

if TYPE_CHECKING:
    import redis

log = get_logger(__name__)

FORMAT = "churnops-fs/1"  # packed little-endian float64 numerics, then uint16 category codes
MISSING_CODE = 0xFFFF
VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
FEATURES_FIELD = b"features"
EVENT_TIME_FIELD = b"event_time"
LOCK_TTL_MS = 120_000
IN_FLIGHT_CHUNKS = 2
IDS_FORMAT = b"churnops-ids/1"  # header of a version's id list: b"churnops-ids/1 <record width>\n"
IDS_PART_BYTES = 16 << 20  # an id list is split into parts of at most this many bytes (whole chunks)
IDS_SLICE_BYTES = 4 << 20  # a removal reads an id list this many bytes at a time
UNLINK_BATCH = 1000  # keys per UNLINK command when a version is removed by name

# Resolve the current version and read customers' hashes in one atomic round trip.
# KEYS[1]: the current-version pointer. ARGV[1]: "<ns>:fs:v:". ARGV[2..]: customer ids.
# Returns false when nothing was pushed, else {version, features_1, event_time_1, features_2, ...}.
_LOOKUP_LUA = """
local v = redis.call('GET', KEYS[1])
if not v then return false end
local out = {v}
local base = ARGV[1] .. v .. ':c:'
for i = 2, #ARGV do
  local r = redis.call('HMGET', base .. ARGV[i], 'features', 'event_time')
  out[#out + 1] = r[1]
  out[#out + 1] = r[2]
end
return out
"""

# Extend the push lock only while this push still holds it.
_REFRESH_LOCK_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

# Switch the current version only while this push still holds the lock (atomic).
_SWITCH_LUA = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
return 1
"""

# One step of removing a key space: SCAN a slice of the keyspace and UNLINK the matching keys that do not
# start with the kept prefix, inside Redis (no key travels to the client). Returns {next cursor, removed}.
# ARGV: cursor, MATCH pattern, COUNT, kept prefix ("" keeps nothing).
_SCAN_UNLINK_LUA = """
local r = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', ARGV[3])
local keep = ARGV[4]
local batch, n = {}, 0
for _, k in ipairs(r[2]) do
  if keep == '' or string.sub(k, 1, #keep) ~= keep then
    batch[#batch + 1] = k
    if #batch == 500 then
      redis.call('UNLINK', unpack(batch))
      n = n + #batch
      batch = {}
    end
  end
end
if #batch > 0 then
  redis.call('UNLINK', unpack(batch))
  n = n + #batch
end
return {r[1], n}
"""

# The last step of removing a version by name, only while this push holds the lock (atomic): UNLINK its
# meta and id list parts and unregister it. KEYS: lock, registry, keys to unlink. ARGV: token, version.
# Returns the number of keys unlinked, or -1 when the lock is not held.
_FORGET_VERSION_LUA = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local n = 0
if #KEYS > 2 then n = redis.call('UNLINK', unpack(KEYS, 3)) end
redis.call('SREM', KEYS[2], ARGV[2])
return n
"""

_RELEASE_LOCK_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class FeatureStoreError(RuntimeError):
    """The feature store cannot do what was asked; the message says what is wrong and what to do."""


class _LockLost(FeatureStoreError):
    """The push lock expired or was taken while the push removed keys (`removed` of them, so far)."""

    removed = 0


class FeatureStoreUnavailable(FeatureStoreError):
    """Redis did not answer (refused, timed out, loading); retrying later may succeed."""


class NoFeatureSet(FeatureStoreError):
    """Nothing has been pushed yet (no current version)."""


def safe_url(url: str) -> str:
    """The Redis URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def connect(url: str, *, connect_timeout_s: float, socket_timeout_s: float) -> redis.Redis:
    """A Redis client with timeouts and one immediate retry (a pooled connection may be stale after a
    Redis restart); a Redis that is down fails fast instead of backing off for seconds."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis.from_url(
        url,
        socket_connect_timeout=connect_timeout_s,
        socket_timeout=socket_timeout_s,
        retry=Retry(NoBackoff(), 1),
        health_check_interval=0,
    )


# -- keys (pure functions) -----------------------------------------------------------------------
def current_key(namespace: str) -> str:
    return f"{namespace}:fs:current"


def lock_key(namespace: str) -> str:
    return f"{namespace}:fs:lock"


def registry_key(namespace: str) -> str:
    return f"{namespace}:fs:versions"


def versions_prefix(namespace: str) -> str:
    return f"{namespace}:fs:v:"


def version_prefix(namespace: str, version: str) -> str:
    return f"{namespace}:fs:v:{version}:"


def meta_key(namespace: str, version: str) -> str:
    return f"{namespace}:fs:v:{version}:meta"


def customer_key(namespace: str, version: str, customer_id: str) -> str:
    return f"{namespace}:fs:v:{version}:c:{customer_id}"


def ids_key(namespace: str, version: str, part: int = 0) -> str:
    return f"{namespace}:fs:v:{version}:ids:{part}"


def ids_header(width: int) -> bytes:
    return b"%s %d\n" % (IDS_FORMAT, width)


def check_version(version: str) -> str:
    if not VERSION_PATTERN.match(version):
        raise FeatureStoreError(
            f"feature-set version {version!r} is not allowed: use 1-64 letters, digits, '.', '_' or '-', "
            f"starting with a letter or digit")
    return version


def normalise_id(customer_id: Any) -> str:
    """Customer ids are stored as text: 768805383 and "768805383" are the same customer."""
    if isinstance(customer_id, bool) or customer_id is None:
        raise FeatureStoreError(f"customer id must be a string or an integer, got {customer_id!r}")
    if isinstance(customer_id, (int, np.integer)):
        return str(int(customer_id))
    if isinstance(customer_id, bytes):
        return customer_id.decode()
    return str(customer_id)


# -- the packed layout ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Layout:
    """How one customer's feature values are packed into the ``features`` field of its hash."""

    numeric: tuple[str, ...]
    integer: frozenset[str]
    categorical: tuple[tuple[str, tuple[str, ...]], ...]

    @classmethod
    def from_schema(cls, schema: SchemaSettings) -> Layout:
        for col, cats in schema.categorical.items():
            if len(cats) >= MISSING_CODE:
                raise FeatureStoreError(f"categorical column {col!r} has {len(cats)} categories; "
                                        f"the feature store packs at most {MISSING_CODE - 1}")
        return cls(
            numeric=tuple(schema.numeric),
            integer=frozenset(c for c, spec in schema.numeric.items() if spec.integer),
            categorical=tuple((c, tuple(v)) for c, v in schema.categorical.items()),
        )

    @property
    def columns(self) -> list[str]:
        return [*self.numeric, *(c for c, _ in self.categorical)]

    @cached_property
    def dtype(self) -> np.dtype:
        return np.dtype([(c, "<f8") for c in self.numeric] + [(c, "<u2") for c, _ in self.categorical])

    @cached_property
    def _struct(self) -> struct.Struct:
        return struct.Struct(f"<{len(self.numeric)}d{len(self.categorical)}H")

    @property
    def size(self) -> int:
        return self._struct.size

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "numeric": list(self.numeric), "integer": sorted(self.integer),
                           "categorical": {c: list(v) for c, v in self.categorical}})

    @classmethod
    def from_json(cls, text: str | bytes) -> Layout:
        doc = json.loads(text)
        if doc.get("format") != FORMAT:
            raise FeatureStoreError(f"feature set written in format {doc.get('format')!r}; this churnops "
                                    f"reads {FORMAT!r}: push the features again (churnops features push)")
        return cls(numeric=tuple(doc["numeric"]), integer=frozenset(doc["integer"]),
                   categorical=tuple((c, tuple(v)) for c, v in doc["categorical"].items()))

    def encode(self, frame: pd.DataFrame, source: str = "frame") -> np.ndarray:
        """Pack the feature columns of `frame` (one record per row). Missing values, non-numeric numbers
        and unknown categories are refused with the column, row count and examples."""
        out = np.empty(len(frame), dtype=self.dtype)
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            raise FeatureStoreError(f"{source} lacks feature columns {missing}")
        for col in self.numeric:
            try:
                values = pd.to_numeric(frame[col], errors="raise").to_numpy(dtype=np.float64)
            except (ValueError, TypeError) as exc:
                raise FeatureStoreError(f"{source}: column {col!r} is not numeric: {exc}") from exc
            bad = ~np.isfinite(values)
            if bad.any():
                raise FeatureStoreError(f"{source}: column {col!r} has {int(bad.sum())} missing or infinite "
                                        f"values; the gold layer must be complete (run the pipeline's "
                                        f"validation and features stages)")
            out[col] = values
        for col, cats in self.categorical:
            codes = pd.Categorical(frame[col], categories=list(cats)).codes
            bad = codes < 0
            if bad.any():
                examples = sorted(set(map(str, frame[col][bad].head(20))))[:5]
                raise FeatureStoreError(f"{source}: column {col!r} has {int(bad.sum())} values outside its "
                                        f"categories {list(cats)} (e.g. {examples})")
            out[col] = codes
        return out

    def decode(self, blob: bytes) -> dict[str, Any]:
        """One customer's ``{column: value}`` (ints for integer columns, floats, category strings)."""
        try:
            values = self._struct.unpack(blob)
        except struct.error as exc:
            raise FeatureStoreError(f"stored features are {len(blob)} bytes, the layout needs {self.size}: "
                                    f"the feature set is corrupt; push it again") from exc
        row: dict[str, Any] = {}
        n = len(self.numeric)
        for col, value in zip(self.numeric, values[:n], strict=True):
            row[col] = int(value) if col in self.integer else value
        for (col, cats), code in zip(self.categorical, values[n:], strict=True):
            if code >= len(cats):
                raise FeatureStoreError(f"stored code {code} of column {col!r} is outside its "
                                        f"{len(cats)} categories: the feature set is corrupt; push it again")
            row[col] = cats[code]
        return row


# -- the RESP protocol of a chunk (pure) ---------------------------------------------------------
def _bulk(data: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(data), data)


def _id_lengths(ids: np.ndarray) -> np.ndarray:
    return np.char.str_len(ids) if len(ids) else np.zeros(0, dtype=np.int64)


def encode_hset_chunk(key_prefix: bytes, ids: np.ndarray, packed: np.ndarray, event_time: bytes,
                      lengths: np.ndarray | None = None) -> bytes:
    """``HSET <key_prefix><id> features <packed> event_time <event_time>`` for every row, as RESP bytes.

    `ids` is a numpy bytes array (``S``), `packed` the structured records of the same rows, `lengths` the
    ids' lengths when known. Rows are grouped by key length so each group is assembled by numpy in one pass.
    """
    width = packed.dtype.itemsize
    blobs = packed.view(np.dtype((np.void, width))) if len(packed) else packed
    lengths = _id_lengths(ids) if lengths is None else lengths
    mid = b"\r\n" + _bulk(FEATURES_FIELD) + b"$%d\r\n" % width
    tail = b"\r\n" + _bulk(EVENT_TIME_FIELD) + _bulk(event_time)
    parts = []
    for id_len in np.unique(lengths):
        rows = np.nonzero(lengths == id_len)[0]
        head = b"*6\r\n$4\r\nHSET\r\n$%d\r\n%s" % (len(key_prefix) + int(id_len), key_prefix)
        row_type = np.dtype([("head", f"V{len(head)}"), ("id", f"S{int(id_len)}"), ("mid", f"V{len(mid)}"),
                             ("features", f"V{width}"), ("tail", f"V{len(tail)}")])
        block = np.empty(len(rows), dtype=row_type)
        block["head"] = np.void(head)
        block["id"] = ids[rows]
        block["mid"] = np.void(mid)
        block["features"] = blobs[rows]
        block["tail"] = np.void(tail)
        parts.append(block.tobytes())
    return b"".join(parts)


def encode_ids_append(key: bytes, ids: np.ndarray) -> bytes:
    """``APPEND <key> <ids' records>``: `ids` is a numpy bytes array (``S<W>``); each id is one record of W
    bytes, NUL-padded (an id never ends with NUL: numpy strips trailing NULs from ``S`` values)."""
    return b"*3\r\n$6\r\nAPPEND\r\n" + _bulk(key) + _bulk(np.ascontiguousarray(ids).tobytes())


def encode_unlink(key_prefix: bytes, ids: np.ndarray, per_command: int = UNLINK_BATCH) -> tuple[bytes, int]:
    """``UNLINK <key_prefix><id> ...`` (at most `per_command` keys a command) for every id, as RESP bytes,
    and the number of commands. Ids are grouped by length so each group is assembled by numpy in one pass.
    """
    lengths = _id_lengths(ids)
    parts: list[bytes | memoryview] = []
    commands = 0
    for id_len in np.unique(lengths):
        group = ids[lengths == id_len]
        head = b"$%d\r\n%s" % (len(key_prefix) + int(id_len), key_prefix)
        row_type = np.dtype([("head", f"V{len(head)}"), ("id", f"S{int(id_len)}"), ("crlf", "V2")])
        block = np.empty(len(group), dtype=row_type)
        block["head"] = np.void(head)
        block["id"] = group
        block["crlf"] = np.void(b"\r\n")
        data = memoryview(block.tobytes())
        size = row_type.itemsize
        for start in range(0, len(group), per_command):
            count = min(per_command, len(group) - start)
            parts.append(b"*%d\r\n$6\r\nUNLINK\r\n" % (count + 1))
            parts.append(data[start * size:(start + count) * size])
            commands += 1
    return b"".join(parts), commands


class _ReplyReader:
    """Reads the single-line replies of pipelined commands (HSET, APPEND, UNLINK) straight from the
    connection's socket.

    redis-py's pure-Python parser costs several microseconds per reply, more than Redis spends on the
    command; these replies are one line each (``:2`` or ``-ERR ...``), so they are split in bulk here.
    Without a raw socket (another connection class) it falls back to the parser.
    """

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.sock = getattr(conn, "_sock", None)
        self.buf = bytearray()

    def read(self, n: int) -> list[bytes]:
        """The next `n` replies whose first byte is not ':' (errors), as bytes; raises on timeouts."""
        if self.sock is None:
            return self._parsed(n)[1]
        return [line for line in self._lines(n) if line[:1] != b":"]

    def read_counts(self, n: int) -> tuple[int, list[bytes]]:
        """The sum of the next `n` integer replies, and the other replies (errors) as bytes."""
        if self.sock is None:
            return self._parsed(n)
        total, errors = 0, []
        for line in self._lines(n):
            if line[:1] == b":":
                total += int(line[1:])
            else:
                errors.append(line)
        return total, errors

    def _lines(self, n: int) -> list[bytes]:
        have = self.buf.count(b"\n")
        while have < n:
            data = self.sock.recv(1 << 20)
            if not data:
                raise ConnectionError("Redis closed the connection during the push")
            self.buf += data
            have += data.count(b"\n")
        lines = self.buf.split(b"\r\n", n)
        self.buf = bytearray(lines[n])
        return lines[:n]

    def _parsed(self, n: int) -> tuple[int, list[bytes]]:
        import redis

        total, errors = 0, []
        for _ in range(n):
            try:
                reply = self.conn.read_response()
            except redis.ResponseError as exc:
                errors.append(str(exc).encode())
                continue
            if isinstance(reply, int):
                total += reply
        return total, errors

    @property
    def drained(self) -> bool:
        return not self.buf


# -- results -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PushResult:
    version: str
    rows: int
    seconds: float
    previous: str | None  # the version that was current before
    removed_keys: int  # keys of older versions removed after the switch (customers, meta, id lists)
    skipped: bool = False  # the same content already was the current version
    write_seconds: float = 0.0  # of `seconds`: writing the customers' hashes (the rest: checks, clean-up)

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "rows": self.rows, "seconds": round(self.seconds, 3),
                "customers_per_s": round(self.rate) if self.seconds > 0 else None,
                "previous": self.previous, "removed_keys": self.removed_keys, "skipped": self.skipped,
                "write_seconds": round(self.write_seconds, 3)}


@dataclass(frozen=True)
class StoredFeatures:
    customer_id: str
    version: str
    event_time: float
    features: dict[str, Any] = field(default_factory=dict)  # {column: value}

    def to_dict(self) -> dict[str, Any]:
        return {"customer_id": self.customer_id, "version": self.version, "event_time": self.event_time,
                "features": self.features}


# -- the store -----------------------------------------------------------------------------------
class FeatureStore:
    """Push and read customers' features. Create with :meth:`from_settings`; nothing connects before use."""

    def __init__(self, client: redis.Redis, schema: SchemaSettings, *, namespace: str = "churnops",
                 chunk_size: int = 5000, push_timeout_s: float = 60.0, url: str = "redis") -> None:
        self.client = client
        self.schema = schema
        self.namespace = namespace
        self.chunk_size = chunk_size
        self.push_timeout_s = push_timeout_s
        self.url = safe_url(url)
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

