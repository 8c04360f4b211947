"""The feature store's errors: every failure a caller sees is a :class:`FeatureStoreError`."""

from __future__ import annotations


class FeatureStoreError(RuntimeError):
    """The feature store cannot do what was asked; the message says what is wrong and what to do."""


class _LockLost(FeatureStoreError):
    """The push lock expired or was taken while the push removed keys (`removed` of them, so far)."""

    removed = 0


class FeatureStoreUnavailable(FeatureStoreError):
    """Redis did not answer (refused, timed out, loading); retrying later may succeed."""


class NoFeatureSet(FeatureStoreError):
    """Nothing has been pushed yet (no current version)."""
