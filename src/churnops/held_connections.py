"""One Redis connection per thread, held for single commands on a hot path (lookups by customer id).

``redis.Redis.execute_command`` takes a connection from the pool for every command (checking it with a
non-blocking poll), runs the call inside its retry and telemetry layers, reads the reply through its parser
layers and gives the connection back. Under load on the 2-core benchmark machine that Python cost more CPU
than the round trip itself, and it was most of what a lookup by id cost a gunicorn worker
(``benchmarks/RESULTS.md``, "Serving"). Here each thread keeps one connection of its own: redis-py opens it
with the client's own settings (address, TLS, password, database, timeouts: ``Connection.connect``), then a
command packed by hiredis is written to its socket and the reply is read by a hiredis reader.

Errors follow redis-py: a socket timeout raises ``redis.TimeoutError``, a refused, reset or closed connection
``redis.ConnectionError``, an error reply ``redis.ResponseError`` (``NoScriptError`` for ``NOSCRIPT``). A
connection that fails is dropped and the command is sent once more on a fresh one, as the client's one
immediate retry does, so use it only for commands that may safely run twice (reads). A process forked after
a connection was made opens its own: it never writes to its parent's socket.
"""

from __future__ import annotations

import os
import socket
import threading
from typing import TYPE_CHECKING, Any

import hiredis

if TYPE_CHECKING:
    import redis

_forks = 0  # processes forked from this one so far: a held connection belongs to the process that made it


def _after_fork_in_child() -> None:
    global _forks
    _forks += 1


os.register_at_fork(after_in_child=_after_fork_in_child)


class _Held:
    __slots__ = ("conn", "forks", "reader", "sock")

    def __init__(self, conn: Any) -> None:
        conn.connect()
        self.conn = conn
        self.sock: socket.socket = conn._sock  # opened, authenticated and with its timeout set by redis-py
        self.reader = hiredis.Reader()
        self.forks = _forks


class HeldConnections:
    """``call(pack(*command))``: one command on this thread's own connection to the client's Redis."""

    def __init__(self, client: redis.Redis) -> None:
        self.pool = client.connection_pool
        self._local = threading.local()

    @staticmethod
    def pack(*args: Any) -> bytes:
        return hiredis.pack_command(args)

    def call(self, packed: bytes) -> Any:
        """The reply to a packed command."""
        import redis

        try:
            return self._roundtrip(self._held(), packed)
        except (OSError, hiredis.ProtocolError):
            self.close()
        try:
            return self._roundtrip(self._held(), packed)
        except TimeoutError as exc:
            self.close()
            raise redis.TimeoutError(f"Redis did not answer within the read timeout: {exc}") from exc
        except (OSError, hiredis.ProtocolError) as exc:
            self.close()
            raise redis.ConnectionError(f"lost the connection to Redis: {exc}") from exc

    def _held(self) -> _Held:
        held = getattr(self._local, "held", None)
        if held is None or held.forks != _forks:
            held = self._local.held = _Held(self.pool.connection_class(**self.pool.connection_kwargs))
        return held

    @staticmethod
    def _roundtrip(held: _Held, packed: bytes) -> Any:
        import redis

        held.sock.sendall(packed)
        reader = held.reader
        reply = reader.gets()
        while reply is False:
            data = held.sock.recv(65536)
            if not data:
                raise ConnectionResetError("Redis closed the connection")
            reader.feed(data)
            reply = reader.gets()
        if isinstance(reply, hiredis.ReplyError):
            message = str(reply)
            if message.startswith("NOSCRIPT"):
                raise redis.exceptions.NoScriptError(message)
            raise redis.ResponseError(message)
        return reply

    def close(self) -> None:
        """Close this thread's connection (others close when their thread ends)."""
        held = getattr(self._local, "held", None)
        self._local.held = None
        if held is not None and held.forks == _forks:
            held.conn.disconnect()
