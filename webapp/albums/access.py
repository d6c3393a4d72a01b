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
    """The photo; without its recovery envelope (often hundreds of KB) when ``envelope`` is False."""
    photos = Photo.objects.owned_by(request.user.pk).select_related("album")
    return get_object_or_404(photos if envelope else photos.defer("envelope"), pk=photo_id)
