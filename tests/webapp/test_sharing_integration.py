"""Unlock with a real Celery worker: upload a real photo, open the share link's websocket, type a
recipient's password, and get the original face back, pixel for pixel; a wrong password is
refused; decoy mode shows other faces instead. Nothing recovered is left in Redis."""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import pytest
import redis
from asgiref.sync import async_to_sync
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from django.core.files.storage import default_storage
from django.test import Client
from django.urls import reverse

from cipher_worker import envelope
from cipher_worker.align import Alignment
from cipher_worker.codecs.dcgan64 import DCGAN64Codec
from cipher_worker.facemask import box_weights, stored_mask
from cipher_worker.imageio import decode_image
from tests.helpers import DATA
from webapp.albums.models import Album, Photo
from webapp.asgi import application
from webapp.sharing import protocol

from .factories import AlbumFactory
from .helpers import WAIT, Worker
from .test_sharing import GRANDMA, recipient

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PHOTO = DATA / "person_a_2.jpg"


def upload(worker: Worker, client: Client, album: Album) -> Photo:
    with PHOTO.open("rb") as f:
        response = client.post(reverse("albums:upload", args=[album.pk]), {"photos": f}, HTTP_ACCEPT="application/json")
    assert response.status_code == 201, response.content
    photo = worker.wait_for_photo(response.json()["photos"][0]["photo_id"])
    assert (photo.status, photo.faces) == ("done", 1), (photo.failure_reason, worker.output())
    return photo


def unlock(worker: Worker, album: Album, slot_id: int, password: str) -> tuple[list[dict[str, Any]], list[bytes]]:
    """The text messages and binary frames the share page receives, up to "finished" or a refusal."""
    # Each call runs in a new event loop; channels_redis keeps receive locks bound to the first one.
    channel_layers.backends.clear()
    ws = WebsocketCommunicator(
        application, f"/ws/share/{album.share_token}/", headers=[(b"origin", b"http://localhost")]
    )

    async def scenario() -> tuple[list[dict[str, Any]], list[bytes]]:
        connected, _ = await ws.connect()
        assert connected
        await ws.send_json_to({"type": "unlock", "data": {"slot": slot_id, "password": password}})
        messages: list[dict[str, Any]] = []
        frames: list[bytes] = []
        deadline = time.monotonic() + WAIT
        while not messages or messages[-1]["type"] not in (protocol.FINISHED, protocol.REFUSED):
            assert time.monotonic() < deadline, f"no answer after {WAIT:.0f} s: {messages}\n{worker.output()}"
            received = await ws.receive_from(timeout=WAIT)
            if isinstance(received, bytes):
                frames.append(received)
            else:
                messages.append(json.loads(received))
        await ws.disconnect()
        return messages, frames

    return async_to_sync(scenario)()


def face_pixels(photo: Photo, codec_id: str = DCGAN64Codec.id, crop_size: int = DCGAN64Codec.crop_size) -> np.ndarray:
    """(H, W) bool: the pixels the anonymizer replaced (the face mask), as the cipher's tests find them."""
    env = envelope.Envelope.from_bytes(bytes(photo.envelope))
    assert env.codec_id == codec_id
    touched = np.zeros((photo.height, photo.width), bool)
    for record in env.faces:
        x0, y0, x1, y1 = record.box
        alignment = Alignment(record.transform, crop_size)
        touched[y0:y1, x0:x1] |= box_weights(stored_mask(record.mask, crop_size), alignment, record.box) > 0
    return touched


def redis_holds(client: redis.Redis, needle: bytes) -> list[str]:
    """Keys of any type whose value contains ``needle``."""
    found = []
    for key in client.scan_iter():
        kind = client.type(key)
        if kind == b"string":
            values = [client.get(key) or b""]
        elif kind == b"list":
            values = client.lrange(key, 0, -1)
        elif kind == b"zset":
            values = client.zrange(key, 0, -1)
        elif kind == b"set":
            values = list(client.smembers(key))
        elif kind == b"hash":
            values = list(client.hvals(key))
        else:
            values = []
        if any(needle in value for value in values):
            found.append(key.decode())
    return found


@pytest.fixture(scope="module")
def worker_env() -> dict[str, str]:
    return {"VEIL_UNLOCK_FORMAT": "PNG"}  # recovered photos pixel for pixel, so the tests can compare them


@pytest.fixture(autouse=True)
def lossless(settings: Any) -> None:
    settings.VEIL_UNLOCK_FORMAT = "PNG"  # this process's consumer names the format


