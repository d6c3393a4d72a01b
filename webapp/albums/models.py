"""Albums, their key slots and their photos.

What the database holds is what a thief may read: album public keys in the clear, album
private keys only wrapped in key slots (Argon2id + AES-GCM, `cipher_worker.keys`), and for
each photo the anonymized image, a thumbnail and the sealed recovery envelope.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, ClassVar

from django.conf import settings
from django.db import models, transaction
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from cipher_worker import keys
from webapp.realtime.status import PhotoStatusMessage, photo_status_message

if TYPE_CHECKING:
    from django.contrib.auth.models import User


class AlbumQuerySet(models.QuerySet["Album"]):
    def owned_by(self, user_id: int) -> AlbumQuerySet:
        return self.filter(owner_id=user_id)


class AlbumManager(models.Manager["Album"]):
    def get_queryset(self) -> AlbumQuerySet:
        return AlbumQuerySet(self.model, using=self._db)

    def owned_by(self, user_id: int) -> AlbumQuerySet:
        return self.get_queryset().owned_by(user_id)

    @sensitive_variables("passphrase", "private", "slot")
    def create_with_passphrase(self, *, owner: User, name: str, passphrase: str) -> Album:
        """A new album with a fresh X25519 key pair; the private key is kept only in the owner's slot."""
        private, public = keys.generate_album_keypair()
        slot = keys.wrap_private_key(private, passphrase)
        del private  # the raw private key goes no further than this frame
        with transaction.atomic():
            album = self.create(owner=owner, name=name, public_key=public)
            AlbumKeySlot.objects.create(
                album=album, kind=AlbumKeySlot.Kind.OWNER, label=AlbumKeySlot.OWNER_LABEL, slot=slot.to_bytes()
            )
        return album


def new_share_token() -> str:
    """An unguessable capability for an album's share link (192 random bits, URL-safe)."""
    return secrets.token_urlsafe(24)


class Album(models.Model):
    # UUIDs keep album addresses unguessable and say nothing about how many albums exist.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="albums")
    name = models.CharField(max_length=120)
    public_key = models.BinaryField(max_length=32)  # raw X25519; workers anonymize with it
    created_at = models.DateTimeField(auto_now_add=True)
    # Whoever has /s/<share_token>/ sees the anonymized album; rotating it makes old links 404.
    share_token = models.CharField(max_length=64, unique=True, default=new_share_token, editable=False)
    # A wrong password shows plausible wrong faces instead of an error (webapp.sharing).
    decoy_mode = models.BooleanField(default=False)
    # Downloads carry the photo's recovery envelope, so the file alone plus a key brings faces back.
    downloads_include_envelope = models.BooleanField(default=False)

    objects: ClassVar[AlbumManager] = AlbumManager()

    class Meta:
        ordering: ClassVar[list[str]] = ["-created_at"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("albums:detail", args=[self.pk])

    @property
    def public_key_bytes(self) -> bytes:
        return bytes(self.public_key)

    @property
    def fingerprint(self) -> str:
        return keys.key_fingerprint(self.public_key_bytes)

    def share_url(self) -> str:
        return reverse("sharing:share", args=[self.share_token])

    def rotate_share_token(self) -> None:
        self.share_token = new_share_token()
        self.save(update_fields=["share_token"])


class AlbumKeySlot(models.Model):
    """One password that opens the album private key: the owner's passphrase or a recipient's.

    The owner's slot wraps the album private key itself. A recipient's slot has a key pair of its
    own: its password wraps the slot's private half (``slot``) and the album private key is sealed
    to its public half (``sealed_album_key``), so a rotated album key can be handed to every
    recipient without their passwords. Recipient slots made before that (no ``public_key``) wrap
    the album key directly and still open; a rotation cannot keep them.
    """

    class Kind(models.TextChoices):
        OWNER = "owner", "Owner"
        RECIPIENT = "recipient", "Recipient"

    OWNER_LABEL = "owner"

    album = models.ForeignKey(Album, on_delete=models.CASCADE, related_name="key_slots")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    label = models.CharField(max_length=120)
    slot = models.BinaryField(max_length=256)  # keys.KeySlot.to_bytes()
    public_key = models.BinaryField(max_length=32, null=True, blank=True)  # the slot's own X25519 key
    sealed_album_key = models.BinaryField(max_length=128, null=True, blank=True)  # keys.seal_album_key
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)  # None: until revoked
    last_unlocked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering: ClassVar[list[str]] = ["kind", "label"]  # "owner" sorts before "recipient"
        constraints: ClassVar[list[models.BaseConstraint]] = [
            models.UniqueConstraint(
                fields=["album"], condition=models.Q(kind="owner"), name="one_owner_slot_per_album"
            ),
            models.UniqueConstraint(fields=["album", "label"], name="one_slot_per_name_per_album"),
        ]

    def __str__(self) -> str:
        return f"{self.album} / {self.label}"

    @property
    def is_owner(self) -> bool:
        return self.kind == self.Kind.OWNER

    def is_expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or timezone.now())

    @property
    def can_follow_rotation(self) -> bool:
        """Whether a new album key can be sealed to this slot without its password."""
        return self.is_owner or self.public_key is not None

    @sensitive_variables("password", "unwrapped")
    def unwrap(self, password: str) -> bytes:
        """The album's raw private key; raises cipher_worker.errors.WrongKey for another password."""
        unwrapped = keys.unwrap_private_key(keys.KeySlot.from_bytes(bytes(self.slot)), password)
        if self.sealed_album_key is None:
            return unwrapped  # the owner's slot, or a recipient slot from before slot key pairs
        try:
            return keys.open_album_key(bytes(self.sealed_album_key), unwrapped)
        finally:
            del unwrapped

    @sensitive_variables("album_private", "password", "slot_private")
    def fill_for_recipient(self, album_private: bytes, password: str) -> None:
        """Give this (unsaved) recipient slot a key pair of its own, its private half wrapped by
        ``password`` and ``album_private`` sealed to its public half."""
        slot_private, self.public_key = keys.generate_album_keypair()
        try:
            self.slot = keys.wrap_private_key(slot_private, password).to_bytes()
        finally:
            del slot_private
        self.reseal(album_private)

    @sensitive_variables("album_private")
    def reseal(self, album_private: bytes) -> None:
        """Seal (another) album private key to this recipient slot's public key (not saved)."""
        assert self.public_key is not None, "a slot without its own key pair cannot be resealed"
        self.sealed_album_key = keys.seal_album_key(album_private, bytes(self.public_key))


