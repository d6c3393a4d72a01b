"""Album pages, uploads and the owner-only photo files.

Every lookup goes through :mod:`webapp.albums.access`: another user's album or photo is a 404.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Count, Q
from django.http import HttpResponse, HttpResponseBase, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import cache_control
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_GET, require_POST

from webapp import workers
from webapp.keywork import spends
from webapp.texts import NO_WORKER_YET

from . import quotas
from .access import AuthedRequest, owned_album, owned_photo
from .forms import AlbumDeleteForm, AlbumForm, AlbumNameForm
from .lost import sweep
from .models import Album, Photo
from .photofiles import photo_download_response, photo_image_response, photo_thumbnail_response
from .removal import StillWorking, delete_album, delete_photo
from .uploads import UploadRefused, accept_uploads, check_request_size, retry_photo


def _wants_json(request: AuthedRequest) -> bool:
    return "application/json" in request.headers.get("Accept", "")


@login_required
@require_GET
def album_list(request: AuthedRequest) -> HttpResponse:
    albums = Album.objects.owned_by(request.user.pk).annotate(
        photo_count=Count("photos"),
        done_count=Count("photos", filter=Q(photos__status=Photo.Status.DONE)),
    )
    return render(request, "albums/album_list.html", {"albums": albums})


@login_required
@spends("key-work")
@sensitive_post_parameters("passphrase", "passphrase_again")
def album_create(request: AuthedRequest) -> HttpResponse:
    form = AlbumForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        album = Album.objects.create_with_passphrase(
            owner=request.user, name=form.cleaned_data["name"], passphrase=form.cleaned_data["passphrase"]
        )
        messages.success(request, f"Album “{album.name}” is ready. Keep its passphrase safe.")
        return redirect(album)
    return render(request, "albums/album_form.html", {"form": form})


@login_required
@require_GET
def album_detail(request: AuthedRequest, album_id: uuid.UUID) -> HttpResponse:
    return _album_page(request, owned_album(request, album_id))


def _album_page(request: AuthedRequest, album: Album, status: int = 200) -> HttpResponse:
    sweep(album.photos.all())
    context = {
        "album": album,
        "photos": album.photos.defer("envelope"),  # a tile needs none of its recovery data
        "max_upload_mb": settings.VEIL_MAX_UPLOAD_MB,
        "usage": quotas.usage(request.user.pk),
        # photos waiting while no worker runs: say so rather than let "Queued" look stuck
        "no_worker": album.photos.filter(status__in=Photo.IN_PROGRESS).exists() and not workers.alive_count(),
        "no_worker_text": NO_WORKER_YET,
    }
    response = render(request, "albums/album_detail.html", context)
    response.status_code = status
    return response


def _album_settings_page(
    request: AuthedRequest,
    album: Album,
    *,
    name_form: AlbumNameForm | None = None,
    delete_form: AlbumDeleteForm | None = None,
    status: int = 200,
) -> HttpResponse:
    context = {
        "album": album,
        "name_form": name_form or AlbumNameForm(initial={"name": album.name}),
        "delete_form": delete_form or AlbumDeleteForm(),
        "photo_count": album.photos.count(),
        "recipient_count": album.key_slots.exclude(kind="owner").count(),
    }
    response = render(request, "albums/album_settings.html", context)
    response.status_code = status
    return response


@login_required
def album_settings(request: AuthedRequest, album_id: uuid.UUID) -> HttpResponse:
    """Rename the album (POST) or see how to delete it."""
    album = owned_album(request, album_id)
    if request.method != "POST":
        return _album_settings_page(request, album)
    form = AlbumNameForm(request.POST)
    if not form.is_valid():
        return _album_settings_page(request, album, name_form=form, status=400)
    album.name = form.cleaned_data["name"]
    album.save(update_fields=["name"])
    messages.success(request, f"The album is now called “{album.name}”.")
    return redirect(album)


@login_required
@require_POST
def album_delete(request: AuthedRequest, album_id: uuid.UUID) -> HttpResponse:
    album = owned_album(request, album_id)
    form = AlbumDeleteForm(request.POST)
    if not form.is_valid():
        return _album_settings_page(request, album, delete_form=form, status=400)
    count = delete_album(album)
    messages.success(request, f"“{album.name}” and its {count} photo{'s' if count != 1 else ''} are deleted.")
    return redirect("albums:list")


@login_required
@require_POST
def upload_photos(request: AuthedRequest, album_id: uuid.UUID) -> HttpResponse:
    """Queue the posted ``photos`` (one per request from the page's script; several without it)."""
    album = owned_album(request, album_id)
    try:
        check_request_size(int(request.META.get("CONTENT_LENGTH") or 0))
        photos = accept_uploads(album, request.FILES.getlist("photos"))
    except UploadRefused as exc:
        return _upload_error(request, album, exc.message, exc.status)
    if _wants_json(request):
        return JsonResponse({"photos": [p.live_status()["data"] for p in photos]}, status=201)
    count = len(photos)
    messages.success(request, f"{count} photo{'s' if count != 1 else ''} queued for anonymization.")
    return redirect(album)


def _upload_error(request: AuthedRequest, album: Album, text: str, status: int) -> HttpResponse:
    if _wants_json(request):
        return JsonResponse({"error": text}, status=status)
    messages.error(request, text)
    return _album_page(request, album, status)


@login_required
@require_GET
def photo_statuses(request: AuthedRequest, album_id: uuid.UUID) -> JsonResponse:
    """The live status of the album's photos (``?ids=a,b`` for some): what a page that missed
    websocket messages while reconnecting asks for."""
    album = owned_album(request, album_id)
    sweep(album.photos.all())
    photos = album.photos.all()
    ids = [part for part in request.GET.get("ids", "").split(",") if part]
    if ids:
        try:
            photos = photos.filter(pk__in=[uuid.UUID(i) for i in ids[:500]])
        except ValueError:
            return JsonResponse({"error": "ids must be photo ids"}, status=400)
    return JsonResponse({"photos": [p.live_status()["data"] for p in photos]})


@login_required
@require_POST
def photo_retry(request: AuthedRequest, photo_id: uuid.UUID) -> HttpResponse:
    photo = owned_photo(request, photo_id)
    if retry_photo(photo):
        return JsonResponse({"photo": photo.live_status()["data"]}) if _wants_json(request) else redirect(photo.album)
    text = "This photo can no longer be retried; please upload it again."
    if _wants_json(request):
        return JsonResponse({"error": text}, status=409)
    messages.error(request, text)
    return redirect(photo.album)


@login_required
@require_POST
def photo_delete(request: AuthedRequest, photo_id: uuid.UUID) -> HttpResponse:
    photo = owned_photo(request, photo_id)
    try:
        delete_photo(photo)
    except StillWorking as exc:
        if _wants_json(request):
            return JsonResponse({"error": str(exc)}, status=409)
        messages.error(request, str(exc))
        return redirect(photo.album)
    if _wants_json(request):
        return JsonResponse({"deleted": str(photo_id)})
    messages.success(request, "Photo deleted.")
    return redirect(photo.album)


@login_required
@require_GET
def photo_image(request: AuthedRequest, photo_id: uuid.UUID) -> HttpResponseBase:
    return photo_image_response(request, owned_photo(request, photo_id, envelope=False))


@login_required
@require_GET
def photo_thumbnail(request: AuthedRequest, photo_id: uuid.UUID) -> HttpResponseBase:
    return photo_thumbnail_response(request, owned_photo(request, photo_id, envelope=False))


@login_required
@require_GET
@cache_control(private=True, no_cache=True)
def photo_download(request: AuthedRequest, photo_id: uuid.UUID) -> HttpResponseBase:
    return photo_download_response(owned_photo(request, photo_id))
