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
for _, key in ipairs(KEYS) do
  local left = redis.call('TTL', key)
  if left >= 0 and left < tonumber(ARGV[1]) then redis.call('EXPIRE', key, ARGV[1]) end
end
return 0
"""


def keep_at_least(ttl: int, *keys: str, using: redis.Redis | redis.client.Pipeline | None = None) -> None:
    """Let each of ``keys`` live at least ``ttl`` more seconds; a longer TTL (or none) is left
    alone, and a missing key stays missing. ``using``: a pipeline to run it in."""
    (using or client()).eval(_KEEP_AT_LEAST, len(keys), *keys, ttl)
