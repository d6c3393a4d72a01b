"""Detection, alignment, compositing and the codec, each on its own."""

from __future__ import annotations

import numpy as np
import pytest

from cipher_worker.align import Alignment, align, crop, paste_region, similarity
from cipher_worker.codecs.base import Latents
from cipher_worker.composite import FaceMask, box_weights, composite_face, face_box
from cipher_worker.detect import FaceDetector
from tests.conftest import decode


def test_similarity_recovers_a_known_transform():
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 100, (5, 2))
    angle, scale, shift = 0.3, 0.4, np.array([7.0, -3.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    matrix = similarity(src, src @ rot.T + shift)
    assert np.allclose(matrix[:, :2], rot) and np.allclose(matrix[:, 2], shift)


def test_crop_and_paste_back_are_inverse_on_smooth_images():
    yy, xx = np.mgrid[:400, :400]
    image = np.stack([xx * 0.5, yy * 0.5, (xx + yy) * 0.25], -1).astype(np.uint8)
    template = np.array([[22.7, 29.9], [40.8, 29.7], [31.4, 41.2], [24.4, 50.5], [39.3, 50.4]])
    a = align(template * 4 + 50, template, 64)
    assert a.scale == pytest.approx(0.25)
    small = crop(image, a)
    box = (80, 80, 280, 280)
    back = paste_region(small, a, box)
    assert np.abs(back.astype(int) - image[80:280, 80:280]).mean() < 2


def test_detector_finds_faces_on_real_photos(data_dir, astronaut_jpeg):
    detector = FaceDetector()
    faces = detector.detect(decode(astronaut_jpeg))
    assert len(faces) == 1
    x, y, w, h = faces[0].box
    assert 150 < x + w / 2 < 280 and 50 < y + h / 2 < 180
    for name in ("person_a_1.jpg", "impostor_1.jpg"):
        assert len(detector.detect(decode((data_dir / name).read_bytes()))) == 1


def test_detector_finds_small_faces(astronaut_jpeg):
    """A face about 30 px wide in a large photo is still found."""
    from PIL import Image

    small = np.asarray(Image.fromarray(decode(astronaut_jpeg)).resize((128, 128)))
    canvas = np.full((1500, 2000, 3), 120, np.uint8)
    canvas[700:828, 900:1028] = small
    faces = FaceDetector(min_face=24).detect(canvas)
    assert len(faces) == 1 and faces[0].box[2] < 60


def test_mask_is_zero_outside_and_compositing_leaves_the_rest_untouched():
    template = np.array([[22.7, 29.9], [40.8, 29.7], [31.4, 41.2], [24.4, 50.5], [39.3, 50.4]])
    mask = FaceMask.for_template(template)
    weights = mask.crop_weights(64)
    assert weights[int(mask.cy), int(mask.cx)] == 1.0 and weights[0, 0] == 0.0
    a = align(template * 3 + 100, template, 64)
    image = np.random.default_rng(0).integers(0, 255, (500, 500, 3), dtype=np.uint8)
    before = image.copy()
    box = face_box(mask, a, (500, 500))
    used = composite_face(image, np.zeros((64, 64, 3), np.uint8), a, mask, box, np.random.default_rng(0))
    assert np.array_equal(used, box_weights(mask, a, box))
    changed = np.any(image != before, axis=-1)
    x0, y0, x1, y1 = box
    outside = np.ones_like(changed)
    outside[y0:y1, x0:x1] = used == 0
    assert not changed[outside].any() and changed.sum() > 1000


@pytest.mark.slow
def test_codec_renders_deterministically_and_keeps_shapes(pipeline, astronaut_jpeg):
    codec = pipeline.codec
    image = decode(astronaut_jpeg)
    face = pipeline.detector.detect(image)[0]
    a = align(face.landmarks, codec.template, codec.crop_size)
    crops = np.stack([crop(image, a)] * 2)
    landmarks = np.stack([face.landmarks @ a.matrix[:, :2].T + a.matrix[:, 2]] * 2)
    latents = codec.encode(crops, landmarks)
    assert latents.identity.shape == (2, codec.identity_dim) and latents.attributes.shape == (2, codec.attribute_dim)
    first = codec.render(latents, typical=False)
    assert first.shape == (2, codec.crop_size, codec.crop_size, 3) and first.dtype == np.uint8
    assert np.array_equal(
        first, codec.render(Latents(latents.identity.copy(), latents.attributes.copy()), typical=False)
    )
    assert isinstance(Alignment(a.matrix, 64).inverse, np.ndarray)
