"""What the staff dashboard reads besides the photos themselves: task records and worker
heartbeats, filled from Celery signals (see ``signals.py``).

Nothing here holds a secret: a task record keeps the task's name and photo, never its
arguments, and a failure reason is the sentence the photo's owner sees.
"""

from __future__ import annotations

from datetime import timedelta
from typing import ClassVar

from django.db import models
from django.utils import timezone

from webapp.albums.models import Photo

# A worker whose last heartbeat is older than this is shown as gone.
ALIVE_WITHIN = timedelta(seconds=60)


class TaskRecord(models.Model):
    """One Celery task, from publication to its end (a redelivered task keeps its record)."""

    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    task_id = models.CharField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    photo = models.ForeignKey(Photo, on_delete=models.SET_NULL, null=True, blank=True, related_name="task_records")
    state = models.CharField(max_length=16, choices=State.choices, default=State.QUEUED)
    worker = models.CharField(max_length=255, blank=True)  # the worker's hostname (node name)
    retries = models.PositiveIntegerField(default=0)
    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration = models.FloatField(null=True, blank=True)  # seconds from start to end on the worker
    faces = models.PositiveIntegerField(null=True, blank=True)  # faces anonymized by this run
    failure_reason = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering: ClassVar[list[str]] = ["-queued_at"]
        indexes: ClassVar[list[models.Index]] = [
            models.Index(fields=["state", "-finished_at"]),
            models.Index(fields=["state", "-started_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.name} {self.task_id} ({self.state})"


class WorkerHeartbeat(models.Model):
    """A Celery worker's last sign of life, written by the worker every few seconds."""

    hostname = models.CharField(max_length=255, unique=True)
    pid = models.PositiveIntegerField(null=True, blank=True)
    started_at = models.DateTimeField()
    last_seen = models.DateTimeField()
    stopped_at = models.DateTimeField(null=True, blank=True)  # a clean shutdown

    class Meta:
        ordering: ClassVar[list[str]] = ["-last_seen"]

    def __str__(self) -> str:
        return self.hostname

    @property
    def alive(self) -> bool:
        return self.stopped_at is None and timezone.now() - self.last_seen < ALIVE_WITHIN
