"""Nothing secret is left behind: after a real upload-and-unlock cycle (a real worker process,
the real Redis, the test database), scan every place Veil writes — the media root, temporary
directories, the database (its file, byte for byte, when it is SQLite; every row otherwise),
Redis, and the worker's log — for the original upload, the original face pixels, the photo's
content key, the album private key and the passwords.

The photo is made unique for this run (a seeded ±1 dither), so a copy of the test photo
elsewhere on the machine cannot be mistaken for a leak.
"""

from __future__ import annotations

import base64
import io
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from django.apps import apps
from django.conf import settings as django_settings
from django.core.files.storage import default_storage
from django.db import connection
from django.test import Client
from django.urls import reverse
from PIL import Image

from cipher_worker import envelope, keys
from cipher_worker.imageio import decode_image
from tests.helpers import DATA
from webapp.albums.models import Album, Photo
from webapp.sharing import protocol

from .factories import PASSPHRASE, AlbumFactory
from .helpers import Worker
from .test_sharing import GRANDMA, recipient
from .test_sharing_integration import face_pixels, redis_holds, unlock

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

MAX_SCANNED_FILE = 64 * 1024 * 1024


@pytest.fixture
def fresh_redis(redis_db: redis.Redis) -> redis.Redis:
    # the running worker's queue bindings live in this database: no per-test flush
    return redis_db


def unique_photo() -> tuple[bytes, np.ndarray]:
    """A JPEG of a real face no other file on this machine holds, and its decoded pixels."""
    pixels = decode_image((DATA / "person_a_2.jpg").read_bytes()).pixels
    dither = np.random.default_rng(secrets.randbits(32)).integers(-1, 2, pixels.shape)
    out = io.BytesIO()
    Image.fromarray((pixels.astype(np.int16) + dither).clip(0, 255).astype(np.uint8)).save(out, "PNG")
    data = out.getvalue()
    return data, decode_image(data).pixels


def forms(secret: bytes) -> list[bytes]:
    """A secret as raw bytes, hex and base64 (standard and URL-safe, unpadded)."""
    b64 = base64.b64encode(secret).rstrip(b"=")
    return [secret, secret.hex().encode(), b64, base64.urlsafe_b64encode(secret).rstrip(b"=")]


