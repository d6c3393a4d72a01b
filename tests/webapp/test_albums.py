from __future__ import annotations

import base64
import io
import json
from typing import Any

import pytest
import redis
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from PIL import Image

from cipher_worker import keys
from cipher_worker.errors import VeilError
from tests.helpers import DATA
from webapp import texts
from webapp.albums import tasks, transit
from webapp.albums.models import Album, Photo

from .factories import PASSPHRASE, AlbumFactory, PhotoFactory, UserFactory

pytestmark = pytest.mark.django_db


def jpeg(width: int = 64, height: int = 48) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (120, 90, 60)).save(out, "JPEG")
    return out.getvalue()


def upload(client: Client, album: Album, data: bytes, name: str = "photo.jpg", **extra: Any) -> Any:
    return client.post(
        reverse("albums:upload", args=[album.pk]),
        {"photos": SimpleUploadedFile(name, data, content_type="image/jpeg")},
        HTTP_ACCEPT="application/json",
        **extra,
    )


# --- albums ------------------------------------------------------------------------------


def test_create_an_album_with_a_passphrase(owner_client: Client, user: Any) -> None:
    response = owner_client.post(
        reverse("albums:create"), {"name": "Lake house", "passphrase": PASSPHRASE, "passphrase_again": PASSPHRASE}
    )

    album = Album.objects.get()
    assert response.status_code == 302 and response.url == album.get_absolute_url()
    assert album.owner == user and album.name == "Lake house"
    assert keys.public_key_from_private(album.key_slots.get().unwrap(PASSPHRASE)) == album.public_key_bytes
    page = owner_client.get(response.url)
    assert "Lake house" in page.content.decode() and album.fingerprint in page.content.decode()


def test_an_album_is_not_made_when_the_passphrases_differ(owner_client: Client) -> None:
    response = owner_client.post(
        reverse("albums:create"), {"name": "Lake house", "passphrase": PASSPHRASE, "passphrase_again": "other one"}
    )

    assert response.status_code == 200 and "The two passphrases differ." in response.content.decode()
    assert not Album.objects.exists()


def test_the_album_list_shows_only_my_albums(owner_client: Client, user: Any) -> None:
    AlbumFactory(owner=user, name="Mine")
    AlbumFactory(name="Someone else's")

    page = owner_client.get(reverse("albums:list")).content.decode()
    assert "Mine" in page and "Someone else" not in page


def test_another_users_album_and_photos_are_not_found(owner_client: Client) -> None:
    theirs = AlbumFactory(owner=UserFactory())
    photo = PhotoFactory(album=theirs, status=Photo.Status.FAILED, retryable=True)

    assert owner_client.get(reverse("albums:detail", args=[theirs.pk])).status_code == 404
    assert owner_client.get(reverse("albums:statuses", args=[theirs.pk])).status_code == 404
    assert upload(owner_client, theirs, jpeg()).status_code == 404
    assert owner_client.get(reverse("albums:photo-image", args=[photo.pk])).status_code == 404
    assert owner_client.get(reverse("albums:photo-thumbnail", args=[photo.pk])).status_code == 404
    assert owner_client.post(reverse("albums:photo-retry", args=[photo.pk])).status_code == 404
    assert theirs.photos.count() == 1


def test_the_album_page_shows_photos_newest_first_with_their_state(owner_client: Client, user: Any) -> None:
    album = AlbumFactory(owner=user)
    done = PhotoFactory(album=album, status=Photo.Status.DONE, faces=1)
    failed = PhotoFactory(album=album, status=Photo.Status.FAILED, failure_reason="the file is empty")
    queued = PhotoFactory(album=album)

    page = owner_client.get(album.get_absolute_url()).content.decode()
    positions = [page.index(f'data-photo-id="{p.pk}"') for p in (queued, failed, done)]
    assert positions == sorted(positions)
    assert 'data-status="failed"' in page and "the file is empty" in page
    assert "1 face anonymized" in page and "badge-queued" in page
    assert "multiple" in page and "/static/album.js" in page


# --- uploads -----------------------------------------------------------------------------


