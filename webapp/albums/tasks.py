"""Celery tasks: thin wrappers that hand a photo to ``cipher_worker`` and store what it returns.

A task gets only a photo id. The original bytes wait in the transit store (sealed, with a TTL)
and are deleted once the photo is finished, so a worker killed mid-photo gets the task
redelivered (``acks_late`` + ``reject_on_worker_lost``) while the upload is still there.
Nothing is half-stored: files are written first, then the row is updated in one transaction,
and the files are removed again if that fails.
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass, field

import cv2
import torch
from celery import shared_task
from celery.signals import task_received, worker_process_init, worker_ready, worker_shutdown
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from cipher_worker import api as cipher_api
from cipher_worker.errors import VeilError, WrongKey
from cipher_worker.imageio import FORMATS, decode_image, encode_image, shrink_to
from cipher_worker.pipeline import AnonymizedPhoto
from webapp import jobs, workers
from webapp.realtime.status import send_status
from webapp.texts import KEY_ROTATED, OUR_FAULT, UPLOAD_EXPIRED, WORKER_LOST, WRONG_TRANSIT_KEY

from . import quotas, transit
from .lost import fail_all_lost, requeue_orphaned
from .models import Photo

log = logging.getLogger(__name__)

THUMBNAIL_PX = 400


class KeyRotated(Exception):
    """The album key changed between reading it and storing the photo sealed to it."""


# A killed worker's task comes back once by itself (acks_late); a photo that kills its worker
# again is failed, retryable by hand, rather than crashing workers in a loop.
MAX_ATTEMPTS = 2

# cipher_worker's progress stages → the photo states a person sees
_STAGE_STATUS = {
    "decoding": Photo.Status.DETECTING,
    "detecting": Photo.Status.DETECTING,
    "anonymizing": Photo.Status.ANONYMIZING,
    "encoding": Photo.Status.ANONYMIZING,
}


@worker_process_init.connect
def load_model(**_: object) -> None:
    """Load the model once in each worker process (after the fork, so CUDA stays usable)."""
    # Each pool process gets its share of the cores: two processes with two torch threads each
    # on two cores ran slower than one process (126 vs 184 photos/min).
    share = max(1, (os.cpu_count() or 1) // int(os.environ.get("VEIL_WORKER_CONCURRENCY") or 1))
    torch.set_num_threads(share)
    cv2.setNumThreads(share)
    try:
        cipher_api.get_pipeline()
    except Exception:
        log.exception("the anonymization model could not be loaded; photos will fail until it can be")


@worker_ready.connect
def on_worker_ready(sender: object = None, **_: object) -> None:
    """A worker that starts says it is alive, then every BEAT seconds (its main process's timer)
    again, each time queueing again the photos of workers that died on them. First it marks the
    photos whose uploads are gone failed (after a crash, or Redis coming back empty), so none
    waits for ever for a task that no longer exists."""
    keep_alive()
    try:
        lost = fail_all_lost()
        if lost:
            log.warning("marked %d photos failed whose uploads were lost", lost)
    except Exception:  # the database away too: the sweep on the album page does it later
        log.exception("could not look for lost photos")
    finally:
        workers.release_connection()
    timer = getattr(sender, "timer", None)
    if timer is not None:
        timer.call_repeatedly(workers.BEAT, keep_alive, priority=10)


def keep_alive() -> None:
    try:
        workers.beat()
        requeue_orphaned(Photo.objects.all())
    except Exception:  # Redis or the database away: the next beat tries again
        log.warning("worker beat failed", exc_info=True)
    finally:
        workers.release_connection()


@task_received.connect
def claim_photo(request: object = None, **_: object) -> None:
    """A photo task this worker has taken from the broker (to run now, or soon) is claimed for it,
    so that if the worker dies before finishing it, the others queue the photo again
    (webapp.albums.lost). Runs in the worker's main process."""
    if getattr(request, "name", None) != jobs.ANONYMIZE_PHOTO:
        return
    try:
        photo_id = uuid.UUID(str(request.args[0]))  # type: ignore[attr-defined]
        Photo.objects.filter(pk=photo_id, status__in=Photo.IN_PROGRESS).update(
            claimed_by=workers.BOOT, updated_at=timezone.now()
        )
    except Exception:  # the claim only speeds recovery up: the broker redelivers in the end anyway
        log.warning("could not claim a photo task", exc_info=True)
    finally:
        workers.release_connection()


@worker_shutdown.connect
def on_worker_shutdown(**_: object) -> None:
    try:
        workers.stopped()
    except Exception:
        log.warning("could not say this worker stopped", exc_info=True)


@shared_task(name=jobs.ANONYMIZE_PHOTO, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def anonymize_photo(photo_id: str) -> str:
    """Anonymize one uploaded photo; returns its final status (for logs and tests)."""
    try:
        job = PhotoJob.for_id(photo_id)
    except Photo.DoesNotExist:  # deleted (with its album) before a worker came
        transit.discard_upload(photo_id)
        return "deleted"
    return job.run()


@dataclass
class PhotoJob:
    photo: Photo
    _last_status: str = field(default="", init=False)
    _last_progress: float = field(default=-1.0, init=False)

    @classmethod
    def for_id(cls, photo_id: str) -> PhotoJob:
        return cls(Photo.objects.select_related("album").get(pk=uuid.UUID(str(photo_id))))

    @property
    def owner_id(self) -> int:
        return self.photo.album.owner_id

    def run(self) -> str:
        photo = self.photo
        if photo.status == Photo.Status.DONE:  # a redelivery after the work was committed
            transit.discard_upload(photo.pk)
            return photo.status
        try:
            data = transit.get_upload(photo.pk)
        except WrongKey:
            return self.fail(WRONG_TRANSIT_KEY, discard=True)
        if data is None:
            return self.fail(UPLOAD_EXPIRED, discard=False)
        if transit.count_attempt(photo.pk) > MAX_ATTEMPTS:
            transit.reset_attempts(photo.pk)
            return self.fail(WORKER_LOST, discard=False, retryable=True)
        self.report("detecting", 0.0)
        try:
            cipher_api.get_pipeline()  # loaded at worker start; a model that will not load is our fault
        except Exception:
            log.exception("the anonymization model could not be loaded for photo %s", photo.pk)
            return self.fail(OUR_FAULT, discard=False, retryable=True)
        try:
            result = cipher_api.anonymize_photo(data, photo.album.public_key_bytes, progress=self.report)
        except VeilError as exc:  # the photo's own problem (not an image, too large, …): say which
            return self.fail(str(exc), discard=True)
        except Exception:
            log.exception("anonymizing photo %s failed", photo.pk)
            return self.fail(OUR_FAULT, discard=False, retryable=True)
        finally:
            del data
        thumbnail = make_thumbnail(result.image)
        refusal = quotas.usage(self.owner_id).refusal_after_storing(
            photo.image_bytes or 0, result.image, thumbnail, result.envelope
        )
        if refusal:  # anonymized, it takes more than its upload did, and no longer fits
            return self.fail(refusal, discard=True)
        try:
            self.store(result, thumbnail)
        except Photo.DoesNotExist:  # deleted, or its album was, while the worker was on it
            transit.discard_upload(photo.pk)
            return "deleted"
        except KeyRotated:
            return self.fail(KEY_ROTATED, discard=False, retryable=True)
        except Exception:
            log.exception("storing photo %s failed", photo.pk)
            return self.fail(OUR_FAULT, discard=False, retryable=True)
        transit.discard_upload(photo.pk)
        self.announce()
        return photo.status

    def report(self, stage: str, fraction: float) -> None:
        """cipher_worker's progress callback: the row follows stage changes, the page every 10 %."""
        status = _STAGE_STATUS.get(stage, Photo.Status.ANONYMIZING)
        if status != self._last_status:
            Photo.objects.filter(pk=self.photo.pk).update(status=status, progress=fraction)
            self.photo.status, self.photo.progress = status, fraction
        elif fraction - self._last_progress < 0.1:
            return
        self._last_status, self._last_progress = status, fraction
        self.photo.progress = fraction
        self.announce()

    def store(self, result: AnonymizedPhoto, thumbnail: bytes) -> None:
        """Write the image and thumbnail, then fill the row in one transaction (files removed on failure)."""
        photo = self.photo
        base = f"photos/{photo.album_id}/{uuid.uuid4().hex}"
        written: list[str] = []
        try:
            written.append(default_storage.save(base + FORMATS[result.format], ContentFile(result.image)))
            written.append(default_storage.save(f"{base}.thumb.jpg", ContentFile(thumbnail)))
            with transaction.atomic():
                fields = {
                    "status": Photo.Status.DONE,
                    "progress": 1.0,
                    "failure_reason": "",
                    "retryable": False,
                    "image": written[0],
                    "thumbnail": written[1],
                    "image_bytes": len(result.image),
                    "thumbnail_bytes": len(thumbnail),
                    "envelope": result.envelope,
                    "format": result.format,
                    "width": result.size[0],
                    "height": result.size[1],
                    "faces": len(result.faces),
                    "claimed_by": None,
                }
                # only while the album still has the key this photo was sealed to (a rotation may
                # have committed meanwhile: then this envelope would open with no key anyone has)
                sealed_to = photo.album.public_key_bytes
                if not Photo.objects.filter(pk=photo.pk, album__public_key=sealed_to).update(**fields):
                    if Photo.objects.filter(pk=photo.pk).exists():
                        raise KeyRotated(KEY_ROTATED)
                    raise Photo.DoesNotExist(f"photo {photo.pk} was deleted while it was being anonymized")
        except BaseException:
            for name in written:
                default_storage.delete(name)
            raise
        for name, value in fields.items():
            setattr(photo, name, value)

    def fail(self, reason: str, *, discard: bool, retryable: bool = False) -> str:
        """Mark the photo failed with a human reason; ``discard`` drops the transit copy now."""
        photo = self.photo
        if discard:
            transit.discard_upload(photo.pk)
        Photo.objects.filter(pk=photo.pk).update(
            status=Photo.Status.FAILED,
            failure_reason=reason[:300],
            retryable=retryable,
            # one that can be tried again keeps its upload, and its size counts (albums.quotas)
            image_bytes=photo.image_bytes if retryable else None,
            claimed_by=None,
        )
        photo.status, photo.failure_reason, photo.retryable = Photo.Status.FAILED, reason[:300], retryable
        self.announce()
        return photo.status

    def announce(self) -> None:
        send_status(self.owner_id, self.photo.live_status())


def make_thumbnail(image: bytes, size: int = THUMBNAIL_PX) -> bytes:
    """A JPEG of at most ``size`` px on its longer side, made from the anonymized image."""
    return encode_image(shrink_to(decode_image(image).pixels, size), "JPEG", quality=82)
