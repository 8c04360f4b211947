"""What the feature store returns: :class:`PushResult` (a push) and :class:`StoredFeatures` (a read)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class PushResult:
    version: str
    rows: int
    seconds: float
    previous: str | None  # the version that was current before
    removed_keys: int  # keys of older versions removed after the switch (customers, meta, id lists)
    skipped: bool = False  # the same content already was the current version
    write_seconds: float = 0.0  # of `seconds`: writing the customers' hashes (the rest: checks, clean-up)

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "rows": self.rows, "seconds": round(self.seconds, 3),
                "customers_per_s": round(self.rate) if self.seconds > 0 else None,
                "previous": self.previous, "removed_keys": self.removed_keys, "skipped": self.skipped,
                "write_seconds": round(self.write_seconds, 3)}


@dataclass(frozen=True)
class StoredFeatures:
    customer_id: str
    version: str
    event_time: float
    features: dict[str, Any] = field(default_factory=dict)  # {column: value}

    def to_dict(self) -> dict[str, Any]:
        return {"customer_id": self.customer_id, "version": self.version, "event_time": self.event_time,
                "features": self.features}
