from __future__ import annotations

import pytest

from cipher_worker import keys
from cipher_worker.errors import WrongKey
from webapp.albums.models import Album, AlbumKeySlot, Photo

from .factories import PASSPHRASE, AlbumFactory, PhotoFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_a_new_album_has_an_owner_slot_that_opens_with_its_passphrase_only() -> None:
    album = Album.objects.create_with_passphrase(owner=UserFactory(), name="Summer", passphrase=PASSPHRASE)

    slot = album.key_slots.get()
    assert (slot.kind, slot.label) == (AlbumKeySlot.Kind.OWNER, "owner")
    private = slot.unwrap(PASSPHRASE)
    assert keys.public_key_from_private(private) == album.public_key_bytes
    with pytest.raises(WrongKey):
        slot.unwrap("our summer of 1999")


def test_the_raw_private_key_is_stored_nowhere() -> None:
    album = AlbumFactory()
    private = album.key_slots.get().unwrap(PASSPHRASE)

    stored = [bytes(value) for value in AlbumKeySlot.objects.values_list("slot", flat=True)]
    stored += [bytes(value) for value in Album.objects.values_list("public_key", flat=True)]
    assert all(private not in blob for blob in stored)


def test_each_album_has_its_own_key_pair() -> None:
    first, second = AlbumFactory(), AlbumFactory()
    assert first.public_key_bytes != second.public_key_bytes
    with pytest.raises(WrongKey):  # the same passphrase, but another album's slot
        keys.open_content_key(
            keys.seal_content_key(b"k" * 32, first.public_key_bytes), second.key_slots.get().unwrap(PASSPHRASE)
        )


def test_photos_list_newest_first_and_describe_their_state() -> None:
    album = AlbumFactory()
    older = PhotoFactory(album=album, status=Photo.Status.DONE, faces=2)
    newer = PhotoFactory(album=album, status=Photo.Status.FAILED, failure_reason="the file is empty")

    assert list(album.photos.all()) == [newer, older]
    assert older.status_message == "2 faces anonymized"
    assert newer.live_status()["data"] == {
        "photo_id": str(newer.pk),
        "album_id": str(album.pk),
        "status": "failed",
        "progress": 0.0,
        "message": "the file is empty",
        "thumbnail_url": None,
        "file_name": newer.file_name,
        "retryable": False,
    }
