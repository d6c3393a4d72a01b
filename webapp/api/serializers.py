from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from webapp.albums.forms import MAX_PASSPHRASE, MIN_PASSPHRASE, check_passphrase
from webapp.albums.models import Album, Photo


def _absolute(context: dict[str, Any], path: str) -> str:
    request = context.get("request")
    return request.build_absolute_uri(path) if request is not None else path


class AlbumSerializer(serializers.ModelSerializer):
    """An album as its owner sees it (list views annotate the photo counts in the same query)."""

    url = serializers.HyperlinkedIdentityField(view_name="api:album-detail")
    photos_url = serializers.SerializerMethodField()
    fingerprint = serializers.CharField(read_only=True, help_text="Fingerprint of the album's public key.")
    photo_count = serializers.IntegerField(read_only=True)
    done_count = serializers.IntegerField(read_only=True, help_text="Photos anonymized and stored.")

    class Meta:
        model = Album
        fields = ("id", "url", "name", "created_at", "fingerprint", "photo_count", "done_count", "photos_url")
        read_only_fields = fields

    def get_photos_url(self, album: Album) -> str:
        return _absolute(self.context, reverse("api:album-photos", args=[album.pk]))


class AlbumRenameSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=120, help_text="The album's new name.")

    def validate_name(self, value: str) -> str:
        name = " ".join(value.split())
        if not name:
            raise serializers.ValidationError("Give the album a name.")
        return name


class AlbumCreateSerializer(serializers.Serializer):
    """What the new-album form asks for: the album passphrase wraps the album's private key."""

    name = serializers.CharField(max_length=120)
    passphrase = serializers.CharField(
        write_only=True,
        min_length=MIN_PASSPHRASE,
        trim_whitespace=False,
        style={"input_type": "password"},
        max_length=MAX_PASSPHRASE,
        help_text="Unlocks the real faces of this album. Veil never stores it and cannot reset it.",
    )

    def validate_passphrase(self, value: str) -> str:
        try:
            return check_passphrase(value)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(list(exc.messages)) from None


class PhotoSerializer(serializers.ModelSerializer):
    """A photo's processing state; the file URLs need the same authentication as the API."""

    url = serializers.HyperlinkedIdentityField(view_name="api:photo-detail")
    album = serializers.PrimaryKeyRelatedField(read_only=True)
    message = serializers.CharField(source="status_message", read_only=True, help_text="What the album page shows.")
    image_url = serializers.SerializerMethodField(help_text="The anonymized photo, once done.")
    thumbnail_url = serializers.SerializerMethodField()
    download_url = serializers.SerializerMethodField(help_text="The anonymized photo as an attachment.")

    class Meta:
        model = Photo
        fields = (
            "id",
            "url",
            "album",
            "file_name",
            "status",
            "progress",
            "message",
            "failure_reason",
            "retryable",
            "faces",
            "format",
            "width",
            "height",
            "created_at",
            "updated_at",
            "image_url",
            "thumbnail_url",
            "download_url",
        )
        read_only_fields = fields

    def to_representation(self, instance: Photo) -> dict[str, Any]:
        data = super().to_representation(instance)
        if instance.status == Photo.Status.DONE:
            data["progress"] = 1.0
        return data

    def _file_url(self, photo: Photo, present: bool, view_name: str) -> str | None:
        return _absolute(self.context, reverse(view_name, args=[photo.pk])) if present else None

    @extend_schema_field(serializers.URLField(allow_null=True))
    def get_image_url(self, photo: Photo) -> str | None:
        url = self._file_url(photo, bool(photo.image), "api:photo-image")
        return url and f"{url}?v={photo.image_version}"

    @extend_schema_field(serializers.URLField(allow_null=True))
    def get_thumbnail_url(self, photo: Photo) -> str | None:
        url = self._file_url(photo, bool(photo.thumbnail), "api:photo-thumbnail")
        return url and f"{url}?v={photo.thumbnail_version}"

    @extend_schema_field(serializers.URLField(allow_null=True))
    def get_download_url(self, photo: Photo) -> str | None:
        return self._file_url(photo, bool(photo.image), "api:photo-download")


class PhotoUploadSerializer(serializers.Serializer):
    """The multipart form of an upload (documentation only: the upload path checks the files)."""

    photos = serializers.ListField(
        child=serializers.FileField(), help_text="One or more photos (JPEG, PNG, WebP, …), each in a `photos` part."
    )


class RecipientSerializer(serializers.Serializer):
    """A family member who can unlock the album's real faces with their own password."""

    id = serializers.IntegerField(read_only=True)
    name = serializers.CharField(source="label", read_only=True)
    created_at = serializers.DateTimeField(read_only=True)
    expires_at = serializers.DateTimeField(read_only=True, allow_null=True)
    last_unlocked_at = serializers.DateTimeField(read_only=True, allow_null=True)


class RecipientCreateSerializer(serializers.Serializer):
    """As the Sharing page's form: without ``password`` Veil makes one and returns it, once."""

    name = serializers.CharField(max_length=120)
    password = serializers.CharField(required=False, write_only=True, trim_whitespace=False)
    expires_on = serializers.DateField(required=False, help_text="Access until the end of this day.")
    owner_passphrase = serializers.CharField(
        write_only=True, trim_whitespace=False, help_text="The album passphrase: it opens the key the new slot wraps."
    )


class RecipientCreatedSerializer(RecipientSerializer):
    password = serializers.CharField(
        read_only=True, required=False, help_text="Only when Veil made it: shown this once, stored nowhere."
    )
