"""The owner's sharing page (recipients, share link, album settings, unlock log, key rotation)
and the public share page with its token-checked photo files.

Owner pages look albums up through ``owned_by(user)`` (another user's album is a 404). Share
pages look them up by share token only: a rotated token is a 404 for the page and every file.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import cache_control, never_cache
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_GET, require_POST

from webapp.addresses import request_address
from webapp.albums.access import AuthedRequest, owned_album
from webapp.albums.models import Album, AlbumKeySlot, Photo
from webapp.albums.photofiles import photo_download_response, photo_image_response, photo_thumbnail_response
from webapp.keywork import spends

from .forms import AlbumSettingsForm, ExpiryForm, RecipientForm, RotateKeyForm, end_of_day
from .models import UnlockAttempt
from .recipients import SharingError, TooManyTries, revoke_recipient, rotate_album_key, stranded_recipients

ATTEMPTS_SHOWN = 50
FAILED_WINDOW = timedelta(days=30)


def _sharing_page(request: AuthedRequest, album: Album, status: int = 200, **forms: Any) -> HttpResponse:
    since = timezone.now() - FAILED_WINDOW
    attempts = album.unlock_attempts.all()
    context = {
        "album": album,
        "slots": album.key_slots.all(),
        "now": timezone.now(),
        "share_link": request.build_absolute_uri(album.share_url()),
        "recipient_form": forms.get("recipient_form") or RecipientForm(album=album, client=request_address(request)),
        "settings_form": forms.get("settings_form") or AlbumSettingsForm(instance=album),
        "rotate_form": forms.get("rotate_form") or RotateKeyForm(stranded=stranded_recipients(album)),
        "expiry_form": ExpiryForm(),
        "attempts": attempts[:ATTEMPTS_SHOWN],
        "failed_recently": attempts.filter(created_at__gte=since, outcome__in=UnlockAttempt.FAILURES).count(),
        "busy_photos": album.photos.filter(status__in=Photo.IN_PROGRESS).count(),
    }
    response = render(request, "sharing/album_sharing.html", context)
    response.status_code = status
    return response


@login_required
@require_GET
def album_sharing(request: AuthedRequest, album_id: uuid.UUID) -> HttpResponse:
    return _sharing_page(request, owned_album(request, album_id))


@login_required
@require_POST
@spends("key-work")
@never_cache  # the answer may show a generated password, once
@sensitive_post_parameters("password", "owner_passphrase")
def recipient_add(request: AuthedRequest, album_id: uuid.UUID) -> HttpResponse:
    album = owned_album(request, album_id)
    form = RecipientForm(request.POST, album=album, client=request_address(request))
    if not form.is_valid():
        return _sharing_page(request, album, status=400, recipient_form=form)
    added = form.add_recipient()
    if added is None:
        return _sharing_page(request, album, status=429 if form.too_many_tries else 400, recipient_form=form)
    slot, password = added
    if password is not None:
        link = request.build_absolute_uri(album.share_url())
        context = {"album": album, "slot": slot, "password": password, "share_link": link}
        return render(request, "sharing/recipient_added.html", context)
    messages.success(request, f"{slot.label} can now unlock this album with the password you chose.")
    return redirect("sharing:album", album.pk)


@login_required
@require_POST
def recipient_revoke(request: AuthedRequest, album_id: uuid.UUID, slot_id: int) -> HttpResponse:
    album = owned_album(request, album_id)
    slot = get_object_or_404(album.key_slots, pk=slot_id)
    try:
        revoke_recipient(slot)
    except SharingError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(
            request,
            f"{slot.label} can no longer unlock this album. Photos they already saw may have been kept; "
            "rotating the album key below also retires every old copy of the key.",
        )
    return redirect("sharing:album", album.pk)


@login_required
@require_POST
def recipient_expiry(request: AuthedRequest, album_id: uuid.UUID, slot_id: int) -> HttpResponse:
    album = owned_album(request, album_id)
    slot = get_object_or_404(album.key_slots.filter(kind=AlbumKeySlot.Kind.RECIPIENT), pk=slot_id)
    form = ExpiryForm(request.POST)
    if not form.is_valid():
        messages.error(request, " ".join(str(e) for e in form.errors.get("expires_on", [])))
        return redirect("sharing:album", album.pk)
    day = form.cleaned_data.get("expires_on")
    slot.expires_at = end_of_day(day) if day else None
    slot.save(update_fields=["expires_at"])
    when = f"until {day:%-d %B %Y}" if day else "until you remove them"
    messages.success(request, f"{slot.label} can unlock this album {when}.")
    return redirect("sharing:album", album.pk)


@login_required
@require_POST
def share_link_rotate(request: AuthedRequest, album_id: uuid.UUID) -> HttpResponse:
    album = owned_album(request, album_id)
    album.rotate_share_token()
    messages.success(request, "The album has a new share link; the old one no longer works.")
    return redirect("sharing:album", album.pk)


@login_required
@require_POST
def album_settings(request: AuthedRequest, album_id: uuid.UUID) -> HttpResponse:
    album = owned_album(request, album_id)
    form = AlbumSettingsForm(request.POST, instance=album)
    if not form.is_valid():
        return _sharing_page(request, album, status=400, settings_form=form)
    form.save()
    messages.success(request, "Sharing settings saved.")
    return redirect("sharing:album", album.pk)


@login_required
@require_POST
@spends("key-work")
@sensitive_post_parameters("owner_passphrase")
def album_key_rotate(request: AuthedRequest, album_id: uuid.UUID) -> HttpResponse:
    album = owned_album(request, album_id)
    form = RotateKeyForm(request.POST, stranded=stranded_recipients(album))
    if not form.is_valid():
        return _sharing_page(request, album, status=400, rotate_form=form)
    try:
        rotation = rotate_album_key(album, form.cleaned_data["owner_passphrase"], request_address(request))
    except SharingError as exc:
        about_passphrase = "passphrase" in str(exc) or isinstance(exc, TooManyTries)
        form.add_error("owner_passphrase" if about_passphrase else None, str(exc))
        return _sharing_page(request, album, status=429 if isinstance(exc, TooManyTries) else 400, rotate_form=form)
    text = f"The album has a new key; {rotation.photos} photo{'s' if rotation.photos != 1 else ''} now open with it."
    if rotation.kept_recipients:
        text += f" Everyone on the list keeps access with their own password ({', '.join(rotation.kept_recipients)})."
    if rotation.removed_recipients:
        text += f" Add {', '.join(rotation.removed_recipients)} again to let them unlock it."
    messages.success(request, text)
    return redirect("sharing:album", album.pk)


# --- the public share page ----------------------------------------------------------------


def _shared_album(token: str) -> Album:
    return get_object_or_404(Album, share_token=token)


def _shared_photo(token: str, photo_id: uuid.UUID, *, envelope: bool = True) -> Photo:
    """The shared photo and its album; with ``envelope`` False only what serving its files reads."""
    photos = Photo.objects.filter(album__share_token=token, status=Photo.Status.DONE)
    return get_object_or_404(photos.select_related("album") if envelope else photos.for_files(), pk=photo_id)


def _private_page(response: HttpResponse) -> HttpResponse:
    # The token is in the address: keep it out of referrers and search engines.
    response["Referrer-Policy"] = "no-referrer"
    response["X-Robots-Tag"] = "noindex, nofollow"
    return response


@require_GET
@cache_control(private=True, no_cache=True)
def share_album(request: HttpRequest, token: str) -> HttpResponse:
    album = _shared_album(token)
    photos = album.photos.filter(status=Photo.Status.DONE).defer("envelope")  # none of their recovery data
    return _private_page(render(request, "sharing/share_album.html", {"album": album, "photos": _tiles(album, photos)}))


@dataclass(frozen=True)
class ShareTile:
    id: uuid.UUID
    image: str
    thumbnail: str
    download: str


_SOME_PHOTO = uuid.UUID(int=0)


def _tiles(album: Album, photos: Iterable[Photo]) -> list[ShareTile]:
    """Each photo's addresses, from one reversal per kind (a hundred tiles cost 300 otherwise)."""
    token = album.share_token

    def address(name: str) -> Callable[[uuid.UUID], str]:
        pattern = reverse(name, args=[token, _SOME_PHOTO])
        return lambda photo_id: pattern.replace(str(_SOME_PHOTO), str(photo_id))

    image, thumbnail, download = (address(f"sharing:share-{kind}") for kind in ("image", "thumbnail", "download"))
    return [
        ShareTile(
            p.pk,
            f"{image(p.pk)}?v={p.image_version}",
            f"{thumbnail(p.pk)}?v={p.thumbnail_version}",
            download(p.pk),
        )
        for p in photos
    ]


@require_GET
def share_photo_image(request: HttpRequest, token: str, photo_id: uuid.UUID) -> HttpResponseBase:
    return photo_image_response(request, _shared_photo(token, photo_id, envelope=False))


@require_GET
def share_photo_thumbnail(request: HttpRequest, token: str, photo_id: uuid.UUID) -> HttpResponseBase:
    return photo_thumbnail_response(request, _shared_photo(token, photo_id, envelope=False))


@require_GET
@cache_control(private=True, no_cache=True)
def share_photo_download(request: HttpRequest, token: str, photo_id: uuid.UUID) -> HttpResponseBase:
    return photo_download_response(_shared_photo(token, photo_id))
