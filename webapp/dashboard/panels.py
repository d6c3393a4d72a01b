"""The numbers on the staff dashboard, one function per panel.

Each panel is one aggregate query (or one Redis round trip), never a query per row, so the
page stays fast however many photos and tasks there are.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import redis
from django.db.models import Count, Sum
from django.db.models.functions import TruncHour
from django.utils import timezone
from kombu.transport.redis import PRIORITY_STEPS, Channel

from webapp.albums import transit
from webapp.albums.models import Photo
from webapp.celery import app as celery_app
from webapp.sharing.models import UnlockAttempt

from .models import ALIVE_WITHIN, TaskRecord, WorkerHeartbeat

log = logging.getLogger(__name__)

RECENT_TASKS = 50
CHART_HOURS = 24
WORKERS_SEEN_WITHIN = timedelta(days=1)


@dataclass(frozen=True)
class QueueDepth:
    """Messages waiting in the Celery queue, and those delivered to a worker but not yet acknowledged
    (tasks running or prefetched: Veil acknowledges late). None when Redis does not answer."""

    waiting: int | None
    reserved: int | None


def queue_depth() -> QueueDepth:
    """Redis ``LLEN`` of the Celery queues (photos, unlocks) and their priority sub-queues, ``HLEN`` of unacked."""
    names = []
    for queue in [q.name for q in celery_app.conf.task_queues]:
        # kombu's Redis transport keeps one list per priority step: "celery", "celery\x06\x163", …
        names += [queue] + [f"{queue}{Channel.sep}{step}" for step in PRIORITY_STEPS if step]
    try:
        pipe = transit.client().pipeline(transaction=False)
        for name in names:
            pipe.llen(name)
        pipe.hlen(Channel.unacked_key)
        *lengths, reserved = pipe.execute()
    except redis.RedisError:
        log.warning("the dashboard could not read the queue depth", exc_info=True)
        return QueueDepth(None, None)
    return QueueDepth(sum(lengths), reserved)


def running_tasks(limit: int = RECENT_TASKS) -> list[TaskRecord]:
    return list(TaskRecord.objects.filter(state=TaskRecord.State.RUNNING).order_by("-started_at")[:limit])


def failed_tasks(limit: int = RECENT_TASKS) -> list[TaskRecord]:
    return list(TaskRecord.objects.filter(state=TaskRecord.State.FAILED).order_by("-finished_at")[:limit])


@dataclass(frozen=True)
class HourBar:
    hour: datetime  # the start of the hour (UTC)
    faces: int
    photos: int
    percent: int  # bar height, of the busiest hour in the chart


def faces_per_hour(now: datetime | None = None, hours: int = CHART_HOURS) -> list[HourBar]:
    """Faces anonymized by succeeded tasks in each of the last ``hours`` hours, oldest first."""
    now = now or timezone.now()
    first = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours - 1)
    rows = (
        TaskRecord.objects.filter(state=TaskRecord.State.SUCCEEDED, finished_at__gte=first)
        .annotate(hour=TruncHour("finished_at"))
        .values("hour")
        .annotate(faces=Sum("faces"), photos=Count("pk"))
        .order_by("hour")
    )
    by_hour = {row["hour"]: (row["faces"] or 0, row["photos"]) for row in rows}
    hours_shown = [first + timedelta(hours=i) for i in range(hours)]
    busiest = max((by_hour.get(h, (0, 0))[0] for h in hours_shown), default=0)
    return [
        HourBar(
            hour=h,
            faces=by_hour.get(h, (0, 0))[0],
            photos=by_hour.get(h, (0, 0))[1],
            percent=round(100 * by_hour.get(h, (0, 0))[0] / busiest) if busiest else 0,
        )
        for h in hours_shown
    ]


@dataclass(frozen=True)
class WorkerStatus:
    hostname: str
    pid: int | None
    started_at: datetime
    last_seen: datetime
    stopped: bool
    alive: bool


def worker_heartbeats(now: datetime | None = None) -> list[WorkerStatus]:
    """Workers heard from in the last day, most recent first; alive if seen within ALIVE_WITHIN."""
    now = now or timezone.now()
    beats = WorkerHeartbeat.objects.filter(last_seen__gte=now - WORKERS_SEEN_WITHIN).order_by("-last_seen")[:50]
    return [
        WorkerStatus(
            hostname=b.hostname,
            pid=b.pid,
            started_at=b.started_at,
            last_seen=b.last_seen,
            stopped=b.stopped_at is not None,
            alive=b.stopped_at is None and now - b.last_seen < ALIVE_WITHIN,
        )
        for b in beats
    ]


@dataclass(frozen=True)
class StorageUsed:
    image_bytes: int
    thumbnail_bytes: int
    photos: int  # photos measured
    unmeasured: int  # finished photos stored before the dashboard measured them

    @property
    def total_bytes(self) -> int:
        return self.image_bytes + self.thumbnail_bytes


def storage_used() -> StorageUsed:
    """Bytes of the anonymized images and thumbnails in the media storage (recorded by the worker
    as it stores each photo; ``manage.py measure_storage`` measures older ones)."""
    done = Photo.objects.filter(status=Photo.Status.DONE)
    totals = done.filter(thumbnail_bytes__isnull=False).aggregate(
        image=Sum("image_bytes"), thumbnail=Sum("thumbnail_bytes"), photos=Count("pk")
    )
    unmeasured = done.filter(thumbnail_bytes__isnull=True).count()
    return StorageUsed(totals["image"] or 0, totals["thumbnail"] or 0, totals["photos"], unmeasured)


def photo_counts() -> list[tuple[str, str, int]]:
    """(status, label, count) for every photo state, in the order a photo goes through them."""
    counts = {row["status"]: row["n"] for row in Photo.objects.values("status").annotate(n=Count("pk")).order_by()}
    return [(status.value, str(status.label), counts.get(status.value, 0)) for status in Photo.Status]


def failed_unlocks(limit: int = RECENT_TASKS) -> list[UnlockAttempt]:
    """The latest failed unlock attempts (wrong password, rate-limited, expired, revoked), newest first."""
    failed = UnlockAttempt.objects.filter(outcome__in=UnlockAttempt.FAILURES).select_related("album")
    return list(failed[:limit])