def test_an_upload_is_queued_sealed_in_redis_and_the_task_carries_only_its_id(
    owner_client: Client, user: Any, fresh_redis: redis.Redis, django_capture_on_commit_callbacks: Any
) -> None:
    album = AlbumFactory(owner=user)
    data = (DATA / "person_a_2.jpg").read_bytes()

    with django_capture_on_commit_callbacks(execute=True):
        response = upload(owner_client, album, data)

    assert response.status_code == 201
    [sent] = response.json()["photos"]
    photo = Photo.objects.get()
    assert sent == {
        "photo_id": str(photo.pk),
        "album_id": str(album.pk),
        "status": "queued",
        "progress": 0.0,
        "message": "Queued…",
        "thumbnail_url": None,
        "file_name": "photo.jpg",
        "retryable": False,
    }
    # The transit copy opens with the workers' key, expires, and is the only copy of the bytes.
    assert transit.get_upload(photo.pk) == data
    assert 0 < fresh_redis.ttl(transit.transit_key(photo.pk)) <= 900
    [message] = [json.loads(m) for m in fresh_redis.lrange("celery", 0, -1)]
    assert message["headers"]["task"] == "albums.anonymize_photo"
    args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
    assert (args, kwargs) == ([str(photo.pk)], {})
    for key in fresh_redis.scan_iter():
        if fresh_redis.type(key) == b"string":
            assert data[1000:1064] not in fresh_redis.get(key)  # nothing of the photo in the clear


def test_several_photos_in_one_form_post(owner_client: Client, user: Any) -> None:
    album = AlbumFactory(owner=user)
    files = [SimpleUploadedFile(f"p{i}.jpg", jpeg(), content_type="image/jpeg") for i in range(3)]

    response = owner_client.post(reverse("albums:upload", args=[album.pk]), {"photos": files})

    assert response.status_code == 302
    assert album.photos.filter(status=Photo.Status.QUEUED).count() == 3
    assert "3 photos queued" in owner_client.get(album.get_absolute_url()).content.decode()


def test_an_oversize_photo_is_refused_with_413(owner_client: Client, user: Any, settings: Any) -> None:
    settings.VEIL_MAX_UPLOAD_MB = 1
    settings.VEIL_MAX_UPLOAD_BYTES = 1000
    album = AlbumFactory(owner=user)

    response = upload(owner_client, album, b"\xff" * 1001)

    assert response.status_code == 413
    assert response.json() == {"error": "This photo is too large: Veil accepts photos up to 1 MB."}
    assert not album.photos.exists()


def test_an_empty_post_asks_for_a_photo(owner_client: Client, user: Any) -> None:
    album = AlbumFactory(owner=user)
    response = owner_client.post(reverse("albums:upload", args=[album.pk]), HTTP_ACCEPT="application/json")
    assert response.status_code == 400 and response.json()["error"] == "Choose at least one photo to upload."


# --- the task's bookkeeping (the model itself runs in test_integration) ------------------


def test_an_upload_that_expired_before_a_worker_came_fails_with_a_reason(user: Any) -> None:
    photo = PhotoFactory(album=AlbumFactory(owner=user))

    assert tasks.anonymize_photo.apply(args=[str(photo.pk)]).get() == "failed"

    photo.refresh_from_db()
    assert photo.status == Photo.Status.FAILED and not photo.retryable
    assert photo.failure_reason == texts.UPLOAD_EXPIRED


def test_each_tile_names_its_file(owner_client: Client, user: Any) -> None:
    album = AlbumFactory(owner=user)
    assert upload(owner_client, album, jpeg(), name="beach day.jpg").status_code == 201
    assert upload(owner_client, album, b"not a photo", name="notes.jpg").status_code == 400
    photo = album.photos.get()
    assert photo.file_name == "beach day.jpg"
    page = owner_client.get(album.get_absolute_url()).content.decode()
    assert '<p class="tile-name" title="beach day.jpg">beach day.jpg</p>' in page


