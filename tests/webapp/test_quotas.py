"""What one account may keep: a photo count and the bytes its photos take, over all its albums."""

from __future__ import annotations

import io
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from PIL import Image

from webapp.albums import quotas, transit
from webapp.albums.models import Album, Photo
from webapp.albums.removal import delete_photo
from webapp.albums.uploads import accept_upload

from .factories import AlbumFactory, PhotoFactory, UserFactory


def jpeg(side: int = 64) -> bytes:
    """A noisy photo: its JPEG is about ``side``² / 2 bytes."""
    pixels = np.random.default_rng(side).integers(0, 255, (side, side, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=90)
    return out.getvalue()


def upload(client: Client, album: Album, *photos: bytes) -> Any:
    files = [SimpleUploadedFile(f"p{i}.jpg", data, content_type="image/jpeg") for i, data in enumerate(photos)]
    return client.post(reverse("albums:upload", args=[album.pk]), {"photos": files}, HTTP_ACCEPT="application/json")


def test_an_account_keeps_at_most_its_photo_quota_over_all_its_albums(
    owner_client: Client, user: Any, settings: Any
) -> None:
    settings.VEIL_PHOTO_QUOTA = 3
    first, second = AlbumFactory(owner=user), AlbumFactory(owner=user)
    PhotoFactory(album=first, status=Photo.Status.DONE)
    assert upload(owner_client, second, jpeg()).status_code == 201

    refused = upload(owner_client, first, jpeg(), jpeg())  # one more would fit, two do not

    assert refused.status_code == 403
    assert refused.json()["error"] == (
        "Your account holds 2 of its 3 photos, so 1 more fit; delete some photos to upload more."
    )
    assert Photo.objects.owned_by(user.pk).count() == 2
    assert len(transit.client().keys(transit.KEY_PREFIX + "*")) == 1  # the one upload that fitted
    page = owner_client.get(first.get_absolute_url()).content.decode()
    assert 'Photos in your account: <span id="quota-photos">2</span> of 3 · storage used:' in page
    someone_else, their_client = UserFactory(), Client()
    their_client.force_login(someone_else)
    assert upload(their_client, AlbumFactory(owner=someone_else), jpeg(), jpeg()).status_code == 201


def test_an_account_keeps_at_most_its_storage_quota_and_deleting_makes_room(
    owner_client: Client, user: Any, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    settings.VEIL_STORAGE_QUOTA_MB = 1
    album = AlbumFactory(owner=user)
    kept = PhotoFactory(album=album, status=Photo.Status.DONE, image_bytes=700_000, thumbnail_bytes=20_000)
    PhotoFactory(album=album, status=Photo.Status.FAILED)  # keeps nothing, so counts nothing
    big = jpeg(800)
    assert 300_000 < len(big) < 1_000_000

    refused = upload(owner_client, album, big)

    assert refused.status_code == 403
    assert refused.json()["error"].startswith("Your photos take 703.1\xa0KB of your 1.0\xa0MB; these do not fit.")
    with django_capture_on_commit_callbacks(execute=True):
        delete_photo(kept)
    assert upload(owner_client, album, big).status_code == 201
    assert quotas.usage(user.pk).stored_bytes == len(big)  # a queued photo counts with its upload's size


def test_no_limit_when_the_quotas_are_zero(user: Any, settings: Any) -> None:
    settings.VEIL_PHOTO_QUOTA = settings.VEIL_STORAGE_QUOTA_MB = 0
    PhotoFactory(album=AlbumFactory(owner=user), image_bytes=10**12)
    usage = quotas.usage(user.pk)
    assert usage.refusal(10**6, 10**12) is None


def test_an_account_may_have_only_so_many_uploads_waiting_and_is_asked_to_wait(
    owner_client: Client, user: Any, settings: Any
) -> None:
    settings.VEIL_MAX_WAITING_PHOTOS = 2
    album = AlbumFactory(owner=user)
    PhotoFactory(album=album, image_bytes=1000)  # queued, its upload waiting in Redis
    PhotoFactory(album=album, status=Photo.Status.ANONYMIZING, image_bytes=1000)
    stale = PhotoFactory(album=album, image_bytes=1000)  # queued before the transit TTL: nothing waits
    Photo.objects.filter(pk=stale.pk).update(
        created_at=timezone.now() - timedelta(seconds=settings.VEIL_TRANSIT_TTL + 1)
    )

    busy = upload(owner_client, album, jpeg())

    assert busy.status_code == 429
    assert (
        busy.json()["error"]
        == "2 of your photos are still waiting to be anonymized; this one follows once some are done."
    )
    someone_else, their_client = UserFactory(), Client()
    their_client.force_login(someone_else)
    assert upload(their_client, AlbumFactory(owner=someone_else), jpeg()).status_code == 201
    Photo.objects.filter(album=album, status=Photo.Status.ANONYMIZING).update(status=Photo.Status.DONE)
    assert upload(owner_client, album, jpeg()).status_code == 201


def test_when_everyones_waiting_uploads_fill_their_cap_only_the_accounts_over_their_share_wait(
    owner_client: Client, user: Any, settings: Any
) -> None:
    settings.VEIL_MAX_WAITING_MB_ALL = 1
    album = AlbumFactory(owner=user)
    PhotoFactory(album=AlbumFactory(), image_bytes=500_000)  # a busy account's uploads
    PhotoFactory(album=album, image_bytes=500_000)  # ours: the cap is nearly full now

    busy = upload(owner_client, album, jpeg(400))  # ours would go past half of it

    assert busy.status_code == 429 and busy.json()["error"].startswith("Veil is busy with many photos right now")
    newcomer, their_client = UserFactory(), Client()
    their_client.force_login(newcomer)  # nothing waiting yet: well within a third of the cap
    assert upload(their_client, AlbumFactory(owner=newcomer), jpeg()).status_code == 201


def test_a_photo_that_outgrows_the_storage_quota_once_anonymized_fails_and_keeps_nothing(
    user: Any, settings: Any, media_root: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cipher_worker.pipeline import AnonymizedPhoto
    from webapp.albums import tasks

    settings.VEIL_STORAGE_QUOTA_MB = 1
    album = AlbumFactory(owner=user)
    PhotoFactory(album=album, status=Photo.Status.DONE, image_bytes=900_000, thumbnail_bytes=10_000)
    small = jpeg(64)
    photo = accept_upload(album, small)  # fits as its upload
    big = jpeg(800)  # what the worker makes of it

    def anonymize(data: bytes, public: bytes, **_: Any) -> AnonymizedPhoto:
        return AnonymizedPhoto(image=big, format="JPEG", envelope=b"e", faces=[], size=(800, 800))

    monkeypatch.setattr(tasks.cipher_api, "get_pipeline", lambda: None)
    monkeypatch.setattr(tasks.cipher_api, "anonymize_photo", anonymize)

    assert tasks.anonymize_photo.apply(args=[str(photo.pk)]).get() == "failed"
    photo.refresh_from_db()
    assert photo.failure_reason.startswith("anonymized, this photo no longer fits in your 1.0\xa0MB of storage")
    assert not photo.retryable and not transit.has_upload(photo.pk)
    assert not [p for p in media_root.rglob("*") if p.is_file()]
    assert quotas.usage(user.pk).stored_bytes == 910_000


def test_past_a_quarter_over_the_cap_everyone_waits(owner_client: Client, user: Any, settings: Any) -> None:
    settings.VEIL_MAX_WAITING_MB_ALL = 1
    for _ in range(4):  # four accounts within their share, together a quarter past the cap
        PhotoFactory(album=AlbumFactory(), image_bytes=330_000)

    busy = upload(owner_client, AlbumFactory(owner=user), jpeg())  # a newcomer, well within a fifth

    assert busy.status_code == 429 and busy.json()["error"].startswith("Veil is busy with many photos right now")


def test_a_failed_upload_that_waits_in_redis_for_a_retry_counts_as_waiting(user: Any, settings: Any) -> None:
    from webapp.albums.quotas import backlog_refusal

    settings.VEIL_MAX_WAITING_PHOTOS = 1
    album = AlbumFactory(owner=user)
    photo = PhotoFactory(album=album, image_bytes=40 * 1024 * 1024)
    Photo.objects.filter(pk=photo.pk).update(status=Photo.Status.FAILED, retryable=True)
    assert backlog_refusal(user.pk, 1, 1000)  # its upload still takes room in Redis
    Photo.objects.filter(pk=photo.pk).update(retryable=False)
    assert backlog_refusal(user.pk, 1, 1000) is None


def test_a_photos_recovery_envelope_counts_against_the_storage_quota(user: Any) -> None:
    album = AlbumFactory(owner=user)
    PhotoFactory(album=album, status=Photo.Status.DONE, image_bytes=1000, thumbnail_bytes=100, envelope=b"e" * 5000)
    assert quotas.usage(user.pk).stored_bytes == 6100


def test_new_accounts_together_fill_at_most_half_the_cap_and_cannot_shut_out_the_rest(
    owner_client: Client, user: Any, settings: Any
) -> None:
    """Round 6 of the review: five throwaway accounts filled everyone's cap, so every account waited."""
    settings.VEIL_MAX_WAITING_MB_ALL = 1
    throwaway = [UserFactory(date_joined=timezone.now()) for _ in range(5)]
    for account in throwaway[:4]:  # each well within its share, together half the cap
        PhotoFactory(album=AlbumFactory(owner=account), image_bytes=130_000)

    fifth = Client()
    fifth.force_login(throwaway[4])
    busy = upload(fifth, AlbumFactory(owner=throwaway[4]), jpeg(400))  # new accounts' half is full

    assert busy.status_code == 429 and busy.json()["error"] == quotas.BUSY
    # an account of some standing is not held back by them
    assert upload(owner_client, AlbumFactory(owner=user), jpeg(400)).status_code == 201
    settings.VEIL_NEW_ACCOUNT_HOURS = 0  # a day later they are ordinary accounts within their share
    assert upload(fifth, AlbumFactory(owner=throwaway[4]), jpeg(400)).status_code == 201
