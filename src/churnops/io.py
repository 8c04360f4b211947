"""Atomic file writes: a reader sees the old file or the new one, never half of either; safe folder names."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_UNSAFE_IN_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


def safe_run_id(run_id: str) -> str:
    """A run id (an Airflow run's, say) as a folder name: only letters, digits and ``_.-``, at most 120."""
    return _UNSAFE_IN_NAME.sub("_", run_id).strip("_")[:120] or "run"


@contextmanager
def atomic_path(dest: Path | str, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `dest`; on success it replaces `dest`, on error it is removed.

    The suffix defaults to dest's own, so writers that choose a format by extension keep working.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix or dest.suffix or ".tmp",
                               dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o644)  # mkstemp makes 0600; other users (Airflow, gunicorn, containers) must read it
    try:
        yield tmp_path
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, dest)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text_atomic(dest: Path | str, text: str) -> Path:
    with atomic_path(dest) as tmp:
        tmp.write_text(text)
    return Path(dest)


def write_json_atomic(dest: Path | str, doc: Any) -> Path:
    return write_text_atomic(dest, json.dumps(doc, indent=2, sort_keys=False, default=str) + "\n")


def same_content(a: Path | str, b: Path | str) -> bool:
    """True when both files exist and hold the same bytes (compared in 1 MiB blocks)."""
    a, b = Path(a), Path(b)
    if not (a.is_file() and b.is_file()) or a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            ca, cb = fa.read(1 << 20), fb.read(1 << 20)
            if ca != cb:
                return False
            if not ca:
                return True


def write_csv(frame: Any, dest: Any, *, header: bool = True) -> None:
    """A DataFrame as CSV through Arrow's C++ writer (several times faster than pandas' for millions of
    rows): nulls as empty unquoted fields, text quoted where needed, times in ISO 8601. `dest`: a path or
    a binary file object."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    table = pa.Table.from_pandas(frame, preserve_index=False)
    pacsv.write_csv(table, dest, pacsv.WriteOptions(include_header=header, quoting_style="needed"))
