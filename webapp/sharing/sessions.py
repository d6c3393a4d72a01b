"""Which viewing sessions are still open, in Redis, so that no work is done for a closed page.

An unlock queues a task per photo, a few at a time (webapp.sharing.unlocking.AHEAD). When the
page closes, or a new unlock replaces the last, its session ends here; a worker then skips the
photos still queued for it (it takes their sealed requests out of the transit store all the
same) and sends nothing, so no result piles up for a channel nobody reads. Each client address
may also have only VEIL_UNLOCK_SESSIONS open at once: one viewer cannot keep the unlock queue
to themselves by opening page after page.

Results are paced by the page: a session holds IN_FLIGHT credits, a worker takes one before it
sends a recovered photo (waiting for one if none is left) and the page's consumer gives it back
once the photo has gone out over the socket. So at most IN_FLIGHT photos of one viewing are
ever on their way, whatever the page's connection: none piles up in the web process.

Keys: ``veil:unlock-session:<id>`` (exists while open, with a TTL past the last photo's wait),
``veil:unlock-credit:<id>`` (its credits) and ``veil:unlock-open:<address>``, a sorted set of
that address's open sessions by expiry.
"""

from __future__ import annotations

import time

from django.conf import settings

from webapp.albums import transit
from webapp.redisdb import keep_at_least

SESSION = "veil:unlock-session:"
CREDIT = "veil:unlock-credit:"
MAILBOX = "veil:unlock-box:"  # a hash per viewing: photo id → its outcome, until the page takes it
OPEN = "veil:unlock-open:"
IN_FLIGHT = 2  # recovered photos of one viewing on their way to its page at most
SEND_PATIENCE = 10.0  # seconds a worker waits for room in a busy page's channel
MAILBOX_TTL = 120  # seconds an outcome waits for its page at most
RESULT, FAILURE = b"R", b"F"

# KEYS: the address's set, the session's key, its credits; ARGV: now, ttl, limit, session id,
# credits → 1 opened, 0 refused
_OPEN = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[1] + ARGV[2], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], 1, 'EX', ARGV[2])
redis.call('SET', KEYS[3], ARGV[5], 'EX', ARGV[2])
return 1
"""
# KEYS: the session's key, its credits → 1 taken, 0 none left, -1 the session is closed
_TAKE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if tonumber(redis.call('GET', KEYS[2]) or '0') > 0 then redis.call('DECR', KEYS[2]) return 1 end
return 0
"""
# KEYS: the session's key, its credits: one back, while the session is open
_GIVE = """
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('INCR', KEYS[2]) end
return 0
"""


def open_session(session_id: str, client: str, ttl: int) -> bool:
    """Open ``session_id`` for ``ttl`` seconds; False if ``client`` has too many open already."""
    r = transit.client()
    keys = (OPEN + client, SESSION + session_id, CREDIT + session_id)
    opened = r.eval(_OPEN, 3, *keys, time.time(), ttl, settings.VEIL_UNLOCK_SESSIONS, session_id, IN_FLIGHT)
    return bool(opened)


def extend(session_id: str, client: str, ttl: int) -> None:
    """Keep an open session open at least ``ttl`` seconds from now (never shortened)."""
    pipe = transit.client().pipeline()  # one MULTI: the session's keys and its place in the address's set
    keep_at_least(ttl, SESSION + session_id, CREDIT + session_id, OPEN + client, using=pipe)
    pipe.zadd(OPEN + client, {session_id: time.time() + ttl}, xx=True, gt=True)
    pipe.execute()


def close_session(session_id: str, client: str) -> None:
    r = transit.client()
    pipe = r.pipeline()
    pipe.delete(SESSION + session_id, CREDIT + session_id, MAILBOX + session_id)
    pipe.zrem(OPEN + client, session_id)
    pipe.execute()


def is_open(session_id: str) -> bool:
    return bool(transit.client().exists(SESSION + session_id))


def take_credit(session_id: str) -> int:
    """1: send a photo now; 0: the page has IN_FLIGHT on their way, wait; -1: the session closed."""
    return int(transit.client().eval(_TAKE, 2, SESSION + session_id, CREDIT + session_id))


def give_credit(session_id: str) -> None:
    """A photo has gone out to the page: another may come."""
    transit.client().eval(_GIVE, 2, SESSION + session_id, CREDIT + session_id)


# --- the mailbox: every outcome waits here until its page takes it --------------------------
# A worker posts a photo's outcome (its recovered image sealed under the session key, or a
# sentence saying why not), then rings the page through the channel layer. The page takes what
# is there when it hears the bell, and every few seconds besides: a ring lost on the way (a
# channel-layer message can be dropped) delays a photo by seconds, never loses it. Taking
# removes the entry, so each outcome is delivered once; closing the viewing drops the box.


# KEYS: the session's key, its mailbox; ARGV: photo id, outcome, TTL → 1 posted, 0 the session is closed
_POST = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return 1
"""


def post(session_id: str, photo_id: str, kind: bytes, payload: bytes) -> bool:
    """Leave ``photo_id``'s outcome (RESULT + sealed image, or FAILURE + UTF-8 sentence); False,
    and nothing left, if the viewing has ended meanwhile."""
    keys = (SESSION + session_id, MAILBOX + session_id)
    return bool(transit.client().eval(_POST, 2, *keys, photo_id, kind + payload, MAILBOX_TTL))


_TAKE_MAIL = """
local out = {}
for i, field in ipairs(ARGV) do
  local value = redis.call('HGET', KEYS[1], field)
  if value then
    redis.call('HDEL', KEYS[1], field)
    table.insert(out, field)
    table.insert(out, value)
  end
end
return out
"""


def take(session_id: str, photo_ids: list[str]) -> dict[str, tuple[bytes, bytes]]:
    """The outcomes waiting for these photos, removed as they are read: photo id → (kind, payload)."""
    if not photo_ids:
        return {}
    found = transit.client().eval(_TAKE_MAIL, 1, MAILBOX + session_id, *photo_ids)
    pairs = zip(found[::2], found[1::2], strict=True)
    return {bytes(k).decode(): (bytes(v[:1]), bytes(v[1:])) for k, v in pairs}
