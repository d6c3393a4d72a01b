"""Which viewing sessions are still open, in Redis, so that no work is done for a closed page.

An unlock queues one task per photo. When the page closes, or a new unlock replaces the last,
its session ends here; a worker then skips the photos still queued for it (it takes their sealed
requests out of the transit store all the same) and sends nothing, so no result piles up for a
channel nobody reads. Each client address may also have only VEIL_UNLOCK_SESSIONS open at once:
one viewer cannot keep the unlock queue to themselves by opening page after page.

Keys: ``veil:unlock-session:<id>`` (exists while open, with a TTL past the last photo's wait)
and ``veil:unlock-open:<address>``, a sorted set of that address's open sessions by expiry.
"""

from __future__ import annotations

import time

from django.conf import settings

from webapp.albums import transit

SESSION = "veil:unlock-session:"
OPEN = "veil:unlock-open:"

# KEYS: the address's set, the session's key; ARGV: now, ttl, limit, session id → 1 opened, 0 refused
_OPEN = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[1] + ARGV[2], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], 1, 'EX', ARGV[2])
return 1
"""


def open_session(session_id: str, client: str, ttl: int) -> bool:
    """Open ``session_id`` for ``ttl`` seconds; False if ``client`` has too many open already."""
    r = transit.client()
    opened = r.eval(
        _OPEN, 2, OPEN + client, SESSION + session_id, time.time(), ttl, settings.VEIL_UNLOCK_SESSIONS, session_id
    )
    return bool(opened)


def extend(session_id: str, client: str, ttl: int) -> None:
    """Keep an open session open ``ttl`` seconds from now (once its photos are queued)."""
    r = transit.client()
    pipe = r.pipeline()
    pipe.set(SESSION + session_id, 1, ex=ttl, xx=True)
    pipe.zadd(OPEN + client, {session_id: time.time() + ttl}, xx=True)
    pipe.expire(OPEN + client, ttl, gt=True)
    pipe.execute()


def close_session(session_id: str, client: str) -> None:
    r = transit.client()
    pipe = r.pipeline()
    pipe.delete(SESSION + session_id)
    pipe.zrem(OPEN + client, session_id)
    pipe.execute()


def is_open(session_id: str) -> bool:
    return bool(transit.client().exists(SESSION + session_id))
