from __future__ import annotations

import stat
from pathlib import Path

import pytest

from churnops.io import atomic_path, write_json_atomic


def test_atomic_write_replaces_the_file_readable_by_others(tmp_path: Path) -> None:
    dest = write_json_atomic(tmp_path / "a" / "doc.json", {"x": 1})
    assert dest.read_text().strip().startswith("{")
    assert stat.S_IMODE(dest.stat().st_mode) & 0o044 == 0o044


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path: Path) -> None:
    dest = tmp_path / "doc.txt"
    dest.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(dest) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert dest.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["doc.txt"]


def test_same_content_compares_bytes(tmp_path: Path) -> None:
    from churnops.io import same_content

    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    a.write_bytes(b"x" * 3_000_000)
    b.write_bytes(b"x" * 3_000_000)
    c.write_bytes(b"x" * 2_999_999 + b"y")
    assert same_content(a, b)
    assert not same_content(a, c)
    assert not same_content(a, tmp_path / "missing")
