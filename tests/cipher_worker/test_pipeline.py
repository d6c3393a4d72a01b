"""The photo pipeline on real photos, as a user of the CLI or web app would notice it."""

from __future__ import annotations

import dataclasses
import io

import cv2
import numpy as np
import pytest
from PIL import Image

from cipher_worker import envelope
from cipher_worker.align import Alignment
from cipher_worker.errors import CodecMismatch, EnvelopeError, EnvelopeTampered, WrongKey
from cipher_worker.facemask import box_weights, stored_mask
from cipher_worker.keys import generate_album_keypair
from tests.helpers import decode

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def group_exact(pipeline, album_keys, group_png):
    return pipeline.anonymize(group_png, album_keys[1], fmt="PNG")


def _touched(pipeline, env: envelope.Envelope, shape) -> np.ndarray:
    touched = np.zeros(shape[:2], bool)
    for record in env.faces:
        x0, y0, x1, y1 = record.box
        size = pipeline.codec.crop_size
        weights = box_weights(stored_mask(record.mask, size), Alignment(record.transform, size), record.box)
        touched[y0:y1, x0:x1] |= weights > 0
    return touched


def test_every_face_is_replaced_and_nothing_else_changes(pipeline, group_exact, group_png):
    assert len(group_exact.faces) == 3
    original, anonymized = decode(group_png), decode(group_exact.image)
    env = envelope.Envelope.from_bytes(group_exact.envelope)
    touched = _touched(pipeline, env, original.shape)
    assert np.array_equal(original[~touched], anonymized[~touched])
    for face in group_exact.faces:
        x0, y0, x1, y1 = face.box
        diff = np.abs(original[y0:y1, x0:x1].astype(int) - anonymized[y0:y1, x0:x1]).mean()
        assert diff > 8, "the face region must really change"


def test_exact_recovery_returns_the_original_pixels(pipeline, group_exact, group_png, album_keys):
    recovered = pipeline.recover(group_exact.image, group_exact.envelope, album_private=album_keys[0])
    assert recovered.faces == 3 and not recovered.decoy
    assert np.array_equal(recovered.pixels, decode(group_png))


def test_jpeg_output_restores_face_regions_exactly(pipeline, astronaut_jpeg, album_keys):
    result = pipeline.anonymize(astronaut_jpeg, album_keys[1])
    assert result.format == "JPEG" and len(result.faces) == 1
    recovered = pipeline.recover(result.image, result.envelope, album_private=album_keys[0]).pixels
    original = decode(astronaut_jpeg)
    env = envelope.Envelope.from_bytes(result.envelope)
    touched = _touched(pipeline, env, original.shape)
    assert np.array_equal(recovered[touched], original[touched])
    mse = ((recovered.astype(float) - original) ** 2).mean()
    assert 10 * np.log10(255**2 / mse) > 35  # the rest: JPEG quality


def test_latent_fidelity_stores_no_pixels_and_brings_back_one_face_whatever_the_key(pipeline, group_png, album_keys):
    """Two anonymizations draw different strangers; recovery from either brings back the same
    reconstruction of the original (only grain and colour matching differ). How close that
    reconstruction is to the real face is the encoder's quality, measured by ``eval``."""
    first, second = (pipeline.anonymize(group_png, album_keys[1], fidelity="latent", fmt="PNG") for _ in range(2))
    assert all(r.pixels is None for r in envelope.Envelope.from_bytes(first.envelope).faces)
    back = [pipeline.recover(r.image, r.envelope, album_private=album_keys[0]).pixels for r in (first, second)]
    strangers = [decode(r.image) for r in (first, second)]
    # compare without the photo's grain, which is drawn afresh each time
    back, strangers = ([cv2.GaussianBlur(p.astype(float), (0, 0), 2) for p in ps] for ps in (back, strangers))
    for face in first.faces:
        x0, y0, x1, y1 = face.box

        def diff(a, b, x0=x0, y0=y0, x1=x1, y1=y1):
            return np.abs(a[y0:y1, x0:x1] - b[y0:y1, x0:x1]).mean()

        assert diff(*strangers) > 8, "different keys draw different strangers"
        # the same reconstruction both times; its colours are matched to each stranger's skin, so
        # they differ a little (the stranger's colours were matched to the original's)
        assert diff(*back) < diff(*strangers) / 1.5, "the recovered face does not depend on the key"
        assert diff(back[0], strangers[0]) > 5, "the recovered face is not the stranger"


def test_wrong_key_is_refused(pipeline, group_exact):
    other_private, _ = generate_album_keypair()
    with pytest.raises(WrongKey):
        pipeline.recover(group_exact.image, group_exact.envelope, album_private=other_private)


def test_decoy_shows_other_faces_deterministically(pipeline, group_exact, group_png):
    other_private, _ = generate_album_keypair()
    first = pipeline.recover(
        group_exact.image, group_exact.envelope, album_private=other_private, decoy_password="guess"
    )
    again = pipeline.recover(group_exact.image, group_exact.envelope, album_private=None, decoy_password="guess")
    other = pipeline.recover(group_exact.image, group_exact.envelope, album_private=None, decoy_password="guess2")
    assert first.decoy
    assert np.array_equal(first.pixels, again.pixels)
    original, anonymized = decode(group_png), decode(group_exact.image)
    for face in group_exact.faces:
        x0, y0, x1, y1 = face.box
        region = first.pixels[y0:y1, x0:x1].astype(int)
        assert np.abs(region - original[y0:y1, x0:x1]).mean() > 5
        assert np.abs(region - anonymized[y0:y1, x0:x1]).mean() > 2
        assert np.abs(region - other.pixels[y0:y1, x0:x1]).mean() > 2


