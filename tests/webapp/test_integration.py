"""Upload → a real Celery worker process → anonymized photo stored → "done" on the websocket.

The worker is a subprocess (``celery -A webapp worker``, prefork, one child that loads the
model at ``worker_process_init``) on the real Redis broker (database 14) and the test database.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
import redis
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from PIL import Image

from cipher_worker import carriers, envelope
from cipher_worker.errors import NoEnvelope
from cipher_worker.imageio import decode_image
from tests.helpers import DATA
from webapp.albums import transit
from webapp.albums.models import Photo
from webapp.asgi import application

from .factories import AlbumFactory
from .helpers import FINISHED, WAIT, Worker

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_a_real_photo_is_anonymized_by_a_worker_and_the_page_hears_done(
    worker: Worker, owner_client: Client, user: Any, settings: Any, redis_db: redis.Redis
) -> None:
    settings.MEDIA_ROOT = str(worker.media_root)
    album = AlbumFactory(owner=user)
    original = (DATA / "person_a_2.jpg").read_bytes()
    cookie = (
        b"cookie",
        f"{settings.SESSION_COOKIE_NAME}={owner_client.cookies[settings.SESSION_COOKIE_NAME].value}".encode(),
    )

    def post() -> Any:
        with (DATA / "person_a_2.jpg").open("rb") as f:
            return owner_client.post(
                reverse("albums:upload", args=[album.pk]), {"photos": f}, HTTP_ACCEPT="application/json"
            )

    async def upload_and_listen() -> tuple[str, list[str]]:
        ws = WebsocketCommunicator(application, "/ws/updates/", headers=[(b"origin", b"http://localhost"), cookie])
        connected, _ = await ws.connect()
        assert connected
        response = await sync_to_async(post)()
        assert response.status_code == 201, response.content
        photo_id = response.json()["photos"][0]["photo_id"]
        seen: list[str] = []
        deadline = time.monotonic() + WAIT
        while not seen or seen[-1] not in FINISHED:
            assert time.monotonic() < deadline, f"no result after {WAIT:.0f} s: {seen}\n{worker.output()}"
            message = await ws.receive_json_from(timeout=WAIT)
            if message["data"]["photo_id"] == photo_id:
                seen.append(message["data"]["status"])
        await ws.disconnect()
        return photo_id, seen

    photo_id, seen = async_to_sync(upload_and_listen)()

    assert seen[0] == "queued" and seen[-1] == "done", (seen, worker.output())
    assert {"detecting", "anonymizing"} <= set(seen)
    photo = Photo.objects.get(pk=photo_id)
    assert (photo.status, photo.faces, photo.format) == ("done", 1, "JPEG")
    assert not redis_db.exists(transit.transit_key(photo_id))

    stored = default_storage.open(photo.image.name).read()
    with pytest.raises(NoEnvelope):  # the envelope lives in the database, not in the file
        carriers.extract(stored)
    before, after = decode_image(original).pixels, decode_image(stored).pixels
    assert after.shape == before.shape == (photo.height, photo.width, 3)
    x0, y0, x1, y1 = envelope.Envelope.from_bytes(bytes(photo.envelope)).faces[0].box
    diff = np.abs(after.astype(np.int16) - before.astype(np.int16)).mean(axis=2)
    inside = diff[y0:y1, x0:x1].mean()
    outside = (diff.sum() - diff[y0:y1, x0:x1].sum()) / (diff.size - diff[y0:y1, x0:x1].size)
    assert inside > 8 and outside < 3, (inside, outside)

    thumbnail = Image.open(default_storage.open(photo.thumbnail.name))
    assert max(thumbnail.size) == 400
    page = owner_client.get(album.get_absolute_url()).content.decode()
    assert 'data-status="done"' in page and "1 face anonymized" in page


def test_a_file_that_is_not_a_photo_is_refused_before_it_is_queued(
    owner_client: Client, user: Any, redis_db: redis.Redis
) -> None:
    """Whatever its name and declared type say: its content decides, and nothing is kept."""
    album = AlbumFactory(owner=user)
    notes = b"shopping list: milk, eggs, a new camera"

    response = owner_client.post(
        reverse("albums:upload", args=[album.pk]),
        {"photos": SimpleUploadedFile("holiday.jpg", notes, content_type="image/jpeg")},
        HTTP_ACCEPT="application/json",
    )

    assert response.status_code == 400
    assert "“holiday.jpg”: the file is not an image Veil can read" in response.json()["error"]
    assert not album.photos.exists() and not redis_db.keys(transit.transit_key("*"))


def _bomb_png(width: int, height: int) -> bytes:
    """A complete PNG of width×height black pixels that is a few hundred KB on disk."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    packer = zlib.compressobj(9)
    row = b"\0" * (width // 8 + 1)
    body = b"".join(packer.compress(row * 1000) for _ in range(height // 1000)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("name", "data", "status", "reason"),
    [
        ("empty.jpg", b"", 400, "the file is empty"),
        ("bomb.png", _bomb_png(20_000, 10_000), 413, "the image is too large (200 MP); the limit is 64 MP"),
    ],
)
def test_an_empty_file_and_a_decompression_bomb_are_refused_from_their_headers(
    owner_client: Client, user: Any, name: str, data: bytes, status: int, reason: str
) -> None:
    """The web process reads only the header (no pixels are decoded there) and queues nothing."""
    album = AlbumFactory(owner=user)
    response = owner_client.post(
        reverse("albums:upload", args=[album.pk]),
        {"photos": SimpleUploadedFile(name, data, content_type="image/png")},
        HTTP_ACCEPT="application/json",
    )
    assert response.status_code == status and response.json()["error"] == f"“{name}”: {reason}."
    assert not album.photos.exists()


def test_a_photo_that_breaks_off_fails_in_the_worker_with_a_reason(
    worker: Worker, owner_client: Client, user: Any
) -> None:
    """Its header is a JPEG's, so it is queued; decoding it is the worker's, which says why it failed."""
    album = AlbumFactory(owner=user)
    whole = (DATA / "person_a_1.jpg").read_bytes()
    response = owner_client.post(
        reverse("albums:upload", args=[album.pk]),
        {"photos": SimpleUploadedFile("cut.jpg", whole[: len(whole) // 3], content_type="image/jpeg")},
        HTTP_ACCEPT="application/json",
    )
    assert response.status_code == 201, response.content
    photo = worker.wait_for_photo(response.json()["photos"][0]["photo_id"])
    assert (photo.status, photo.retryable) == ("failed", False), worker.output()
    assert photo.failure_reason.startswith("the image is truncated or corrupt")
    assert not photo.image and not photo.thumbnail
