"""What a push sends to Redis and reads back, without Redis (pure): the RESP bytes of pipelined ``HSET``,
``APPEND`` and ``UNLINK`` commands packed by numpy, the header of a version's id list, and
:class:`_ReplyReader`, which splits the one-line replies of such a stream in bulk."""

from __future__ import annotations

from typing import Any

import numpy as np

FEATURES_FIELD = b"features"
EVENT_TIME_FIELD = b"event_time"
IDS_FORMAT = b"churnops-ids/1"  # header of a version's id list: b"churnops-ids/1 <record width>\n"
UNLINK_BATCH = 1000  # keys per UNLINK command when a version is removed by name


def ids_header(width: int) -> bytes:
    return b"%s %d\n" % (IDS_FORMAT, width)


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
