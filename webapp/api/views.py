"""The REST API: albums, their recipients, photo uploads and their status, and the anonymized files.

Everything reuses the web app's own paths: albums are made by
``Album.objects.create_with_passphrase`` (key pair + owner slot), uploads go through
``albums.uploads.accept_uploads`` (memory only, sealed to the transit store, task queued) and
files are served by the album views' response helpers. As on the pages, another user's album
or photo is a 404.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any, TypeVar, cast

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import get_object_or_404, render
from django.utils.cache import patch_cache_control
from django.utils.decorators import method_decorator
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_variables
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.authtoken.models import Token
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.decorators import action
from rest_framework.exceptions import APIException, Throttled, ValidationError
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView

from cipher_worker.turns import Busy
from webapp import keywork, texts
from webapp.addresses import request_address
from webapp.albums.lost import sweep
from webapp.albums.models import Album, AlbumKeySlot, Photo
from webapp.albums.photofiles import photo_download_response, photo_image_response, photo_thumbnail_response
from webapp.albums.removal import StillWorking, delete_album, delete_photo
from webapp.albums.uploads import UploadRefused, accept_uploads, check_request_size, retry_photo
from webapp.sharing.forms import RecipientForm
from webapp.sharing.recipients import revoke_recipient

from .authentication import expires_at
from .serializers import (
    AlbumCreateSerializer,
    AlbumRenameSerializer,
    AlbumSerializer,
    PhotoSerializer,
    PhotoUploadSerializer,
    RecipientCreatedSerializer,
    RecipientCreateSerializer,
    RecipientSerializer,
)


class Refused(APIException):
    """An upload refused for a reason the client can act on, with the web page's wording."""

    def __init__(self, refusal: UploadRefused) -> None:
        super().__init__(detail=refusal.message)
        self.status_code = refusal.status


class AnyFileRenderer(BaseRenderer):
    """Lets a download answer any ``Accept`` (an ``<img>`` asks for image/*); errors stay JSON."""

    media_type = "*/*"
    format = "image"
    charset = None

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        return data if isinstance(data, bytes) else json.dumps(data).encode()


FILE_RENDERERS = [JSONRenderer, AnyFileRenderer]
IMAGE_RESPONSES = {(200, "image/*"): OpenApiTypes.BINARY, 404: OpenApiResponse(description="Not found")}
NO_FORMAT = [OpenApiParameter("format", exclude=True)]  # AnyFileRenderer's format is no real choice


class UploadAwareSchema(AutoSchema):
    """The photos action lists (GET, paginated) and uploads (POST, a plain list) on one URL."""

    def _get_paginator(self) -> Any:
        return super()._get_paginator() if self.method == "GET" else None


class Unavailable(APIException):
    status_code = 503
    default_detail = texts.TEMPORARILY_UNAVAILABLE


Action = TypeVar("Action", bound=Callable[..., Response])


def spends_key_work(action: Action) -> Action:
    """An action whose POSTs spend the account's and address's Argon2 work and take fair turns
    at it (webapp.keywork.key_work), as the pages do: 429 over the allowance or when busy."""

    @functools.wraps(action)
    def guarded(view: Any, request: Request, *args: Any, **kwargs: Any) -> Response:
        if request.method != "POST":
            return action(view, request, *args, **kwargs)
        try:
            with keywork.key_work(request._request):
                return action(view, request, *args, **kwargs)
        except keywork.TooMuchWork as exc:
            raise (Unavailable() if exc.unavailable else Throttled(detail=str(exc))) from None
        except Busy:
            raise Throttled(detail=texts.BUSY) from None

    return cast(Action, guarded)


def owned_albums(request: Request) -> QuerySet[Album]:
    return (
        Album.objects.owned_by(request.user.pk)
        .annotate(
            photo_count=Count("photos"),
            done_count=Count("photos", filter=Q(photos__status=Photo.Status.DONE)),
        )
        .order_by("-created_at")  # an aggregate drops Meta.ordering, and pages need an order
    )


