"""One Redis connection per thread, held for single commands on a hot path (lookups by customer id).

``redis.Redis.execute_command`` takes a connection from the pool for every command (checking it with a
non-blocking poll), runs the call inside its retry and telemetry layers and gives the connection back: on
the 2-core benchmark machine that is about as much CPU as the round trip itself, and under load it was most
of what a lookup by id cost a gunicorn worker (``benchmarks/RESULTS.md``, "Serving"). Here each thread keeps
one connection of its own, made with the client's own settings (address, password, database, TLS, timeouts),
and sends a command already packed.

Errors are redis-py's: a connection that fails (refused, timed out, reset after a Redis restart) is dropped
and the command is sent once more on a fresh one, as the client's one immediate retry does, so use it only for
commands that may safely run twice (reads). A process forked after a connection was made makes its own (it
never writes to its parent's socket).
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import redis

_forks = 0  # processes forked from this one so far: a held connection belongs to the process that made it


def _after_fork_in_child() -> None:
    global _forks
    _forks += 1


os.register_at_fork(after_in_child=_after_fork_in_child)


class HeldConnections:
    """``call(pack(*command))``: one command on this thread's own connection to the client's Redis."""

    def __init__(self, client: redis.Redis) -> None:
        self.pool = client.connection_pool
        self._local = threading.local()

    def _connection(self) -> Any:
        local = self._local
        conn = getattr(local, "conn", None)
        if conn is None or local.forks != _forks:
            conn = self.pool.connection_class(**self.pool.connection_kwargs)
            local.conn, local.forks = conn, _forks
        return conn

    def pack(self, *args: Any) -> list[bytes]:
        return self._connection().pack_command(*args)

    def call(self, packed: list[bytes]) -> Any:
        """The reply to a packed command; raises redis-py's errors (ResponseError for an error reply)."""
        import redis

        conn = self._connection()
        try:
            conn.send_packed_command(packed, check_health=False)
            return conn.read_response()
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            conn.disconnect()
        conn.send_packed_command(packed, check_health=False)  # connects again
        return conn.read_response()

    def close(self) -> None:
        """Close this thread's connection (others close when their thread ends)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.disconnect()
            self._local.conn = None
