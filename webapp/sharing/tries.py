"""Counting password tries against an album's key slots, in Redis.

Every check of a password that opens a key slot — a family member unlocking through the share
link, the owner unlocking, adding a recipient or rotating the key with the album passphrase —
takes a try from two allowances in a fixed window: the slot's from this client, and the slot's
from everyone. The first stops one guesser without touching anyone else: Grandma, on her own
connection, keeps her tries while a link holder elsewhere is refused. The second bounds a guesser
spread over many addresses. A client already refused takes nothing more from the slot's
allowance, so one guesser cannot use it up.

A try is reserved before the password is checked (parallel guesses cannot overrun the limit) and
given back when it succeeds, so only wrong passwords use the allowance up. Both steps are one
Lua script each: atomic, and a try given back after its window ended does not bring the counter
back without an expiry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import redis
from django.conf import settings

from webapp.albums import transit

PREFIX = "veil:unlock-tries:"

# KEYS: the client's counter, the slot's; ARGV: window seconds, client limit, slot limit.
# Returns {allowed (0/1), seconds left in the window, first refusal of the window (0/1)}.
_RESERVE = """
local function take(key, window)
  redis.call('SET', key, 0, 'EX', window, 'NX')
  return redis.call('INCR', key), redis.call('TTL', key)
end
local mine, mine_ttl = take(KEYS[1], ARGV[1])
if mine > tonumber(ARGV[2]) then
  return {0, mine_ttl, mine == tonumber(ARGV[2]) + 1 and 1 or 0}
end
local all, all_ttl = take(KEYS[2], ARGV[1])
if all > tonumber(ARGV[3]) then
  redis.call('DECR', KEYS[1])
  return {0, all_ttl, all == tonumber(ARGV[3]) + 1 and 1 or 0}
end
return {1, math.max(mine_ttl, all_ttl), 0}
"""
# KEYS: the counters to give one try back to, each only while its window lasts.
_GIVE_BACK = """
for _, key in ipairs(KEYS) do
  local count = tonumber(redis.call('GET', key) or '0')
  if count > 0 then redis.call('DECR', key) end
end
return 0
"""


@dataclass(frozen=True)
class Tries:
    allowed: bool
    wait: int  # seconds until the window ends
    first_refusal: bool  # the first try refused in this window (the one worth logging)


class TryLimiter:
    """``per_client`` tries per key slot and client, ``per_slot`` per key slot, per ``window`` seconds."""

    def __init__(self, client: redis.Redis, per_client: int, per_slot: int, window: int) -> None:
        self.client, self.per_client, self.per_slot, self.window = client, per_client, per_slot, window
        self._reserve = client.register_script(_RESERVE)
        self._give_back = client.register_script(_GIVE_BACK)

    def keys(self, slot: int | str, who: str) -> list[str]:
        return [f"{PREFIX}{slot}:client:{who}", f"{PREFIX}{slot}"]

    def reserve(self, slot: int | str, who: str) -> Tries:
        """Take one try at ``slot`` (a key slot id) for client ``who`` if both allowances have one left."""
        allowed, wait, first = self._reserve(self.keys(slot, who), [self.window, self.per_client, self.per_slot])
        return Tries(bool(allowed), max(int(wait), 1), bool(first))

    def give_back(self, slot: int | str, who: str) -> None:
        self._give_back(self.keys(slot, who))

    def forget(self, slot: int | str) -> None:
        """Drop every counter of ``slot`` (it is gone, and so is what was counted)."""
        doomed = [f"{PREFIX}{slot}", *self.client.scan_iter(match=f"{PREFIX}{slot}:client:*", count=1000)]
        self.client.delete(*doomed)


def unknown_slot(album_id: object) -> str:
    """The counter that names no slot of an album share: tries at names it does not have."""
    return f"unknown:{album_id}"


def limiter() -> TryLimiter:
    return TryLimiter(
        transit.client(), settings.VEIL_UNLOCK_TRIES, settings.VEIL_UNLOCK_SLOT_TRIES, settings.VEIL_UNLOCK_WINDOW
    )


def too_many_tries(seconds: int) -> str:
    minutes = max(1, math.ceil(seconds / 60))
    return f"Too many tries; try again in {minutes} minute{'s' if minutes != 1 else ''}."
