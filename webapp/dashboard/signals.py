"""Task records and worker heartbeats, written from Celery's signals.

* ``before_task_publish`` (the publishing process: web, or a worker retrying) → queued;
* ``task_prerun`` (the pool process that runs it) → running, with the worker's hostname;
* ``task_success`` → succeeded, or failed when a photo task reports that it marked its photo
  failed (``PhotoJob.fail``: the task returns ``"failed"`` and the reason is on the photo);
  the photo's faces and stored size are taken then;
* ``task_failure`` → failed with the exception; ``task_retry`` → queued again.
* ``worker_ready`` → the worker's heartbeat row, refreshed every HEARTBEAT_SECONDS by the
  worker's own timer (no extra process, whatever ``--without-heartbeat`` says);
  ``worker_shutdown`` → stopped.

Bookkeeping must never break the work it watches: every handler logs and swallows its errors.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, ParamSpec

from celery.signals import (
    before_task_publish,
    task_failure,
    task_prerun,
    task_retry,
    task_success,
    worker_ready,
    worker_shutdown,
)
from django.db import connection, transaction
from django.utils import timezone

from webapp import jobs
from webapp.albums.models import Photo
from webapp.workers import release_connection

from .models import TaskRecord, WorkerHeartbeat


def _waiting_for_room(name: str | None, retries: int | None) -> bool:
    """An unlock's retry only waits for room on a viewer's page: not worth a row write."""
    return name == jobs.RECOVER_PHOTO and bool(retries)


log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 15.0
# Finished task records older than this are dropped when a worker starts.
KEEP_RECORDS = timedelta(days=30)

P = ParamSpec("P")

# task id → time.monotonic() at task_prerun, in the process that runs the task
_started: dict[str, float] = {}


def connect() -> None:
    """Connect the handlers (called from DashboardConfig.ready, once per process)."""
    for signal, handler in (
        (before_task_publish, on_publish),
        (task_prerun, on_prerun),
        (task_success, on_success),
        (task_failure, on_failure),
        (task_retry, on_retry),
        (worker_ready, on_worker_ready),
        (worker_shutdown, on_worker_shutdown),
    ):
        signal.connect(handler, weak=False, dispatch_uid=f"veil.dashboard.{handler.__name__}")


def never_raises(handler: Callable[P, None]) -> Callable[P, None]:
    """Log a handler's errors instead of raising them; inside a transaction (a task published
    from an atomic block), a savepoint keeps a failed write from spoiling the caller's work."""

    @functools.wraps(handler)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            with transaction.atomic() if connection.in_atomic_block else contextlib.nullcontext():
                handler(*args, **kwargs)
        except Exception:
            log.warning("dashboard bookkeeping failed in %s", handler.__name__, exc_info=True)

    return guarded


def first_uuid(args: Sequence[Any] | None) -> uuid.UUID | None:
    """A task's first argument, if it is a UUID (photo tasks take the photo id first)."""
    try:
        return uuid.UUID(str(args[0])) if args else None
    except ValueError:
        return None


def photo_id_of(args: Sequence[Any] | None) -> uuid.UUID | None:
    """The photo a task is about: its first argument, when that is the id of an existing photo."""
    candidate = first_uuid(args)
    return None if candidate is None else Photo.objects.filter(pk=candidate).values_list("pk", flat=True).first()


# --- tasks --------------------------------------------------------------------------------


@never_raises
def on_publish(sender: str | None = None, body: Any = None, headers: dict[str, Any] | None = None, **_: Any) -> None:
    headers = headers or {}
    task_id = headers.get("id")
    if not task_id:  # only task protocol 2 carries the id in the headers; Veil uses nothing else
        return
    if _waiting_for_room(headers.get("task"), headers.get("retries")):
        return
    args = body[0] if isinstance(body, list | tuple) and body else ()
    fields = {"state": TaskRecord.State.QUEUED, "queued_at": timezone.now(), "retries": headers.get("retries") or 0}
    TaskRecord.objects.update_or_create(
        task_id=task_id,
        defaults=fields,
        create_defaults={**fields, "name": headers.get("task") or sender or "", "photo_id": photo_id_of(args)},
    )


