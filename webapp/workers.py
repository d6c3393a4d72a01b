"""Which Celery workers are alive, kept in Redis so that every process can ask.

A worker's main process has a lifetime id, :data:`BOOT` (its pool processes inherit it when they
fork), and every :data:`BEAT` seconds sets its score in the sorted set ``veil:workers`` to the
time until which it counts as alive (:data:`ALIVE_FOR` from then); a worker that stops cleanly
takes itself out, one that is killed just runs out. A worker restarted under the same name has a
new id, so nothing of the old one looks alive.

A pool process claims each photo it starts on with that id (``Photo.claimed_by``): a photo still
in progress whose claimant is no longer alive lost its task with its worker, and is queued again
(:mod:`webapp.albums.lost`) instead of waiting for the broker's visibility timeout. Pages ask
:func:`alive_count` to say at once that no worker is running.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence

from django.db import connection

from webapp.redisdb import client

BOOT = uuid.uuid4().hex
BEAT = 5.0  # seconds between a worker's beats
ALIVE_FOR = 20  # seconds a beat counts for: a worker unseen for longer is gone
WORKERS = "veil:workers"  # sorted set: lifetime id → until when (Unix time) it counts as alive


def beat() -> None:
    """This worker is alive (its main process's timer calls this every BEAT seconds)."""
    now = time.time()
    pipe = client().pipeline()
    pipe.zremrangebyscore(WORKERS, "-inf", now)  # those gone
    pipe.zadd(WORKERS, {BOOT: now + ALIVE_FOR})
    pipe.expire(WORKERS, ALIVE_FOR * 3)
    pipe.execute()


def stopped() -> None:
    client().zrem(WORKERS, BOOT)


def alive(boots: Sequence[str]) -> set[str]:
    """Which of these worker lifetimes are still alive."""
    if not boots:
        return set()
    now = time.time()
    until = client().zmscore(WORKERS, list(boots))
    return {boot for boot, score in zip(boots, until, strict=True) if score is not None and score > now}


def alive_count() -> int:
    """How many workers are alive now."""
    return int(client().zcount(WORKERS, f"({time.time()}", "+inf"))


def release_connection() -> None:
    """A worker's main process holds no database connection between its beats, nor across the
    forks of its pool processes (inside a transaction, a test's, it is left alone)."""
    if not connection.in_atomic_block:
        connection.close()
