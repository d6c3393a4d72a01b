"""Finding what the logged-in owner asks for: another user's album or photo is a 404, never a
403, so its existence is not revealed."""

from __future__ import annotations

import uuid

from django.contrib.auth.models import User
from django.http import HttpRequest
from django.shortcuts import get_object_or_404

from .models import Album, Photo


class AuthedRequest(HttpRequest):
    """A request behind @login_required: its user is a real account."""

    user: User


def owned_album(request: AuthedRequest, album_id: uuid.UUID) -> Album:
    return get_object_or_404(Album.objects.owned_by(request.user.pk), pk=album_id)


def owned_photo(request: AuthedRequest, photo_id: uuid.UUID, *, envelope: bool = True) -> Photo:
    """The photo and its album; with ``envelope`` False only what serving its files reads (not its
    recovery envelope, often hundreds of KB)."""
    photos = Photo.objects.owned_by(request.user.pk)
    return get_object_or_404(photos.select_related("album") if envelope else photos.for_files(), pk=photo_id)