@never_raises
def on_prerun(task_id: str = "", task: Any = None, args: Sequence[Any] | None = None, **_: Any) -> None:
    if _waiting_for_room(task.name, getattr(task.request, "retries", 0)):
        _started.setdefault(task_id, time.monotonic())
        return
    _started[task_id] = time.monotonic()
    fields = {
        "state": TaskRecord.State.RUNNING,
        "worker": (getattr(task.request, "hostname", None) or "")[:255],
        "started_at": timezone.now(),
        "finished_at": None,
        "duration": None,
        "failure_reason": "",
    }
    TaskRecord.objects.update_or_create(
        task_id=task_id,
        defaults=fields,
        create_defaults={**fields, "name": task.name, "photo_id": photo_id_of(args)},
    )


@never_raises
def on_success(sender: Any = None, result: Any = None, **_: Any) -> None:
    request = sender.request
    fields: dict[str, Any] = {"state": TaskRecord.State.SUCCEEDED, **_finish(request.id)}
    candidate = first_uuid(request.args)
    photos = Photo.objects.only("status", "faces", "failure_reason")
    photo = None if candidate is None else photos.filter(pk=candidate).first()
    if photo is not None:  # (a photo deleted meanwhile has nothing left to report)
        if result == Photo.Status.FAILED and photo.status == Photo.Status.FAILED:
            fields.update(state=TaskRecord.State.FAILED, failure_reason=photo.failure_reason)
        elif photo.status == Photo.Status.DONE and sender.name == jobs.ANONYMIZE_PHOTO:
            # only the anonymizing run counts its faces: an unlock's recoveries of them do not
            fields["faces"] = photo.faces
    TaskRecord.objects.filter(task_id=request.id).update(**fields)


@never_raises
def on_failure(sender: Any = None, task_id: str = "", exception: BaseException | None = None, **_: Any) -> None:
    reason = f"{type(exception).__name__}: {exception}" if exception is not None else "the task failed"
    TaskRecord.objects.filter(task_id=task_id).update(
        state=TaskRecord.State.FAILED, failure_reason=reason[:300], **_finish(task_id)
    )


@never_raises
def on_retry(sender: Any = None, request: Any = None, reason: Any = None, **_: Any) -> None:
    if getattr(sender, "name", None) == jobs.RECOVER_PHOTO:  # see _waiting_for_room
        return
    TaskRecord.objects.filter(task_id=request.id).update(
        state=TaskRecord.State.QUEUED, failure_reason=f"retrying: {reason}"[:300], **_finish(request.id)
    )


def _finish(task_id: str) -> dict[str, Any]:
    started = _started.pop(task_id, None)
    return {"finished_at": timezone.now(), "duration": None if started is None else time.monotonic() - started}


# --- workers ------------------------------------------------------------------------------


@never_raises
def record_heartbeat(hostname: str, *, starting: bool = False) -> None:
    """Say in the database that ``hostname`` is alive (runs in the worker's main process)."""
    now = timezone.now()
    fields: dict[str, Any] = {"last_seen": now, "stopped_at": None}
    if starting:
        fields.update(started_at=now, pid=os.getpid())
    try:
        WorkerHeartbeat.objects.update_or_create(
            hostname=hostname[:255], defaults=fields, create_defaults={"started_at": now, "pid": os.getpid(), **fields}
        )
    finally:
        release_connection()  # the main process holds no connection between beats (nor across forks)


@never_raises
def on_worker_ready(sender: Any = None, **_: Any) -> None:
    hostname = sender.hostname
    record_heartbeat(hostname, starting=True)
    sender.timer.call_repeatedly(HEARTBEAT_SECONDS, record_heartbeat, (hostname,), priority=10)
    TaskRecord.objects.filter(finished_at__lt=timezone.now() - KEEP_RECORDS).delete()
    release_connection()


@never_raises
def on_worker_shutdown(sender: Any = None, **_: Any) -> None:
    try:
        WorkerHeartbeat.objects.filter(hostname=sender.hostname).update(stopped_at=timezone.now())
    finally:
        release_connection()