@extend_schema(tags=["albums"])
@extend_schema_view(
    list=extend_schema(summary="Your albums, newest first"),
    retrieve=extend_schema(summary="One of your albums"),
)
class AlbumViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Your albums. Creating one makes its key pair; its passphrase is the only way back to the real faces."""

    serializer_class = AlbumSerializer
    schema = UploadAwareSchema()

    def get_queryset(self) -> QuerySet[Album]:
        return owned_albums(self.request)

    def get_serializer_class(self) -> type[BaseSerializer]:
        if self.action == "create":
            return AlbumCreateSerializer
        if self.action == "partial_update":
            return AlbumRenameSerializer
        if self.action == "photos":
            return PhotoSerializer
        return AlbumSerializer

    @extend_schema(
        summary="Make an album",
        description="Makes the album's key pair; the passphrase wraps its private key (the owner's key slot).",
        request=AlbumCreateSerializer,
        responses={201: AlbumSerializer, 429: OpenApiResponse(description="Too many albums made in a short while")},
    )
    @method_decorator(sensitive_variables("passphrase"))
    @spends_key_work
    def create(self, request: Request) -> Response:
        form = AlbumCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        passphrase = form.validated_data["passphrase"]
        album = Album.objects.create_with_passphrase(
            owner=request.user, name=form.validated_data["name"], passphrase=passphrase
        )
        data = AlbumSerializer(self.get_queryset().get(pk=album.pk), context=self.get_serializer_context()).data
        return Response(data, status=status.HTTP_201_CREATED)

    @extend_schema(summary="Rename an album", request=AlbumRenameSerializer, responses={200: AlbumSerializer})
    def partial_update(self, request: Request, pk: str | None = None) -> Response:
        album = self.get_object()
        form = AlbumRenameSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        album.name = form.validated_data["name"]
        album.save(update_fields=["name"])
        return Response(
            AlbumSerializer(self.get_queryset().get(pk=album.pk), context=self.get_serializer_context()).data
        )

    @extend_schema(
        summary="Delete an album for good",
        description="Its photos, recovery data, key slots, share link and unlock log; nothing brings it back.",
        responses={204: None},
    )
    def destroy(self, request: Request, pk: str | None = None) -> Response:
        delete_album(self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        methods=["GET"],
        summary="The album's photos, newest first",
        parameters=[
            OpenApiParameter(
                "status", str, enum=[s.value for s in Photo.Status], description="Only photos in this state"
            )
        ],
        responses=PhotoSerializer(many=True),
    )
    @extend_schema(
        methods=["POST"],
        summary="Upload photos (multipart, one or more `photos` parts)",
        description="Each photo is queued for anonymization; poll its `url` until `status` is done or failed.",
        request={"multipart/form-data": PhotoUploadSerializer},
        responses={
            201: PhotoSerializer(many=True),
            400: OpenApiResponse(description="No photo in the request"),
            413: OpenApiResponse(description="A photo is larger than the limit"),
            503: OpenApiResponse(description="The photo queue is unreachable; try again later"),
        },
    )
    @action(detail=True, methods=["get", "post"], parser_classes=[MultiPartParser, FormParser])
    def photos(self, request: Request, pk: str | None = None) -> Response:
        album = self.get_object()
        if request.method == "POST":
            return self._upload(request, album)
        sweep(album.photos.all())
        photos = album.photos.all()
        wanted = request.query_params.get("status")
        if wanted:
            photos = photos.filter(status=wanted)
        page = self.paginate_queryset(photos)
        serializer = PhotoSerializer(page, many=True, context=self.get_serializer_context())
        return self.get_paginated_response(serializer.data)

    @extend_schema(methods=["GET"], summary="Who can unlock the album", responses=RecipientSerializer(many=True))
    @extend_schema(
        methods=["POST"],
        summary="Add a family member",
        description="Needs the album passphrase. Without `password`, Veil makes one and returns it this once.",
        request=RecipientCreateSerializer,
        responses={
            201: RecipientCreatedSerializer,
            400: OpenApiResponse(description="What to correct"),
            429: OpenApiResponse(
                description="Too many passphrase tries, or too many recipients added in a short while"
            ),
        },
    )
    @method_decorator(sensitive_variables("password", "owner_passphrase"))
    @action(detail=True, methods=["get", "post"], parser_classes=[JSONParser, FormParser, MultiPartParser])
    @spends_key_work
    def recipients(self, request: Request, pk: str | None = None) -> Response:
        album = self.get_object()
        if request.method == "GET":
            slots = album.key_slots.filter(kind=AlbumKeySlot.Kind.RECIPIENT)
            return Response(RecipientSerializer(slots, many=True).data)
        # the Sharing page's form validates, so both say the same things
        data = {k: v for k, v in request.data.items() if k in RecipientCreateSerializer().fields}
        data["password_choice"] = RecipientForm.CHOOSE if data.get("password") else RecipientForm.GENERATE
        form = RecipientForm(data, album=album, client=request_address(request))
        if not form.is_valid():
            return Response({k: [str(e) for e in v] for k, v in form.errors.items()}, status=400)
        added = form.add_recipient()
        if added is None:
            errors = {k: [str(e) for e in v] for k, v in form.errors.items()}
            return Response(errors, status=429 if form.too_many_tries else 400)
        slot, password = added
        answer = dict(RecipientSerializer(slot).data)
        if password is not None:
            answer["password"] = password
        response = Response(answer, status=status.HTTP_201_CREATED)
        patch_cache_control(response, no_store=True)
        return response

    @extend_schema(summary="Remove a family member: their password opens nothing from now on", responses={204: None})
    @action(detail=True, methods=["delete"], url_path=r"recipients/(?P<slot_id>\d+)")
    def remove_recipient(self, request: Request, pk: str | None = None, slot_id: str | None = None) -> Response:
        slot = get_object_or_404(self.get_object().key_slots, pk=slot_id, kind=AlbumKeySlot.Kind.RECIPIENT)
        revoke_recipient(slot)
        return Response(status=status.HTTP_204_NO_CONTENT)

    def _upload(self, request: Request, album: Album) -> Response:
        try:
            # the size check comes before request.FILES makes Django parse the body
            check_request_size(int(request.META.get("CONTENT_LENGTH") or 0))
            photos = accept_uploads(album, request.FILES.getlist("photos"))
        except UploadRefused as exc:
            raise Refused(exc) from exc
        data = PhotoSerializer(photos, many=True, context=self.get_serializer_context()).data
        return Response(data, status=status.HTTP_201_CREATED)


@extend_schema(tags=["photos"])
@extend_schema_view(retrieve=extend_schema(summary="A photo's status"))
class PhotoViewSet(mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """One photo: its status while it is processed, then its anonymized files."""

    serializer_class = PhotoSerializer

    def get_queryset(self) -> QuerySet[Photo]:
        return Photo.objects.owned_by(self.request.user.pk).select_related("album")

    @extend_schema(summary="The anonymized photo, inline", parameters=NO_FORMAT, responses=IMAGE_RESPONSES)
    @action(detail=True, methods=["get"], renderer_classes=FILE_RENDERERS)
    def image(self, request: Request, pk: str | None = None) -> HttpResponseBase:
        return photo_image_response(request, self.get_object())

    @extend_schema(summary="The photo's thumbnail (JPEG, 400 px)", parameters=NO_FORMAT, responses=IMAGE_RESPONSES)
    @action(detail=True, methods=["get"], renderer_classes=FILE_RENDERERS)
    def thumbnail(self, request: Request, pk: str | None = None) -> HttpResponseBase:
        return photo_thumbnail_response(request, self.get_object())

    @extend_schema(
        summary="Download the anonymized photo",
        description="An attachment; it embeds the recovery envelope when the album's owner chose so.",
        parameters=NO_FORMAT,
        responses=IMAGE_RESPONSES,
    )
    @action(detail=True, methods=["get"], renderer_classes=FILE_RENDERERS)
    def download(self, request: Request, pk: str | None = None) -> HttpResponseBase:
        response = photo_download_response(self.get_object())
        patch_cache_control(response, private=True, no_cache=True)
        return response

    @extend_schema(
        summary="Delete a photo for good (or dismiss a failed upload)",
        responses={204: None, 409: OpenApiResponse(description="A worker is still on it")},
    )
    def destroy(self, request: Request, pk: str | None = None) -> Response:
        try:
            delete_photo(self.get_object())
        except StillWorking as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        summary="Queue a failed photo again",
        request=None,
        responses={200: PhotoSerializer, 409: OpenApiResponse(description="The photo can no longer be retried")},
    )
    @action(detail=True, methods=["post"])
    def retry(self, request: Request, pk: str | None = None) -> Response:
        photo = self.get_object()
        if not retry_photo(photo):
            return Response(
                {"detail": "This photo can no longer be retried; please upload it again."},
                status=status.HTTP_409_CONFLICT,
            )
        return Response(self.get_serializer(photo).data)


# --- API tokens: by password (scripts) and on the token page (browsers) --------------------


class TokenRequestThrottle(SimpleRateThrottle):
    """Requests to the token endpoint per client address, right or wrong (VEIL_TOKEN_RATE): one
    address trying many usernames is slowed, which axes' per-(username, address) count is not."""

    scope = "token"

    def get_rate(self) -> str:
        return settings.VEIL_TOKEN_RATE

    def get_cache_key(self, request: Request, view: APIView) -> str:
        # the address as every other limit counts it (an IPv6 client by its /64), not DRF's own
        return self.cache_format % {"scope": self.scope, "ident": request_address(request._request)}


