"""Accepting an upload: a queued Photo row, the sealed bytes in the transit store, a task."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction

from cipher_worker.errors import ImageTooLarge, NotAnImage
from cipher_worker.imageio import sniff_image
from webapp import jobs
from webapp.limits import too_large_message
from webapp.realtime.status import send_status

from . import quotas, transit
from .models import Album, Photo

log = logging.getLogger(__name__)


class UploadRefused(Exception):
    """An upload refused with a reason a person can act on; nothing of it was kept.

    ``status`` is the HTTP code the web page and the API answer with (400, 413 or 503).
    """

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


NO_PHOTO = "Choose at least one photo to upload."
QUEUE_DOWN = "Veil's photo queue is not reachable right now; please try again in a minute."


def check_request_size(content_length: int) -> None:
    """Refuse (413) a request body larger than one photo and its framing, before it is parsed."""
    if content_length > settings.VEIL_MAX_REQUEST_BYTES:
        raise UploadRefused(too_large_message(settings.VEIL_MAX_UPLOAD_MB), 413)


def accept_uploads(album: Album, files: Sequence[UploadedFile]) -> list[Photo]:
    """Queue every posted file into ``album`` (the web page's upload and the API's share this path).

    Every file is checked before any is queued: UploadRefused when there is no file or too many
    (400), a file is too large (413), or is not a JPEG, PNG or WebP photo by its content, whatever
    its name says (400, naming the file); then as :func:`accept_contents`.
    """
    if not files:
        raise UploadRefused(NO_PHOTO, 400)
    if len(files) > settings.VEIL_MAX_FILES_PER_REQUEST:
        raise UploadRefused(too_many_files_message(settings.VEIL_MAX_FILES_PER_REQUEST), 400)
    if any(f.size is None or f.size > settings.VEIL_MAX_UPLOAD_BYTES for f in files):
        raise UploadRefused(too_large_message(settings.VEIL_MAX_UPLOAD_MB), 413)
    # MemoryFileUploadHandler is the only upload handler: this never reads from disk.
    contents = [upload.read() for upload in files]
    for upload, data in zip(files, contents, strict=True):
        try:
            sniff_image(data)
        except ImageTooLarge as exc:
            raise UploadRefused(f"“{upload.name}”: {exc}.", 413) from None
        except NotAnImage as exc:
            raise UploadRefused(f"“{upload.name}”: {exc}.", 400) from None
    return accept_contents(album, [(upload.name or "", data) for upload, data in zip(files, contents, strict=True)])


def too_many_files_message(limit: int) -> str:
    return f"Upload at most {limit} photos at a time; send the rest in another batch."


def accept_contents(album: Album, named: Sequence[tuple[str, bytes]]) -> list[Photo]:
    """Queue each (file name, original bytes in memory) for anonymization into ``album``.

    The rows are made under a lock on the owner's account once the quota has room for them all
    (UploadRefused 403 otherwise) and the account's queue too (429: send it again in a little
    while; the album page does so by itself). Each upload then goes to Redis sealed to the
    workers' transit key, and its task message, holding only the photo id, to the broker. If Redis or the broker
    is down: UploadRefused 503, and the photos not yet queued are removed again.
    """
    with transaction.atomic():
        quotas.lock_account(album.owner_id)
        size = sum(len(data) for _, data in named)
        refusal = quotas.usage(album.owner_id).refusal(len(named), size)
        if refusal:
            raise UploadRefused(refusal, 403)
        backlog = quotas.backlog_refusal(album.owner_id, len(named), size)
        if backlog:
            raise UploadRefused(backlog, 429)
        photos = [
            Photo.objects.create(album=album, file_name=_base_name(name), image_bytes=len(data)) for name, data in named
        ]
    for position, (photo, (_, data)) in enumerate(zip(photos, named, strict=True)):
        try:
            transit.put_upload(photo.pk, data)
            jobs.queue_anonymization(photo.pk)
        except Exception as exc:
            log.exception("could not queue photo %s", photo.pk)
            for unqueued in photos[position:]:
                _discard(unqueued)
                unqueued.delete()
            raise UploadRefused(QUEUE_DOWN, 503) from exc
        send_status(album.owner_id, photo.live_status())
    return photos


def accept_upload(album: Album, data: bytes, file_name: str = "") -> Photo:
    """One photo's :func:`accept_contents`."""
    return accept_contents(album, [(file_name, data)])[0]


def _base_name(file_name: str) -> str:
    """Only the name's last part, as the browser or script sent it, at most 255 characters."""
    return file_name.replace("\\", "/").rsplit("/", 1)[-1][:255]


def _discard(photo: Photo) -> None:
    try:
        transit.discard_upload(photo.pk)
    except Exception:
        log.warning("could not remove the transit copy of photo %s", photo.pk, exc_info=True)


def retry_photo(photo: Photo) -> bool:
    """Queue a failed photo again if the failure was ours and its upload is still in transit."""
    if photo.status != Photo.Status.FAILED or not photo.retryable or not transit.has_upload(photo.pk):
        return False
    Photo.objects.filter(pk=photo.pk).update(status=Photo.Status.QUEUED, progress=0.0, failure_reason="")
    transit.reset_attempts(photo.pk)  # a person asked again: the worker gets its full tries
    photo.refresh_from_db()
    transaction.on_commit(lambda: jobs.queue_anonymization(photo.pk))
    send_status(photo.album.owner_id, photo.live_status())
    return True