def test_deleting_a_photo_leaves_nothing_of_it(
    owner_client: Client, user: Any, fresh_redis: redis.Redis, django_capture_on_commit_callbacks: Any
) -> None:
    album = AlbumFactory(owner=user)
    photo = PhotoFactory(
        album=album,
        status=Photo.Status.DONE,
        envelope=b"sealed",
        image=default_storage.save("photos/a/x.jpg", ContentFile(jpeg())),
        thumbnail=default_storage.save("photos/a/x.thumb.jpg", ContentFile(jpeg(32, 24))),
    )
    transit.put_upload(photo.pk, jpeg())  # as if a retry's copy were still there
    transit.count_attempt(photo.pk)
    page = owner_client.get(album.get_absolute_url()).content.decode()
    assert reverse("albums:photo-delete", args=[photo.pk]) in page and "data-confirm=" in page

    with django_capture_on_commit_callbacks(execute=True):
        response = owner_client.post(reverse("albums:photo-delete", args=[photo.pk]))

    assert response.status_code == 302 and response.url == album.get_absolute_url()
    assert not Photo.objects.filter(pk=photo.pk).exists()
    assert not default_storage.exists("photos/a/x.jpg") and not default_storage.exists("photos/a/x.thumb.jpg")
    assert not fresh_redis.keys(f"*{photo.pk}*")
    assert "Photo deleted." in owner_client.get(response.url).content.decode()


def test_a_photo_being_anonymized_is_not_deleted_and_nobody_else_deletes_yours(owner_client: Client, user: Any) -> None:
    album = AlbumFactory(owner=user)
    busy = PhotoFactory(album=album, status=Photo.Status.ANONYMIZING)
    refused = owner_client.post(reverse("albums:photo-delete", args=[busy.pk]), HTTP_ACCEPT="application/json")
    assert refused.status_code == 409 and "still being anonymized" in refused.json()["error"]
    failed = PhotoFactory(album=album, status=Photo.Status.FAILED, failure_reason="the file is empty")
    stranger = Client()
    stranger.force_login(UserFactory())
    assert stranger.post(reverse("albums:photo-delete", args=[failed.pk])).status_code == 404
    assert Photo.objects.filter(pk__in=[busy.pk, failed.pk]).count() == 2
    dismissed = owner_client.post(reverse("albums:photo-delete", args=[failed.pk]), HTTP_ACCEPT="application/json")
    assert dismissed.status_code == 200 and not Photo.objects.filter(pk=failed.pk).exists()


def test_a_failed_photo_is_retried_while_its_upload_is_in_transit(
    owner_client: Client, user: Any, django_capture_on_commit_callbacks: Any
) -> None:
    album = AlbumFactory(owner=user)
    photo = PhotoFactory(album=album, status=Photo.Status.FAILED, retryable=True, failure_reason=texts.OUR_FAULT)
    transit.put_upload(photo.pk, jpeg())

    with django_capture_on_commit_callbacks() as queued:
        response = owner_client.post(reverse("albums:photo-retry", args=[photo.pk]), HTTP_ACCEPT="application/json")

    assert response.status_code == 200 and response.json()["photo"]["status"] == "queued"
    assert len(queued) == 1
    transit.discard_upload(photo.pk)
    gone = owner_client.post(reverse("albums:photo-retry", args=[photo.pk]), HTTP_ACCEPT="application/json")
    assert gone.status_code == 409


# --- serving anonymized files ------------------------------------------------------------


def test_the_owner_gets_the_anonymized_image_and_thumbnail(owner_client: Client, user: Any) -> None:
    image = jpeg(800, 600)
    photo = PhotoFactory(
        album=AlbumFactory(owner=user),
        status=Photo.Status.DONE,
        format="JPEG",
        faces=0,
        image=default_storage.save("photos/a/x.jpg", ContentFile(image)),
        thumbnail=default_storage.save("photos/a/x.thumb.jpg", ContentFile(tasks.make_thumbnail(image))),
    )

    full = owner_client.get(reverse("albums:photo-image", args=[photo.pk]))
    assert full.status_code == 200 and full["Content-Type"] == "image/jpeg"
    assert b"".join(full.streaming_content) == image
    assert "private" in full["Cache-Control"]
    thumb = owner_client.get(reverse("albums:photo-thumbnail", args=[photo.pk]))
    assert Image.open(io.BytesIO(b"".join(thumb.streaming_content))).size == (400, 300)

    statuses = owner_client.get(reverse("albums:statuses", args=[photo.album_id]), {"ids": str(photo.pk)})
    assert statuses.json()["photos"][0]["thumbnail_url"] == photo.thumbnail_url()