class LockedOut(Throttled):
    default_detail = "Too many wrong passwords for this username from your address."


@extend_schema(
    tags=["auth"],
    summary="A new API token for a username and password",
    description="Each answer is a new token: the one before stops working. Wrong passwords count "
    "towards a lockout of that username from your address; requests are also limited per address.",
    request=AuthTokenSerializer,
    responses={
        200: inline_serializer("NewToken", {"token": serializers.CharField()}),
        400: OpenApiResponse(description="Wrong username or password"),
        429: OpenApiResponse(description="Locked out or throttled; see Retry-After"),
    },
)
class RotatingAuthToken(ObtainAuthToken):
    """DRF's obtain_auth_token, but never hands back a token issued before: it replaces it."""

    throttle_classes = (TokenRequestThrottle,)

    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(data=request.data)
        try:
            # authenticate(request=...) goes through axes, which marks this (DRF) request
            serializer.is_valid(raise_exception=True)
        except ValidationError:
            if getattr(request, "axes_locked_out", False):
                raise LockedOut(wait=settings.VEIL_LOGIN_COOLOFF_MINUTES * 60) from None
            raise
        user = serializer.validated_data["user"]
        with transaction.atomic():
            Token.objects.filter(user=user).delete()
            token = Token.objects.create(user=user)
        response = Response({"token": token.key})
        patch_cache_control(response, no_store=True)
        return response


# --- the API token page --------------------------------------------------------------------


@login_required
@never_cache
def api_token(request: HttpRequest) -> HttpResponse:
    """Make, replace or revoke the signed-in user's API token; a new key is shown once."""
    token = Token.objects.filter(user=request.user).first()
    new_key = None
    if request.method == "POST":
        if token is not None:
            token.delete()
            token = None
        if request.POST.get("action") != "revoke":
            token = Token.objects.create(user=request.user)
            new_key = token.key
    context = {"token": token, "new_key": new_key, "token_expires": expires_at(token) if token else None}
    return render(request, "api/token.html", context)
