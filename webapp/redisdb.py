"""The process-wide Redis connection for REDIS_URL: the transit store, viewings, worker
liveness and counters all use it (the channel layer, Celery and the cache have their own)."""

from __future__ import annotations

import functools

import redis
from django.conf import settings


@functools.cache
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url)


def client() -> redis.Redis:
    """The connection pool for REDIS_URL (per URL, so a test that points REDIS_URL elsewhere gets its own)."""
    return _client(settings.REDIS_URL)


# EXPIRE's GT option needs Redis 7; make run's bundled redis-server is 6.2.
_KEEP_AT_LEAST = """
local left = redis.call('TTL', KEYS[1])
if left >= 0 and left < tonumber(ARGV[1]) then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return 0
"""


def keep_at_least(key: str, ttl: int) -> None:
    """Let ``key`` live at least ``ttl`` more seconds; a longer TTL (or none) is left alone."""
    client().eval(_KEEP_AT_LEAST, 1, key, ttl)
