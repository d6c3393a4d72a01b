"""Photos whose upload or task was lost on the way, found when someone looks at them, when a
worker starts, and every few seconds in each running worker (:func:`sweep`).

A photo's sealed upload stays in Redis for as long as the photo is in progress: a worker drops
it only after the finished photo is committed (or failed). So a photo still "in progress" a
minute after it was queued, with no sealed upload left, will never finish: Redis lost it (a
restart without persistence) or its TTL ran out in a long queue. Such photos are marked failed
with a reason, so nothing stays "queued" for ever; the owner uploads them again.

A photo whose *worker* died while on it (killed, out of memory, its machine gone) still has its
upload, but its task is held by the broker until the visibility timeout, many minutes. Its
claim (``Photo.claimed_by``) names a worker that is no longer alive (:mod:`webapp.workers`), so
it is queued again at once; a photo that kills its worker twice then fails (``WORKER_LOST``).
"""

from __future__ import annotations

import logging
from datetime import timedelta

import redis
from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from webapp import jobs, workers
from webapp.texts import UPLOAD_EXPIRED, UPLOAD_LOST

from . import transit
from .models import Photo

log = logging.getLogger(__name__)

GRACE = 60  # seconds: a batch's rows are made a moment before its uploads reach Redis


def fail_lost(photos: QuerySet[Photo]) -> int:
    """Mark the lost ones among ``photos`` failed; how many were. Redis being away decides nothing.
    A failed photo whose upload has expired can no longer be tried again, only uploaded again."""
    expired = timezone.now() - timedelta(seconds=settings.VEIL_TRANSIT_TTL)
    expiring = photos.filter(status=Photo.Status.FAILED, retryable=True, created_at__lt=expired)
    if expiring.exists():  # a page view reads; it takes SQLite's write lock only when there is work
        expiring.update(retryable=False, failure_reason=UPLOAD_EXPIRED, image_bytes=None)
    stale = photos.filter(status__in=Photo.IN_PROGRESS, created_at__lt=timezone.now() - timedelta(seconds=GRACE))
    candidates = list(stale.values_list("pk", flat=True)[:500])
    if not candidates:
        return 0
    try:
        pipe = transit.client().pipeline(transaction=False)
        for photo_id in candidates:
            pipe.exists(transit.transit_key(photo_id))
        present = pipe.execute()
    except redis.RedisError:
        log.warning("could not look for lost uploads", exc_info=True)
        return 0
    lost = [photo_id for photo_id, there in zip(candidates, present, strict=True) if not there]
    # only if still in progress: a worker that finished meanwhile wins
    return Photo.objects.filter(pk__in=lost, status__in=Photo.IN_PROGRESS).update(
        status=Photo.Status.FAILED, failure_reason=UPLOAD_LOST, retryable=False, image_bytes=None
    )


def requeue_orphaned(photos: QuerySet[Photo]) -> int:
    """Queue again the photos among ``photos`` whose worker died while on them; how many were."""
    # claimed a while ago: a worker briefly unseen (Redis restarting) has usually finished by then
    unmoved = timezone.now() - timedelta(seconds=workers.ALIVE_FOR)
    claimed = photos.filter(claimed_by__isnull=False, status__in=Photo.IN_PROGRESS, updated_at__lt=unmoved)
    found = list(claimed.values_list("pk", "claimed_by")[:500])
    if not found:
        return 0
    try:
        living = workers.alive(sorted({boot for _, boot in found if boot}))
    except redis.RedisError:
        log.warning("could not look for photos whose worker died", exc_info=True)
        return 0
    requeued = 0
    for photo_id, boot in found:
        if boot in living:
            continue
        # only if no other sweep or worker has taken it meanwhile
        mine = Photo.objects.filter(pk=photo_id, claimed_by=boot, status__in=Photo.IN_PROGRESS)
        if mine.update(status=Photo.Status.QUEUED, progress=0.0, claimed_by=None):
            jobs.queue_anonymization(photo_id)
            requeued += 1
    if requeued:
        log.warning("queued %d photos again whose worker died while on them", requeued)
    return requeued


def sweep(photos: QuerySet[Photo]) -> None:
    """Nothing among ``photos`` waits for ever: lost uploads fail, orphaned photos are queued again."""
    fail_lost(photos)
    requeue_orphaned(photos)


def fail_all_lost() -> int:
    """:func:`fail_lost` over every photo, in batches; how many were lost."""
    total = 0
    while (found := fail_lost(Photo.objects.all())) > 0:
        total += found
    return total
