"""The prediction log: every scored row, in a capped Redis stream that drift monitoring reads.

Stream ``<feature_store.namespace>:predictions``, capped at about ``serving.prediction_log_maxlen`` entries
(``XADD ... MAXLEN ~``). One entry per scored row (docs/architecture.md)::

    ts             unix seconds (float) when the row was scored
    model_version  the registered version that scored it
    probability    the churn probability returned
    customer_id    the id for lookups by id, "" when the full payload was sent
    features       JSON object {schema column: value}

Writing never slows a request down: :meth:`PredictionLog.append` puts the rows on an in-memory queue and a
background thread sends them in pipelined batches (every ``flush_interval_s``). While Redis is unreachable
the queue keeps up to ``serving.prediction_log_buffer`` rows and then drops the oldest, counting them
(``dropped``) and logging the outage once; when Redis is back the queue is flushed and the recovery logged.

Reading: :meth:`PredictionLog.read_window` (or the module function :func:`read_window`) returns a
DataFrame of the last N rows and/or the rows since a time, oldest first, with the feature columns typed
by the schema.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import orjson
import pandas as pd

from churnops.feature_store import connect
from churnops.logs import get_logger
from churnops.redaction import redact_url
from churnops.settings import SchemaSettings, Settings

if TYPE_CHECKING:
    import redis

log = get_logger(__name__)

META_COLUMNS = ["entry_id", "ts", "model_version", "probability", "customer_id"]

# (ts, model_version, probability, customer_id, {column: value})
Entry = tuple[float, str, float, str, Mapping[str, Any]]


# ARGV: maxlen, then (ts, model_version, probability, customer_id, features) per row
XADD_MANY = """
local key, maxlen = KEYS[1], ARGV[1]
for i = 2, #ARGV, 5 do
  redis.call('XADD', key, 'MAXLEN', '~', maxlen, '*', 'ts', ARGV[i], 'model_version', ARGV[i + 1],
             'probability', ARGV[i + 2], 'customer_id', ARGV[i + 3], 'features', ARGV[i + 4])
