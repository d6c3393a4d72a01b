"""The owner's controls over a whole album: renaming it, and deleting it so that nothing is left."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest
import redis
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.test import Client
from django.urls import reverse
from PIL import Image
from rest_framework.test import APIClient

from cipher_worker import keys
from webapp import texts
from webapp.albums import removal, tasks, transit
from webapp.albums.models import Album, AlbumKeySlot, Photo
from webapp.sharing import recipients, tries
from webapp.sharing import transit as unlock_transit
from webapp.sharing.models import UnlockAttempt

from .factories import PASSPHRASE, AlbumFactory, PhotoFactory, UserFactory


def jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (90, 120, 150)).save(out, "JPEG")
    return out.getvalue()


def stored_photo(album: Album, name: str) -> Photo:
    return PhotoFactory(
        album=album,
        status=Photo.Status.DONE,
        envelope=b"sealed",
        image=default_storage.save(f"photos/{album.pk}/{name}.jpg", ContentFile(jpeg())),
        thumbnail=default_storage.save(f"photos/{album.pk}/{name}.thumb.jpg", ContentFile(jpeg())),
    )


def test_renaming_an_album(owner_client: Client, user: Any) -> None:
    album = AlbumFactory(owner=user, name="Summer")
    url = reverse("albums:settings", args=[album.pk])
    assert url in owner_client.get(album.get_absolute_url()).content.decode()

    blank = owner_client.post(url, {"name": "   "})
    assert blank.status_code == 400 and "Give the album a name." in blank.content.decode()
    response = owner_client.post(url, {"name": "  Summer   at the lake "})

    assert response.status_code == 302 and response.url == album.get_absolute_url()
    album.refresh_from_db()
    assert album.name == "Summer at the lake"
    stranger = Client()
    stranger.force_login(UserFactory())
    assert stranger.post(url, {"name": "Mine now"}).status_code == 404
    album.refresh_from_db()
    assert album.name == "Summer at the lake"


def test_deleting_an_album_leaves_nothing_of_it(
    owner_client: Client, user: Any, fresh_redis: redis.Redis, django_capture_on_commit_callbacks: Any
) -> None:
    album = AlbumFactory(owner=user)
    other = stored_photo(AlbumFactory(owner=user), "other")  # another album of the same owner stays
    photos = [stored_photo(album, "a"), stored_photo(album, "b")]
    queued = PhotoFactory(album=album)  # stuck in the queue: it does not hold the deletion up
    transit.put_upload(queued.pk, jpeg())
    transit.count_attempt(queued.pk)
    unlock_transit.put_unlock(photos[0].pk, b"a sealed content key", 60)
    unlock_transit.put_unlock(other.pk, b"another album's", 60)
    grandma = recipients.add_recipient(
        album, owner_passphrase=PASSPHRASE, client="10.0.0.1", name="Grandma", password="a kite over the harbour"
    )
    limiter = tries.limiter()
    limiter.reserve(grandma.pk, "192.0.2.7")
    limiter.reserve(tries.unknown_slot(album.pk), "192.0.2.7")
    UnlockAttempt.objects.create(
        album=album, slot=grandma, slot_label="Grandma", outcome="wrong_password", via="share_link"
    )
    share_url = album.share_url()
    files = [f.name for p in photos for f in (p.image, p.thumbnail)]
    slot_ids = list(album.key_slots.values_list("pk", flat=True))
    settings_page = owner_client.get(reverse("albums:settings", args=[album.pk])).content.decode()
    assert "Deletes its 3 photos" in settings_page and "(1 recipient)" in settings_page

    unconfirmed = owner_client.post(reverse("albums:delete", args=[album.pk]))
    assert unconfirmed.status_code == 400 and Album.objects.filter(pk=album.pk).exists()
    with django_capture_on_commit_callbacks(execute=True):
        response = owner_client.post(reverse("albums:delete", args=[album.pk]), {"confirm": "on"})

    assert response.status_code == 302 and response.url == reverse("albums:list")
    assert "and its 3 photos are deleted." in owner_client.get(response.url).content.decode()
    assert not Album.objects.filter(pk=album.pk).exists()
    assert not Photo.objects.filter(album_id=album.pk).exists()
    assert not AlbumKeySlot.objects.filter(pk__in=slot_ids).exists()
    assert not UnlockAttempt.objects.filter(album_id=album.pk).exists()
    assert not any(default_storage.exists(name) for name in files)
    assert not default_storage.exists(files[0].rsplit("/", 1)[0])  # nor its folder
    leftovers = [k.decode() for k in fresh_redis.keys("*")]
    mentions = [str(album.pk), str(queued.pk), *(str(p.pk) for p in photos), *(f"{tries.PREFIX}{i}" for i in slot_ids)]
    assert not [k for k in leftovers if any(m in k for m in mentions)], leftovers
    assert any(str(other.pk) in k for k in leftovers)  # the other album's pending unlock is untouched
    assert Photo.objects.filter(pk=other.pk).exists() and default_storage.exists(other.image.name)
    assert Client().get(share_url).status_code == 404


def test_only_the_owner_deletes_an_album(user: Any) -> None:
    album = AlbumFactory(owner=user)
    stranger = Client()
    stranger.force_login(UserFactory())
    assert stranger.post(reverse("albums:delete", args=[album.pk]), {"confirm": "on"}).status_code == 404
    assert Album.objects.filter(pk=album.pk).exists()


def anonymize_while(monkeypatch: pytest.MonkeyPatch, photo: Photo, meanwhile: Callable[[], object]) -> str:
    """Run the photo's task for real, with ``meanwhile`` done after the pipeline and before storing."""
    transit.put_upload(photo.pk, jpeg())
    real_anonymize = tasks.cipher_api.anonymize_photo

    def anonymize(*args: Any, **kwargs: Any) -> Any:
        result = real_anonymize(*args, **kwargs)
        meanwhile()
        return result

    monkeypatch.setattr(tasks.cipher_api, "anonymize_photo", anonymize)
    return str(tasks.anonymize_photo.apply(args=[str(photo.pk)]).get())