def slices(data: bytes, count: int = 4, size: int = 48) -> list[bytes]:
    step = max(1, (len(data) - size) // (count + 1))
    return [data[step * (i + 1) : step * (i + 1) + size] for i in range(count)]


def files_touched_since(root: Path, since: float) -> list[Path]:
    found = []
    for path in root.rglob("*"):
        try:
            info = path.stat()
            if path.is_file() and not path.is_symlink() and info.st_mtime >= since and info.st_size <= MAX_SCANNED_FILE:
                found.append(path)
        except OSError:  # vanished or unreadable while we walked: not ours
            continue
    return found


def holders(paths: list[Path], needles: dict[str, list[bytes]]) -> list[str]:
    hits = []
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError:
            continue
        hits += [f"{what} in {path}" for what, values in needles.items() if any(v in data for v in values)]
    return hits


def database_holders(needles: dict[str, list[bytes]]) -> list[str]:
    """Every row of every model, every field, as bytes."""
    hits = []
    for model in apps.get_models():
        for row in model.objects.all().values_list():
            blob = b"\x00".join(bytes(v) if isinstance(v, bytes | memoryview) else str(v).encode() for v in row)
            hits += [
                f"{what} in {model.__name__}" for what, values in needles.items() if any(v in blob for v in values)
            ]
    return hits


def test_an_upload_and_unlock_cycle_leaves_no_original_no_key_and_no_password(
    worker: Worker, owner_client: Client, user: Any, settings: Any, redis_db: redis.Redis
) -> None:
    started = time.time() - 1
    settings.MEDIA_ROOT = str(worker.media_root)
    album: Album = AlbumFactory(owner=user)
    slot = recipient(album)
    upload, original = unique_photo()

    response = owner_client.post(
        reverse("albums:upload", args=[album.pk]),
        {"photos": io.BytesIO(upload)},
        HTTP_ACCEPT="application/json",
    )
    assert response.status_code == 201, response.content
    photo: Photo = worker.wait_for_photo(response.json()["photos"][0]["photo_id"])
    assert (photo.status, photo.faces) == ("done", 1), (photo.failure_reason, worker.output())
    messages, frames = unlock(worker, album, slot.pk, GRANDMA)
    assert messages[-1]["type"] == protocol.FINISHED and len(frames) == 1, messages
    _, recovered_image = protocol.parse_photo_frame(frames[0])

    # What would be a leak, in every form it could take.
    private = album.key_slots.get(kind="owner").unwrap(PASSPHRASE)
    content_key = keys.open_content_key(envelope.Envelope.from_bytes(bytes(photo.envelope)).sealed_content_key, private)
    face = face_pixels(photo)
    needles = {
        "the original upload": slices(upload),
        "original face pixels": slices(original[face].tobytes()),
        "the recovered image": slices(recovered_image, count=8),
        "the content key": forms(content_key),
        "the album private key": forms(private),
        "a password": [GRANDMA.encode(), PASSPHRASE.encode()],
    }
    stored_file = default_storage.open(photo.image.name).read()
    # the stored photo and the recovered one share most pixels (all but the face): a slice of the
    # recovered one may be, by right, in the stored one too
    needles["the recovered image"] = [n for n in needles["the recovered image"] if n not in stored_file]
    assert needles["the recovered image"], "every slice of the recovered image is also in the anonymized one"
    stored = decode_image(stored_file).pixels
    assert np.abs(stored[face].astype(np.int16) - original[face]).mean() > 8  # the stored photo is anonymized

    leaks = holders(files_touched_since(worker.media_root, 0), needles)
    leaks += holders(files_touched_since(Path(tempfile.gettempdir()), started), needles)
    leaks += holders([worker.log], needles)
    db_name = connection.settings_dict["NAME"]
    if connection.vendor == "sqlite" and Path(str(db_name)).is_file():
        connection.close()  # flush to the file; the scan sees free pages too
        journal = [Path(f"{db_name}{suffix}") for suffix in ("-wal", "-shm")]
        leaks += holders([Path(str(db_name)), *(p for p in journal if p.is_file())], needles)
    leaks += database_holders(needles)
    for what, values in needles.items():
        leaks += [f"{what} in Redis key {key}" for value in values for key in redis_holds(redis_db, value)]
    assert redis_db.keys("veil:transit:*") == [] and redis_db.keys("veil:unlock-box:*") == []
    assert leaks == []
    assert Path(django_settings.MEDIA_ROOT) == worker.media_root


def test_no_log_line_names_a_share_token() -> None:
    import logging

    from webapp.logfilters import RedactShareLinks

    token = "Zq3vH8kP2mN7xW4yR9tB6cD1fG5hJ0sL"
    django_404 = logging.makeLogRecord({"name": "django.request", "msg": "Not Found: %s", "args": (f"/s/{token}/",)})
    socket = logging.makeLogRecord(
        {"name": "uvicorn.error", "msg": '%s - "WebSocket %s" [accepted]', "args": ("1.2.3.4:5", f"/ws/share/{token}/")}
    )
    [console] = [h for h in logging.getLogger().handlers if any(isinstance(f, RedactShareLinks) for f in h.filters)]
    uvicorn = logging.getLogger("uvicorn.error")  # uvicorn's own handlers sit on its parent logger

    assert console.filter(django_404) and uvicorn.filter(socket)
    assert console.format(django_404).endswith("Not Found: /s/…/")
    assert socket.getMessage() == '1.2.3.4:5 - "WebSocket /ws/share/…/" [accepted]'
