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
atomic with respect to a version switch): :meth:`FeatureStore.get` and :meth:`FeatureStore.get_many`. They
run on a connection each thread holds (:mod:`churnops.held_connections`), not through the client's pool.
Every command has a timeout (``feature_store.*_timeout_s``); an unreachable Redis raises
:class:`FeatureStoreUnavailable` quickly instead of hanging a request.

Modules (every name other code imported from the single module it was is still importable from here):

- :mod:`churnops.feature_store.store`       :class:`FeatureStore`: push, reads, removal of old versions
- :mod:`churnops.feature_store.keys`        the key names above, allowed version names, customer ids as text
- :mod:`churnops.feature_store.layout`      :class:`Layout`: the packed ``features`` format
- :mod:`churnops.feature_store.wire`        RESP bytes of a push's pipelined commands, the id list's header,
                                            the bulk reader of their replies (pure)
- :mod:`churnops.feature_store.scripts`     the server-side Lua scripts
- :mod:`churnops.feature_store.results`     :class:`PushResult`, :class:`StoredFeatures`
- :mod:`churnops.feature_store.errors`      :class:`FeatureStoreError` and its kinds
- :mod:`churnops.feature_store.connection`  :func:`connect` (a Redis client with timeouts)

The tuning constants a push and a removal read (``LOCK_TTL_MS``, ``IN_FLIGHT_CHUNKS``, ``IDS_PART_BYTES``,
``IDS_SLICE_BYTES``) live in :mod:`churnops.feature_store.store`; set them there.
"""

from __future__ import annotations

from churnops.feature_store.connection import connect
from churnops.feature_store.errors import FeatureStoreError, FeatureStoreUnavailable, NoFeatureSet
from churnops.feature_store.keys import (
    VERSION_PATTERN,
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
from churnops.feature_store.layout import FORMAT, MISSING_CODE, Layout
from churnops.feature_store.results import PushResult, StoredFeatures
from churnops.feature_store.store import FeatureStore
from churnops.feature_store.wire import (
    EVENT_TIME_FIELD,
    FEATURES_FIELD,
    IDS_FORMAT,
    UNLINK_BATCH,
    _ReplyReader,
    encode_hset_chunk,
    encode_ids_append,
    encode_unlink,
    ids_header,
)

__all__ = [
    "EVENT_TIME_FIELD",
    "FEATURES_FIELD",
    "FORMAT",
    "IDS_FORMAT",
    "MISSING_CODE",
    "UNLINK_BATCH",
    "VERSION_PATTERN",
    "FeatureStore",
    "FeatureStoreError",
    "FeatureStoreUnavailable",
    "Layout",
    "NoFeatureSet",
    "PushResult",
    "StoredFeatures",
    "_ReplyReader",
    "check_version",
    "connect",
    "current_key",
    "customer_key",
    "encode_hset_chunk",
    "encode_ids_append",
    "encode_unlink",
    "ids_header",
    "ids_key",
    "lock_key",
    "meta_key",
    "normalise_id",
    "registry_key",
    "version_prefix",
    "versions_prefix",
]