def test_tampered_envelope_is_detected(pipeline, group_exact, album_keys):
    env = envelope.Envelope.from_bytes(group_exact.envelope)
    record = env.faces[1]
    forged = dataclasses.replace(record, attributes=record.attributes + np.float32(0.5))
    tampered = dataclasses.replace(env, faces=(env.faces[0], forged, *env.faces[2:])).to_bytes()
    with pytest.raises(EnvelopeTampered):
        pipeline.recover(group_exact.image, tampered, album_private=album_keys[0])


def test_corrupted_envelope_is_a_clear_error(pipeline, group_exact, album_keys):
    with pytest.raises(EnvelopeError):
        pipeline.recover(
            group_exact.image, group_exact.envelope[: len(group_exact.envelope) // 3], album_private=album_keys[0]
        )


def test_envelope_from_another_codec_is_refused(pipeline, group_exact, album_keys):
    env = envelope.Envelope.from_bytes(group_exact.envelope)
    other = dataclasses.replace(env, codec_fingerprint=bytes(16)).to_bytes()
    with pytest.raises(CodecMismatch, match="codec"):
        pipeline.recover(group_exact.image, other, album_private=album_keys[0])


def test_envelope_of_another_image_is_refused(pipeline, group_exact, astronaut_jpeg, album_keys):
    with pytest.raises(EnvelopeError, match="image"):
        pipeline.recover(astronaut_jpeg, group_exact.envelope, album_private=album_keys[0])


def test_photo_without_faces_is_written_stripped(pipeline, album_keys):
    sky = np.zeros((300, 400, 3), np.uint8)
    sky[:] = (110, 160, 230)
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x8825] = {1: "N", 2: (51.0, 30.0, 0.0)}
    Image.fromarray(sky).save(buf, "JPEG", exif=exif.tobytes())
    result = pipeline.anonymize(buf.getvalue(), album_keys[1])
    assert result.faces == []
    assert not Image.open(io.BytesIO(result.image)).getexif()
    recovered = pipeline.recover(result.image, result.envelope, album_private=album_keys[0])
    assert recovered.faces == 0


def test_anonymized_faces_keep_their_place(pipeline, group_exact):
    """The strangers are still faces, where the originals were (detection rate, pose)."""
    found = pipeline.detector.detect(decode(group_exact.image))
    assert len(found) == 3
    for before, after in zip(group_exact.faces, found, strict=True):
        bx0, by0, bx1, by1 = before.box
        cx, cy = after.box[0] + after.box[2] / 2, after.box[1] + after.box[3] / 2
        assert bx0 < cx < bx1 and by0 < cy < by1


def test_recovery_with_the_opened_content_key(pipeline, group_exact, group_png, album_keys):
    """The web app opens the content key itself and sends only that to a worker."""
    from cipher_worker.keys import open_content_key

    env = envelope.Envelope.from_bytes(group_exact.envelope)
    content_key = open_content_key(env.sealed_content_key, album_keys[0])
    recovered = pipeline.recover(group_exact.image, group_exact.envelope, content_key=content_key)
    assert np.array_equal(recovered.pixels, decode(group_png))
    with pytest.raises(EnvelopeTampered):
        pipeline.recover(group_exact.image, group_exact.envelope, content_key=bytes(32))


class _WallDetector:
    """A detector that finds a face on a plain wall, as YuNet now and then does in a blurred crowd."""

    def detect(self, pixels: np.ndarray) -> list:
        from cipher_worker.detect import Face

        eyes_y, mouth_y = 180.0, 225.0
        points = np.array([[180.0, eyes_y], [220.0, eyes_y], [200.0, 202.0], [184.0, mouth_y], [216.0, mouth_y]])
        return [Face((150.0, 140.0, 100.0, 120.0), points, 0.7)]


def test_a_face_the_mesh_cannot_find_is_blurred_in_place_and_recovers_exactly(pipeline, album_keys):
    """No stranger is drawn onto what the mesh finds no face in (a wall, a profile it cannot fit):
    the region is blurred, keeping its colour, and it comes back bit for bit."""
    from cipher_worker.pipeline import Pipeline

    rng = np.random.default_rng(3)
    blotches = cv2.GaussianBlur(rng.normal(0, 1, (400, 400)).astype(np.float32), (0, 0), 4)
    texture = 150 + blotches / blotches.std() * 30 + rng.normal(0, 2, (400, 400))  # plaster, a little grain
    wall = np.clip(np.stack([texture, texture * 0.9, texture * 0.6], -1), 0, 255).astype(np.uint8)
    data = io.BytesIO()
    Image.fromarray(wall).save(data, "PNG")
    walled = Pipeline(pipeline.codec, detector=_WallDetector(), cipher=pipeline.cipher)
    assert not walled.mesh.fit(wall, _WallDetector().detect(wall)[0].landmarks).found
    result = walled.anonymize(data.getvalue(), album_keys[1], fmt="PNG")
    out = decode(result.image)
    env = envelope.Envelope.from_bytes(result.envelope)
    touched = _touched(walled, env, wall.shape)
    assert np.array_equal(out[~touched], wall[~touched])
    centre = (slice(185, 215), slice(185, 215))
    assert out[centre].astype(float).std(axis=(0, 1)).max() < 0.6 * wall[centre].astype(float).std(axis=(0, 1)).min()
    assert np.abs(out[centre].mean((0, 1)) - wall[centre].mean((0, 1))).max() < 6, "a blur, not a face"
    recovered = walled.recover(result.image, result.envelope, album_private=album_keys[0])
    assert np.array_equal(recovered.pixels, wall)