def test_a_worker_that_finishes_a_photo_of_a_deleted_album_keeps_nothing(
    user: Any, media_root: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    photo = PhotoFactory(album=AlbumFactory(owner=user))
    assert anonymize_while(monkeypatch, photo, lambda: removal.delete_album(photo.album)) == "deleted"
    assert not [p for p in media_root.rglob("*") if p.is_file()]
    assert not transit.has_upload(photo.pk)


def test_the_api_renames_and_deletes_albums_and_photos(user: Any, django_capture_on_commit_callbacks: Any) -> None:
    api = APIClient()
    api.force_authenticate(user)
    album = AlbumFactory(owner=user, name="Summer")
    photo = stored_photo(album, "c")
    busy = PhotoFactory(album=album, status=Photo.Status.ANONYMIZING)

    renamed = api.patch(f"/api/albums/{album.pk}/", {"name": "Lake"}, format="json")
    assert renamed.status_code == 200 and renamed.json()["name"] == "Lake"
    assert api.delete(f"/api/photos/{busy.pk}/").status_code == 409
    with django_capture_on_commit_callbacks(execute=True):
        assert api.delete(f"/api/photos/{photo.pk}/").status_code == 204
    assert not Photo.objects.filter(pk=photo.pk).exists() and not default_storage.exists(photo.image.name)

    stranger = APIClient()
    stranger.force_authenticate(UserFactory())
    assert stranger.delete(f"/api/albums/{album.pk}/").status_code == 404
    with django_capture_on_commit_callbacks(execute=True):
        assert api.delete(f"/api/albums/{album.pk}/").status_code == 204
    assert not Album.objects.filter(pk=album.pk).exists()


def test_a_photo_sealed_to_a_key_rotated_meanwhile_is_not_stored_and_can_be_tried_again(
    user: Any, media_root: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    photo = PhotoFactory(album=AlbumFactory(owner=user))

    def a_rotation_commits() -> None:
        Album.objects.filter(pk=photo.album_id).update(public_key=keys.generate_album_keypair()[1])

    assert anonymize_while(monkeypatch, photo, a_rotation_commits) == "failed"
    photo.refresh_from_db()
    assert (photo.failure_reason, photo.retryable, photo.envelope) == (texts.KEY_ROTATED, True, None)
    assert not [p for p in media_root.rglob("*") if p.is_file()]
    assert transit.has_upload(photo.pk)  # kept for the retry, which seals to the new key
