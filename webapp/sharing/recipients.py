"""Recipients are key slots: each family member's own password opens the album private key.

Adding one needs the owner's album passphrase, because only it opens the album private key that
the new slot is given. The key is opened in this process's memory, sealed to the new slot and
dropped; neither password nor key is stored, logged or sent anywhere. Rotating the album key
seals the new key to every recipient slot's own public key, so the family stays on the list.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime

import redis
from django.db import transaction
from django.views.decorators.debug import sensitive_variables

from cipher_worker import envelope, keys
from cipher_worker.errors import WrongKey
from cipher_worker.turns import Busy
from webapp.albums.models import Album, AlbumKeySlot, Photo

from .tries import limiter, too_many_tries

WRONG_OWNER_PASSPHRASE = "That is not this album's passphrase."
TRIES_UNAVAILABLE = "Veil cannot check passphrases right now; please try again in a minute."


class SharingError(Exception):
    """A refusal with a sentence to show the owner."""


def owner_slot(album: Album) -> AlbumKeySlot:
    return album.key_slots.get(kind=AlbumKeySlot.Kind.OWNER)


class TooManyTries(SharingError):
    """The owner slot's tries are used up for now (see :mod:`webapp.sharing.tries`)."""


@sensitive_variables("owner_passphrase", "private")
def _album_private_key(album: Album, owner_passphrase: str, client: str) -> bytes:
    """The album private key, opened with the owner's passphrase typed at ``client`` (an address):
    a check that takes a try from the owner slot like an unlock does."""
    slot = owner_slot(album)
    tries = limiter()
    try:
        reserved = tries.reserve(slot.pk, client)
    except redis.RedisError:
        raise SharingError(TRIES_UNAVAILABLE) from None
    if not reserved.allowed:
        raise TooManyTries(too_many_tries(reserved.wait))
    try:
        private = slot.unwrap(owner_passphrase)
    except WrongKey:
        raise SharingError(WRONG_OWNER_PASSPHRASE) from None
    except Busy:
        tries.give_back(slot.pk, client)  # no passphrase was checked
        raise
    tries.give_back(slot.pk, client)
    return private


@sensitive_variables("owner_passphrase", "password", "private")
def add_recipient(
    album: Album,
    *,
    owner_passphrase: str,
    client: str,
    name: str,
    password: str,
    expires_at: datetime | None = None,
) -> AlbumKeySlot:
    """A new key slot named ``name`` that ``password`` opens; SharingError for a wrong passphrase
    (TooManyTries once ``client`` has guessed too often)."""
    private = _album_private_key(album, owner_passphrase, client)
    slot = AlbumKeySlot(album=album, kind=AlbumKeySlot.Kind.RECIPIENT, label=name, expires_at=expires_at)
    try:
        slot.fill_for_recipient(private, password)
    finally:
        del private
    slot.save()
    return slot


def revoke_recipient(slot: AlbumKeySlot) -> None:
    """Delete a recipient's slot: their password opens nothing from now on."""
    if slot.is_owner:
        raise SharingError("The owner's key cannot be removed.")
    slot.delete()


def stranded_recipients(album: Album) -> list[str]:
    """Recipients whose slots predate slot key pairs: a rotation removes them (Veil never has
    their passwords), so the owner adds them again."""
    recipients = album.key_slots.filter(kind=AlbumKeySlot.Kind.RECIPIENT, public_key=None)
    return list(recipients.values_list("label", flat=True))


@dataclass(frozen=True)
class Rotation:
    photos: int  # photos whose content key was sealed again
    kept_recipients: list[str]
    removed_recipients: list[str]


@sensitive_variables("owner_passphrase", "old_private", "new_private", "content_key")
def rotate_album_key(album: Album, owner_passphrase: str, client: str) -> Rotation:
    """A new album key pair: every photo's content key re-sealed to it, the owner slot re-wrapped
    with the same passphrase, the new key sealed to every recipient slot's public key, and only
    the recipients from before slot key pairs removed (see :func:`stranded_recipients`). All or
    nothing, in one transaction."""
    with transaction.atomic():
        album = Album.objects.select_for_update().get(pk=album.pk)
        if album.photos.filter(status__in=Photo.IN_PROGRESS).exists():
            raise SharingError("Some photos are still being anonymized; rotate the key once they are all done.")
        old_private = _album_private_key(album, owner_passphrase, client)
        new_private, new_public = keys.generate_album_keypair()
        try:
            count = 0
            for photo in album.photos.exclude(envelope=None).only("pk", "envelope").iterator():
                env = envelope.Envelope.from_bytes(bytes(photo.envelope))  # type: ignore[arg-type]
                content_key = keys.open_content_key(env.sealed_content_key, old_private)
                resealed = dataclasses.replace(
                    env, sealed_content_key=keys.seal_content_key(content_key, new_public), mac=b""
                )
                # The envelope's MAC covers the sealed key, so it is computed again.
                sealed = envelope.seal_envelope(resealed, content_key).to_bytes()
                del content_key
                Photo.objects.filter(pk=photo.pk).update(envelope=sealed)
                count += 1
            slot = owner_slot(album)
            slot.slot = keys.wrap_private_key(new_private, owner_passphrase).to_bytes()
            slot.save(update_fields=["slot"])
            kept = []
            for recipient in album.key_slots.filter(kind=AlbumKeySlot.Kind.RECIPIENT).exclude(public_key=None):
                recipient.reseal(new_private)
                recipient.save(update_fields=["sealed_album_key"])
                kept.append(recipient.label)
        finally:
            del old_private, new_private
        removed = stranded_recipients(album)
        album.key_slots.filter(label__in=removed, kind=AlbumKeySlot.Kind.RECIPIENT).delete()
        album.public_key = new_public
        album.save(update_fields=["public_key"])
    return Rotation(count, kept, removed)