def test_a_recipient_unlocks_a_real_photo_and_sees_the_original_face_exactly(
    worker: Worker, owner_client: Client, user: Any, settings: Any, redis_db: redis.Redis
) -> None:
    settings.MEDIA_ROOT = str(worker.media_root)
    album = AlbumFactory(owner=user)
    slot = recipient(album)
    photo = upload(worker, owner_client, album)

    messages, frames = unlock(worker, album, slot.pk, GRANDMA)

    assert [m["type"] for m in messages] == ["unlock.started", "unlock.finished"], (messages, worker.output())
    assert messages[0]["data"]["photos"] == [str(photo.pk)]
    assert messages[1]["data"]["recovered"] == 1 and messages[1]["data"]["failed"] == 0
    [frame] = frames
    header, image = protocol.parse_photo_frame(frame)
    assert header["data"]["photo_id"] == str(photo.pk) and header["data"]["content_type"] == "image/png"

    recovered = decode_image(image).pixels
    original = decode_image(PHOTO.read_bytes()).pixels
    anonymized = decode_image(default_storage.open(photo.image.name).read()).pixels
    face = face_pixels(photo)
    assert recovered.shape == original.shape and face.sum() > 1000
    assert np.array_equal(recovered[face], original[face])  # the real face, pixel for pixel
    assert np.abs(anonymized[face].astype(np.int16) - original[face]).mean() > 8
    assert np.array_equal(recovered[~face], anonymized[~face])  # nothing else was touched

    # Nothing recovered stays anywhere: no transit entry, no key holding the image's bytes.
    assert redis_db.keys("veil:transit:*") == []
    assert redis_holds(redis_db, image[len(image) // 2 : len(image) // 2 + 64]) == []
    assert redis_holds(redis_db, original[face].tobytes()[:64]) == []
    stored = sorted(p.name for p in worker.media_root.rglob("*") if p.is_file())
    assert len(stored) == 2  # the anonymized photo and its thumbnail, nothing else
    slot.refresh_from_db()
    assert slot.last_unlocked_at is not None


def test_a_wrong_password_is_refused_and_decoy_mode_shows_other_faces(
    worker: Worker, owner_client: Client, user: Any, settings: Any
) -> None:
    settings.MEDIA_ROOT = str(worker.media_root)
    album = AlbumFactory(owner=user)
    slot = recipient(album)
    photo = upload(worker, owner_client, album)

    refused, frames = unlock(worker, album, slot.pk, "not grandma's password")

    assert frames == [] and refused[-1]["data"]["message"] == "That password does not open this album."

    album.decoy_mode = True
    album.save(update_fields=["decoy_mode"])
    messages, frames = unlock(worker, album, slot.pk, "not grandma's password")

    # Framed exactly like a real unlock: the page cannot tell.
    assert [m["type"] for m in messages] == ["unlock.started", "unlock.finished"], (messages, worker.output())
    [frame] = frames
    header, image = protocol.parse_photo_frame(frame)
    assert set(header["data"]) == {"session", "photo_id", "content_type"}
    decoy = decode_image(image).pixels
    original = decode_image(PHOTO.read_bytes()).pixels
    anonymized = decode_image(default_storage.open(photo.image.name).read()).pixels
    face = face_pixels(photo)
    difference = np.abs(decoy[face].astype(np.int16) - original[face].astype(np.int16)).mean()
    assert difference > 8, difference  # another face, not the real one
    assert not np.array_equal(decoy[face], anonymized[face])
    assert np.array_equal(decoy[~face], anonymized[~face])
    # The owner still sees the wrong tries; the right password still works afterwards.
    assert list(album.unlock_attempts.values_list("outcome", flat=True)) == ["wrong_password"] * 2
    _, frames = unlock(worker, album, slot.pk, GRANDMA)
    header, image = protocol.parse_photo_frame(frames[0])
    assert np.array_equal(decode_image(image).pixels[face], original[face])


def test_a_viewing_of_more_photos_than_its_page_holds_at_once_brings_them_all(
    worker: Worker, owner_client: Client, user: Any, settings: Any
) -> None:
    from webapp.sharing import sessions

    settings.MEDIA_ROOT = str(worker.media_root)
    album = AlbumFactory(owner=user)
    slot = recipient(album)
    photos = [upload(worker, owner_client, album) for _ in range(sessions.IN_FLIGHT + 2)]

    messages, frames = unlock(worker, album, slot.pk, GRANDMA)

    # the photos past the page's room went back to the queue until it had taken the ones before
    assert messages[-1]["data"] == {"session": messages[0]["data"]["session"], "recovered": len(photos), "failed": 0}
    got = {protocol.parse_photo_frame(frame)[0]["data"]["photo_id"] for frame in frames}
    assert got == {str(p.pk) for p in photos}, worker.output()