end
return (#ARGV - 1) / 5
"""


def stream_key(namespace: str) -> str:
    return f"{namespace}:predictions"


class PredictionLogError(RuntimeError):
    """The prediction log cannot be read; the message says where and why."""


class PredictionLog:
    """Writer (buffered, background) and reader of the prediction stream."""

    def __init__(self, client: redis.Redis, schema: SchemaSettings, *, namespace: str = "churnops",
                 maxlen: int = 1_000_000, buffer_size: int = 10_000, batch_size: int = 500,
                 flush_interval_s: float = 0.05, url: str = "redis",
                 on_written: Callable[[int], None] | None = None,
                 on_dropped: Callable[[int], None] | None = None) -> None:
        self.client = client
        self.schema = schema
        self.key = stream_key(namespace)
        self.maxlen = maxlen
        self.buffer_size = buffer_size
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.url = redact_url(url)
        self.on_written = on_written
        self.on_dropped = on_dropped
        self._queue: deque[Entry] = deque()
        self._lock = threading.Lock()  # guards the thread start and the drop accounting
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None
        self._failing_since: float | None = None
        self._sending = 0  # rows taken off the queue and not yet acknowledged by Redis
        self.written = 0
        self.dropped = 0
        # one call per batch: a redis-py pipeline costs ~13 us of this process's CPU per XADD
        self._xadd_many = client.register_script(XADD_MANY)

    @classmethod
    def from_settings(cls, settings: Settings, client: redis.Redis | None = None, **kwargs: Any
                      ) -> PredictionLog:
        fs = settings.params.feature_store
        serving = settings.params.serving
        client = client or connect(settings.redis_url, connect_timeout_s=fs.connect_timeout_s,
                                   socket_timeout_s=fs.read_timeout_s)
        kwargs.setdefault("buffer_size", serving.prediction_log_buffer)
        return cls(client, settings.schema, namespace=fs.namespace, maxlen=serving.prediction_log_maxlen,
                   url=settings.redis_url, **kwargs)

    # -- writing ---------------------------------------------------------------------------------
    def append(self, records: Sequence[Mapping[str, Any]], probabilities: Sequence[float], model_version: str,
               customer_ids: Sequence[str | None] | None = None, ts: float | None = None) -> None:
        """Queue scored rows (features keyed by column) for the background writer; returns at once."""
        ts = time.time() if ts is None else ts
        ids = customer_ids if customer_ids is not None else [None] * len(records)
        queue = self._queue
        overflow = len(queue) + len(records) - self.buffer_size
        if overflow > 0:
            self._drop(overflow)
        for record, p, cid in zip(records, probabilities, ids, strict=True):
            queue.append((ts, model_version, float(p), cid or "", record))
        if self._idle.is_set():
            self._idle.clear()
        thread = self._thread
        # after a fork the parent's writer is not alive in the child, so this also starts the child's own
        if thread is None or not thread.is_alive():
            self._start()
        if len(queue) >= self.batch_size:
            self._wake.set()

    def _drop(self, n: int) -> None:
        dropped = 0
        with self._lock:
            for _ in range(min(n, len(self._queue))):
                try:
                    self._queue.popleft()
                except IndexError:
                    break
                dropped += 1
            self.dropped += dropped
        if dropped and self.on_dropped is not None:
            self.on_dropped(dropped)

    def _start(self) -> None:
        with self._lock:
            if self._pid == os.getpid() and self._thread is not None and self._thread.is_alive():
                return
            self._pid = os.getpid()
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        backoff = 0.0
        while not self._stop.is_set():
            self._wake.wait(backoff or self.flush_interval_s)
            self._wake.clear()
            backoff = 0.0 if self._drain() else min(max(backoff * 2, 0.25), 5.0)
        self._drain()

    def _drain(self) -> bool:
        """Send the rows queued now; False when Redis failed (the rows stay queued)."""
        import redis

        queue = self._queue
        # only what is queued now: rows arriving meanwhile wait for the next tick, so a busy server sends
        # few large batches instead of chasing every new row with a round trip of its own
        left = len(queue)
        while queue and left > 0:
            batch: list[Entry] = []
            while queue and len(batch) < min(self.batch_size, left):
                try:
                    batch.append(queue.popleft())
                except IndexError:
                    break
            left -= len(batch)
            self._sending = len(batch)
            try:
                self.write(batch)
            except (redis.RedisError, OSError) as exc:
                self._sending = 0
                room = self.buffer_size - len(queue)
                keep = batch[-room:] if room > 0 else []
                queue.extendleft(reversed(keep))
                lost = len(batch) - len(keep)
                if lost:
                    with self._lock:
                        self.dropped += lost
                    if self.on_dropped is not None:
                        self.on_dropped(lost)
                if self._failing_since is None:
                    self._failing_since = time.time()
                    log.warning("prediction_log.unavailable", stream=self.key, redis=self.url, error=str(exc),
                                queued=len(queue), buffer=self.buffer_size,
                                hint="rows stay queued in memory up to the buffer size, then the oldest "
                                     "are dropped")
                return False
            self._sending = 0
            if self._failing_since is not None:
                log.info("prediction_log.recovered", stream=self.key, redis=self.url,
                         outage_s=round(time.time() - self._failing_since, 1), dropped_total=self.dropped)
                self._failing_since = None
        if not queue:
            self._idle.set()
        return True

    def write(self, entries: Sequence[Entry]) -> int:
        """Send entries now: one server-side script call adds them all (``XADD ... MAXLEN ~``), in order;
        raises redis errors (then none or all of them may be in the stream, never a partial entry)."""
        if not entries:
            return 0
        args: list[Any] = [self.maxlen]
        dumps = orjson.dumps
        for ts, version, p, cid, record in entries:
            args += (repr(ts), version, repr(p), cid, dumps(record))
        self._xadd_many(keys=[self.key], args=args)
        self.written += len(entries)
        if self.on_written is not None:
            self.on_written(len(entries))
        return len(entries)

    @property
    def pending(self) -> int:
        """Rows queued or being sent, not yet acknowledged by Redis."""
        return len(self._queue) + self._sending

    def flush(self, timeout_s: float = 2.0) -> bool:
        """Wait until the queue is sent; False if it could not be within `timeout_s` (Redis down)."""
        if not self.pending:
            return True
        if self._thread is None or not self._thread.is_alive() or self._pid != os.getpid():
            self._start()
        self._wake.set()
        deadline = time.monotonic() + timeout_s
        while self.pending and time.monotonic() < deadline:
            self._wake.set()
            self._idle.wait(0.02)
        return not self.pending

    def close(self, timeout_s: float = 2.0) -> None:
        """Flush what is queued (up to `timeout_s`) and stop the writer thread."""
        flushed = self.flush(timeout_s)
        if not flushed:
            log.warning("prediction_log.unflushed", stream=self.key, rows=self.pending,
                        hint="Redis did not answer while shutting down; these rows are lost")
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._pid == os.getpid():
            self._thread.join(timeout=1.0)

    # -- reading ---------------------------------------------------------------------------------
    def read_window(self, last_n: int | None = None, since_ts: float | None = None, *, page: int = 10_000
                    ) -> pd.DataFrame:
        """Rows of the log, oldest first: the last `last_n`, those scored since `since_ts`, or both (the
        last `last_n` of those since `since_ts`); neither: the whole (capped) stream.

        Columns: entry_id, ts, model_version, probability, customer_id, then the schema's feature columns
        (numeric as numbers, categorical as strings; a column absent from old entries is NaN).
        """
        import redis

        if last_n is not None and last_n < 1:
            raise ValueError(f"last_n must be at least 1, got {last_n}")
        low = f"{int(since_ts * 1000)}-0" if since_ts is not None else "-"
        entries: list[tuple[bytes, dict[bytes, bytes]]] = []
        try:
            if last_n is not None:
                high = "+"
                while len(entries) < last_n:
                    count = min(page, last_n - len(entries))
                    batch = self.client.xrevrange(self.key, max=high, min=low, count=count)
                    if not batch:
                        break
                    if since_ts is not None:
                        batch_kept = [e for e in batch if float(e[1].get(b"ts", b"0")) >= since_ts]
                    else:
                        batch_kept = batch
                    entries.extend(batch_kept)
                    high = "(" + batch[-1][0].decode()
                entries = entries[:last_n]
                entries.reverse()
            else:
                start = low
                while True:
                    batch = self.client.xrange(self.key, min=start, max="+", count=page)
                    entries.extend(batch)
                    if len(batch) < page:
                        break
                    start = "(" + batch[-1][0].decode()
                if since_ts is not None:
                    entries = [e for e in entries if float(e[1].get(b"ts", b"0")) >= since_ts]
        except (redis.RedisError, OSError) as exc:
            raise PredictionLogError(f"cannot read the prediction log {self.key} at {self.url}: "
                                     f"{exc}") from exc
        return self._frame(entries)

    def _frame(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> pd.DataFrame:
        schema = self.schema
        meta: dict[str, list[Any]] = {c: [] for c in META_COLUMNS}
        rows = []
        for entry_id, fields in entries:
            try:
                rows.append(json.loads(fields[b"features"]))
                meta["ts"].append(float(fields[b"ts"]))
                meta["probability"].append(float(fields[b"probability"]))
            except (KeyError, ValueError) as exc:
                raise PredictionLogError(f"entry {entry_id.decode()} of {self.key} is not a prediction-log "
                                         f"entry (fields ts, probability, features expected): {exc}") from exc
            meta["entry_id"].append(entry_id.decode())
            meta["model_version"].append(fields.get(b"model_version", b"").decode())
            meta["customer_id"].append(fields.get(b"customer_id", b"").decode())
        features = pd.DataFrame.from_records(rows, columns=schema.feature_columns) if rows else \
            pd.DataFrame(columns=schema.feature_columns)
        for col, spec in schema.numeric.items():
            values = pd.to_numeric(features[col], errors="coerce")
            if spec.integer and len(values) and values.notna().all():
                values = values.astype("int64")
            features[col] = values
        for col in schema.categorical:
            features[col] = features[col].astype(object)
        frame = pd.DataFrame(meta)
        frame["ts"] = frame["ts"].astype("float64")
        frame["probability"] = frame["probability"].astype("float64")
        return pd.concat([frame, features], axis=1)


def read_window(settings: Settings, last_n: int | None = None, since_ts: float | None = None) -> pd.DataFrame:
    """:meth:`PredictionLog.read_window` on the configured Redis (bulk timeout, for monitoring jobs)."""
    fs = settings.params.feature_store
    client = connect(settings.redis_url, connect_timeout_s=fs.connect_timeout_s,
                     socket_timeout_s=fs.push_timeout_s)
    try:
        return PredictionLog.from_settings(settings, client=client).read_window(last_n, since_ts)
    finally:
        client.close()
