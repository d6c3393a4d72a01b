"""A stored photo's files as HTTP responses, for every view that serves them: the owner's pages
(webapp.albums), the share link (webapp.sharing) and the API. Who may see the photo is the
caller's check.

An image or thumbnail is served with an ETag naming its stored file, and asked for by a URL
that carries the same name (``?v=``, see ``Photo.thumbnail_version``): a stored file never
changes (a new one gets a new name), so such a URL is cached for a year without asking again,
and any other is revalidated for a 304.
"""

from __future__ import annotations

from django.db.models.fields.files import FieldFile
from django.http import FileResponse, HttpRequest, HttpResponse, HttpResponseBase, HttpResponseNotModified
from django.utils.cache import patch_cache_control

from cipher_worker import carriers
from cipher_worker.imageio import FORMATS

from .models import Photo

_CONTENT_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
A_YEAR = 365 * 24 * 3600


def _content_type(photo: Photo) -> str:
    return _CONTENT_TYPES.get(photo.format, "application/octet-stream")


def _file_name(photo: Photo) -> str:
    return f"veil-{photo.pk}{FORMATS.get(photo.format, '')}"


def photo_image_response(request: HttpRequest, photo: Photo) -> HttpResponseBase:
    """The anonymized image, shown inline."""
    if not photo.image:
        return HttpResponse(status=404)
    return _file_response(request, photo.image, photo.image_version, _content_type(photo), _file_name(photo))


def photo_thumbnail_response(request: HttpRequest, photo: Photo) -> HttpResponseBase:
    if not photo.thumbnail:
        return HttpResponse(status=404)
    return _file_response(request, photo.thumbnail, photo.thumbnail_version, "image/jpeg")


def _file_response(
    request: HttpRequest, stored: FieldFile, version: str, content_type: str, filename: str | None = None
) -> HttpResponseBase:
    etag = f'"{version}"'
    response: HttpResponseBase
    if etag in request.headers.get("If-None-Match", ""):
        response = HttpResponseNotModified()
    else:
        response = FileResponse(stored.open("rb"), content_type=content_type, filename=filename or "")
    response["ETag"] = etag
    if request.GET.get("v") == version:
        patch_cache_control(response, private=True, max_age=A_YEAR, immutable=True)
    else:
        patch_cache_control(response, private=True, no_cache=True)
    return response


def photo_download_response(photo: Photo) -> HttpResponseBase:
    """The anonymized image as an attachment; with its recovery envelope embedded when the
    album's owner chose so (the stored file never has one: it lives in the database)."""
    if not photo.image:
        return HttpResponse(status=404)
    with photo.image.open("rb") as f:
        data = f.read()
    if photo.album.downloads_include_envelope and photo.envelope:
        data = carriers.embed(data, bytes(photo.envelope))
    response = HttpResponse(data, content_type=_content_type(photo))
    response["Content-Disposition"] = f'attachment; filename="{_file_name(photo)}"'
    return response