def test_a_thumbnail_under_its_version_is_cached_for_a_year_and_any_other_url_revalidates(
    owner_client: Client, user: Any
) -> None:
    photo = PhotoFactory(
        album=AlbumFactory(owner=user),
        status=Photo.Status.DONE,
        thumbnail=default_storage.save("photos/a/x.thumb.jpg", ContentFile(jpeg(32, 24))),
    )
    versioned = photo.thumbnail_url()
    assert versioned == f"{reverse('albums:photo-thumbnail', args=[photo.pk])}?v={photo.thumbnail_version}"

    first = owner_client.get(versioned)
    assert first.status_code == 200 and first["ETag"] == f'"{photo.thumbnail_version}"'
    assert set(first["Cache-Control"].split(", ")) == {"private", "max-age=31536000", "immutable"}
    again = owner_client.get(versioned, HTTP_IF_NONE_MATCH=first["ETag"])
    assert again.status_code == 304 and not again.content
    plain = owner_client.get(reverse("albums:photo-thumbnail", args=[photo.pk]))
    assert plain.status_code == 200 and "no-cache" in plain["Cache-Control"]
    assert "immutable" not in plain["Cache-Control"]
    # a stranger's copy of the URL and ETag still finds nothing
    other = Client()
    other.force_login(UserFactory())
    assert other.get(versioned, HTTP_IF_NONE_MATCH=first["ETag"]).status_code == 404


def test_a_photo_deleted_before_a_worker_came_leaves_nothing_in_transit(user: Any) -> None:
    photo = PhotoFactory(album=AlbumFactory(owner=user))
    transit.put_upload(photo.pk, jpeg())
    photo.album.delete()

    assert tasks.anonymize_photo.apply(args=[str(photo.pk)]).get() == "deleted"
    assert not transit.has_upload(photo.pk)


def test_a_model_that_will_not_load_is_our_fault_and_the_photo_stays_retryable(
    owner_client: Client, user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_deployment() -> None:
        raise VeilError("dcgan64_encoder.pt is missing; rebuild it with `python -m lab.train`")

    monkeypatch.setattr(tasks.cipher_api, "get_pipeline", broken_deployment)
    photo = PhotoFactory(album=AlbumFactory(owner=user))
    transit.put_upload(photo.pk, jpeg())

    assert tasks.anonymize_photo.apply(args=[str(photo.pk)]).get() == "failed"

    photo.refresh_from_db()
    assert photo.failure_reason == texts.OUR_FAULT and photo.retryable
    assert transit.has_upload(photo.pk)  # kept until its TTL, for the retry
    assert "Try again" in owner_client.get(photo.album.get_absolute_url()).content.decode()


def test_a_photo_whose_upload_was_lost_is_failed_when_the_owner_looks_not_left_queued(
    owner_client: Client, user: Any, settings: Any
) -> None:
    from datetime import timedelta

    from django.utils import timezone

    album = AlbumFactory(owner=user)
    lost, waiting, fresh = (PhotoFactory(album=album) for _ in range(3))
    from webapp.albums.lost import GRACE

    long_ago = timezone.now() - timedelta(seconds=GRACE + 1)
    Photo.objects.filter(pk__in=[lost.pk, waiting.pk]).update(created_at=long_ago)
    transit.put_upload(waiting.pk, jpeg())  # retried by hand since: its upload is there
    # (``fresh`` has no upload either, but may still be on its way)

    page = owner_client.get(album.get_absolute_url()).content.decode()

    statuses = {p.pk: (p.status, p.failure_reason) for p in Photo.objects.filter(album=album)}
    assert statuses[lost.pk] == ("failed", texts.UPLOAD_LOST) and texts.UPLOAD_LOST in page
    assert statuses[waiting.pk][0] == statuses[fresh.pk][0] == "queued"
    assert reverse("albums:photo-delete", args=[lost.pk]) in page  # and it can be dismissed


def test_the_album_page_says_when_photos_wait_because_no_worker_runs(owner_client: Client, user: Any) -> None:
    from webapp import workers

    album = AlbumFactory(owner=user)
    PhotoFactory(album=album)  # queued
    assert texts.NO_WORKER_YET in owner_client.get(album.get_absolute_url()).content.decode()
    workers.beat()
    assert texts.NO_WORKER_YET not in owner_client.get(album.get_absolute_url()).content.decode()
    workers.stopped()
