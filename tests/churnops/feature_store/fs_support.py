"""Helpers shared by the feature-store tests."""

from __future__ import annotations

from typing import Any

import pytest

from churnops.feature_store import store as fs_store


def fail_third_chunk(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    """Make the next push raise `error` while it encodes its third chunk: two chunks have reached Redis.
    Only the third call fails, so later pushes run normally."""
    calls = {"n": 0}
    real = fs_store.encode_hset_chunk

    def failing(*args: Any, **kwargs: Any) -> bytes:
        calls["n"] += 1
        if calls["n"] == 3:
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(fs_store, "encode_hset_chunk", failing)  # where the push reads it
