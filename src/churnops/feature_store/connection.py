"""The Redis client the feature store (and the prediction log) use."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import redis


def connect(url: str, *, connect_timeout_s: float, socket_timeout_s: float) -> redis.Redis:
    """A Redis client with timeouts and one immediate retry (a pooled connection may be stale after a
    Redis restart); a Redis that is down fails fast instead of backing off for seconds."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis.from_url(
        url,
        socket_connect_timeout=connect_timeout_s,
        socket_timeout=socket_timeout_s,
        retry=Retry(NoBackoff(), 1),
        health_check_interval=0,
    )