class PhotoQuerySet(models.QuerySet["Photo"]):
    def owned_by(self, user_id: int) -> PhotoQuerySet:
        return self.filter(album__owner_id=user_id)

    def for_files(self) -> PhotoQuerySet:
        """Only the columns that serving a photo's image or thumbnail reads (webapp.albums.photofiles):
        a page asks for a hundred thumbnails at once, and a wider row (the recovery envelope, the
        album's columns) was most of each one's time."""
        return self.only("pk", "album_id", "image", "thumbnail", "format")


class PhotoManager(models.Manager.from_queryset(PhotoQuerySet)):  # type: ignore[misc]
    def get_queryset(self) -> PhotoQuerySet:
        # An envelope holds the sealed face pixels (hundreds of KB): load it only where it is
        # read (``.only(..., "envelope")`` or attribute access). Listing 500 photos on Postgres
        # took 928 ms with it and 11 ms without.
        return super().get_queryset().defer("envelope")


class Photo(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        DETECTING = "detecting", "Finding faces"
        ANONYMIZING = "anonymizing", "Anonymizing"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    IN_PROGRESS: ClassVar[frozenset[str]] = frozenset({Status.QUEUED, Status.DETECTING, Status.ANONYMIZING})

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    album = models.ForeignKey(Album, on_delete=models.CASCADE, related_name="photos")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    progress = models.FloatField(default=0.0)  # 0..1 within the whole job
    failure_reason = models.CharField(max_length=300, blank=True)
    # the uploaded file's name, so the owner can tell which tile is which file
    file_name = models.CharField(max_length=255, blank=True)
    # True when the failure was ours (not the photo's) and the upload may still be processed again.
    retryable = models.BooleanField(default=False)
    # The anonymized image and its thumbnail; the original is never stored.
    image = models.FileField(max_length=255, blank=True)
    thumbnail = models.FileField(max_length=255, blank=True)
    envelope = models.BinaryField(null=True, blank=True)  # sealed recovery data (cipher_worker.envelope)
    # Bytes the stored files take (the account's storage quota and the dashboard add them up).
    # While the photo is queued, image_bytes holds its upload's size: what it is about to take.
    image_bytes = models.PositiveBigIntegerField(null=True, blank=True)
    thumbnail_bytes = models.PositiveBigIntegerField(null=True, blank=True)
    format = models.CharField(max_length=8, blank=True)  # JPEG, PNG or WEBP
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    faces = models.PositiveIntegerField(null=True, blank=True)
    # The lifetime id (webapp.workers.BOOT) of the worker on this photo while it is: a photo whose
    # worker died with it is found by this and queued again (webapp.albums.lost).
    claimed_by = models.CharField(max_length=32, null=True, blank=True, db_index=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects: ClassVar[PhotoQuerySet] = PhotoManager()

    class Meta:
        ordering: ClassVar[list[str]] = ["-created_at"]
        indexes: ClassVar[list[models.Index]] = [models.Index(fields=["album", "-created_at"])]

    def __str__(self) -> str:
        return f"photo {self.pk} ({self.status})"

    @property
    def in_progress(self) -> bool:
        return self.status in self.IN_PROGRESS

    @property
    def status_message(self) -> str:
        """The sentence a tile shows under its badge."""
        if self.status == self.Status.FAILED:
            return self.failure_reason
        if self.status == self.Status.DONE:
            if not self.faces:
                return "No faces found"
            return "1 face anonymized" if self.faces == 1 else f"{self.faces} faces anonymized"
        return str(self.Status(self.status).label) + "…"

    @property
    def image_version(self) -> str:
        """What names the stored image: its file name's random stem (webapp.albums.photofiles)."""
        return _file_version(self.image.name)

    @property
    def thumbnail_version(self) -> str:
        return _file_version(self.thumbnail.name)

    def image_url(self) -> str | None:
        return f"{reverse('albums:photo-image', args=[self.pk])}?v={self.image_version}" if self.image else None

    def thumbnail_url(self) -> str | None:
        url = reverse("albums:photo-thumbnail", args=[self.pk])
        return f"{url}?v={self.thumbnail_version}" if self.thumbnail else None

    def live_status(self) -> PhotoStatusMessage:
        """This photo's state as the status message the page receives over the websocket."""
        return photo_status_message(
            photo_id=self.pk,
            album_id=self.album_id,
            status=self.status,
            progress=1.0 if self.status == self.Status.DONE else self.progress,
            message=self.status_message,
            thumbnail_url=self.thumbnail_url(),
            file_name=self.file_name,
            retryable=self.status == self.Status.FAILED and self.retryable,
        )


def _file_version(name: str | None) -> str:
    return (name or "").rsplit("/", 1)[-1].split(".", 1)[0]
