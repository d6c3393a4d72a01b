"""The web app with the ``stylegan2`` codec: a real Celery worker configured by the environment
alone (VEIL_CODEC, VEIL_E4E_CKPT, VEIL_STYLEGAN2_CKPT, as a deployer sets them) anonymizes an
upload and recovers it for a recipient, with tiny random checkpoints in the published formats."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.core.files.storage import default_storage
from django.test import Client

from cipher_worker import envelope
from cipher_worker.imageio import decode_image
from tests.tiny_stylegan2 import SPEC, write_checkpoints
from webapp.sharing import protocol
from webapp.texts import MODEL_CHANGED

from .factories import AlbumFactory
from .helpers import Worker
from .test_sharing import GRANDMA, done_photo, recipient
from .test_sharing_integration import PHOTO, face_pixels, unlock, upload

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_checkpoints(tmp_path_factory.mktemp("stylegan2"))


@pytest.fixture(scope="module")
def worker_env(checkpoints: dict[str, Path]) -> dict[str, str]:
    return {
        "VEIL_CODEC": "stylegan2",
        "VEIL_E4E_CKPT": str(checkpoints["e4e"]),
        "VEIL_STYLEGAN2_CKPT": str(checkpoints["generator"]),
        "VEIL_UNLOCK_FORMAT": "PNG",  # recovered pixel for pixel, so the test can compare them
    }


def test_a_stylegan2_worker_anonymizes_and_a_recipient_gets_the_original_back(
    worker: Worker, owner_client: Client, user: Any, settings: Any
) -> None:
    settings.MEDIA_ROOT = str(worker.media_root)
    settings.VEIL_UNLOCK_FORMAT = "PNG"
    album = AlbumFactory(owner=user)
    slot = recipient(album)
    photo = upload(worker, owner_client, album)
    env = envelope.Envelope.from_bytes(bytes(photo.envelope))
    assert env.codec_id == "stylegan2" and len(env.faces[0].identity) == 3 * SPEC.style_dim

    messages, frames = unlock(worker, album, slot.pk, GRANDMA)
    assert [m["type"] for m in messages] == ["unlock.started", "unlock.finished"], (messages, worker.output())
    [frame] = frames
    recovered = decode_image(protocol.parse_photo_frame(frame)[1]).pixels
    original = decode_image(PHOTO.read_bytes()).pixels
    anonymized = decode_image(default_storage.open(photo.image.name).read()).pixels
    face = face_pixels(photo, "stylegan2", SPEC.size)
    assert face.sum() > 1000 and np.abs(anonymized[face].astype(np.int16) - original[face]).mean() > 8
    assert np.array_equal(recovered[face], original[face])


def test_a_photo_from_another_model_is_explained_to_the_viewer_and_logged_for_staff(
    worker: Worker, user: Any, settings: Any
) -> None:
    settings.MEDIA_ROOT = str(worker.media_root)
    album = AlbumFactory(owner=user)
    slot = recipient(album)
    photo, _ = done_photo(album)  # its envelope names another codec than the worker's stylegan2

    messages, frames = unlock(worker, album, slot.pk, GRANDMA)
    assert not frames
    failed = [m for m in messages if m["type"] == protocol.FAILED]
    assert [m["data"]["photo_id"] for m in failed] == [str(photo.pk)], messages
    assert failed[0]["data"]["message"] == MODEL_CHANGED
    assert messages[-1]["type"] == protocol.FINISHED and messages[-1]["data"]["failed"] == 1
    assert f"cannot recover photo {photo.pk}: this photo was anonymized with codec test" in worker.output()
