"""The monitoring state database: one SQLite file holding the alert outbox, alert cooldowns and the
retraining trigger log (``monitoring.state_db`` in params.yaml).

SQLite because the state is small, must survive restarts and receiver outages, and must be updated
atomically by whichever process runs a check (CLI, cron, an Airflow task): ``BEGIN IMMEDIATE``
transactions serialise writers across processes. Keep the file on a local disk of the one host (or the
one Airflow worker queue) that runs monitoring; SQLite locking is not reliable on network file systems.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    id           TEXT PRIMARY KEY,      -- idempotency key, sent with every delivery
    fingerprint  TEXT NOT NULL,         -- what makes two alerts "the same" for the cooldown
    kind         TEXT NOT NULL,
    title        TEXT NOT NULL,
    created_at   REAL NOT NULL,
    body         TEXT NOT NULL,         -- the alert as JSON
    suppressed   INTEGER NOT NULL DEFAULT 0   -- duplicates suppressed during its cooldown
);
CREATE INDEX IF NOT EXISTS alerts_by_fingerprint ON alerts (fingerprint, created_at);
CREATE TABLE IF NOT EXISTS deliveries (
    alert_id        TEXT NOT NULL REFERENCES alerts (id),
    channel         TEXT NOT NULL,
    channel_type    TEXT NOT NULL,
    payload         TEXT NOT NULL,      -- rendered once at enqueue time: every retry sends the same bytes
    status          TEXT NOT NULL,      -- pending | delivered
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    lease_owner     TEXT,
    lease_until     REAL,
    last_error      TEXT,
    delivered_at    REAL,
    PRIMARY KEY (alert_id, channel)
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (status, next_attempt_at);
CREATE TABLE IF NOT EXISTS retrain_triggers (
    id          TEXT PRIMARY KEY,
    created_at  REAL NOT NULL,
    status      TEXT NOT NULL,          -- triggered | suppressed | failed
    reason      TEXT NOT NULL,
    dag_id      TEXT NOT NULL,
    dag_run_id  TEXT,
    error       TEXT,
    conf        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS retrain_by_time ON retrain_triggers (status, created_at);
"""


class StateDB:
    """Opens a short-lived connection per transaction; safe to use from several processes at once."""

    def __init__(self, path: Path | str, timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self.timeout_s = timeout_s
        self._ready = False

    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise RuntimeError(f"cannot open the monitoring state database {self.path}: {exc} "
                               "(monitoring.state_db in params.yaml)") from exc
        conn.row_factory = sqlite3.Row
        if not self._ready:
            conn.executescript(SCHEMA)
            self._ready = True
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that holds the database's write lock from its first statement."""
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        conn = self._connect()
        try:
            yield conn
        finally:
            conn.close()
