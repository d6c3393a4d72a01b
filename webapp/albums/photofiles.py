"""A stored photo's files as HTTP responses, for every view that serves them: the owner's pages
(webapp.albums), the share link (webapp.sharing) and the API. Who may see the photo is the
caller's check."""

from __future__ import annotations

from django.http import FileResponse, HttpResponse, HttpResponseBase

from cipher_worker import carriers
from cipher_worker.imageio import FORMATS

from .models import Photo

_CONTENT_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}


def photo_image_response(photo: Photo) -> HttpResponseBase:
    """The anonymized image, shown inline."""
    if not photo.image:
        return HttpResponse(status=404)
    ext = FORMATS.get(photo.format, "")
    return FileResponse(
        photo.image.open("rb"),
        content_type=_CONTENT_TYPES.get(photo.format, "application/octet-stream"),
        filename=f"veil-{photo.pk}{ext}",
    )


def photo_thumbnail_response(photo: Photo) -> HttpResponseBase:
    if not photo.thumbnail:
        return HttpResponse(status=404)
    return FileResponse(photo.thumbnail.open("rb"), content_type="image/jpeg")


def photo_download_response(photo: Photo) -> HttpResponseBase:
    """The anonymized image as an attachment; with its recovery envelope embedded when the
    album's owner chose so (the stored file never has one: it lives in the database)."""
    if not photo.image:
        return HttpResponse(status=404)
    with photo.image.open("rb") as f:
        data = f.read()
    if photo.album.downloads_include_envelope and photo.envelope:
        data = carriers.embed(data, bytes(photo.envelope))
    response = HttpResponse(data, content_type=_CONTENT_TYPES.get(photo.format, "application/octet-stream"))
    response["Content-Disposition"] = f'attachment; filename="veil-{photo.pk}{FORMATS.get(photo.format, "")}"'
    return response
