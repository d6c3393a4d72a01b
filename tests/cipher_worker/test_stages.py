"""Detection, alignment, compositing and the codec, each on its own."""

from __future__ import annotations

import numpy as np
import pytest

from cipher_worker.align import Alignment, align, crop, paste_region, similarity
from cipher_worker.codecs.base import Latents
from cipher_worker.composite import EdgeMembrane, composite_face, lab_stats, match_colours, to_rgb
from cipher_worker.detect import FaceDetector
from cipher_worker.facemask import (
    EllipseMask,
    RasterMask,
    box_weights,
    crop_weights,
    face_box,
    face_mask,
    face_region,
    feathered,
    polygon_raster,
    template_face,
    template_skin,
)
from tests.helpers import DATA, decode


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


def test_detector_finds_faces_on_real_photos(astronaut_jpeg):
    detector = FaceDetector()
    faces = detector.detect(decode(astronaut_jpeg))
    assert len(faces) == 1
    x, y, w, h = faces[0].box
    assert 150 < x + w / 2 < 280 and 50 < y + h / 2 < 180
    for name in ("person_a_1.jpg", "impostor_1.jpg"):
        assert len(detector.detect(decode((DATA / name).read_bytes()))) == 1


def test_detector_finds_small_faces(astronaut_jpeg):
    """A face about 30 px wide in a large photo is still found."""
    from PIL import Image

    small = np.asarray(Image.fromarray(decode(astronaut_jpeg)).resize((128, 128)))
    canvas = np.full((1500, 2000, 3), 120, np.uint8)
    canvas[700:828, 900:1028] = small
    faces = FaceDetector(min_face=24).detect(canvas)
    assert len(faces) == 1 and faces[0].box[2] < 60


TEMPLATE = np.array([[22.7, 29.9], [40.8, 29.7], [31.4, 41.2], [24.4, 50.5], [39.3, 50.4]])


def _disc(centre: tuple[float, float], radius: float, points: int = 48) -> np.ndarray:
    angle = np.linspace(0, 2 * np.pi, points, endpoint=False)
    return np.stack([centre[0] + radius * np.cos(angle), centre[1] + radius * np.sin(angle)], -1)


def test_feathered_weights_reach_one_inside_and_never_leave_the_region():
    coverage = polygon_raster(_disc((64, 64), 40), 128, 128)
    weights = feathered(coverage, 8)
    assert weights[64, 64] == 1.0
    assert not weights[coverage < 0.5].any(), "the feather lies inside the outline"
    assert 0 < weights[64, 64 + 36] < 1  # within a feather's width of the edge


def test_a_face_region_grows_over_skin_to_the_hairline_but_not_over_hair_or_background():
    """A skin-coloured face (oval outline below the hairline) with a forehead above the outline,
    dark hair above that and a green background beside: the region takes the forehead, stops at
    the hair and never reaches the background, even where the outline itself overshoots."""
    skin, hair, background = (200, 150, 120), (40, 30, 20), (40, 160, 60)
    image = np.zeros((64, 64, 3), np.uint8)
    image[:] = background
    yy, xx = np.mgrid[:64, :64]
    face = ((xx - 32) / 14) ** 2 + ((yy - 36) / 20) ** 2 <= 1
    image[face] = skin
    image[(yy < 20) & face] = hair  # hair from row 20 up; the forehead is rows 20–25
    outline = _disc((32, 40), 13)  # the "mesh": from row 27 down, a little past the cheeks
    outline[:, 0] = 32 + (outline[:, 0] - 32) * 1.25  # overshooting the face sideways
    skin_weights = crop_weights(template_skin(TEMPLATE), 64)
    core = _disc((32, 40), 6)
    region = face_region(image, outline, core, skin_weights, side=64) >= 0.5
    assert region[23, 32], "the forehead up to the hairline is part of the face"
    assert not region[16, 32], "the hair is not"
    assert not region[40, 14] and not region[40, 50], "nor the background beside the cheeks"
    assert region[40, 32] and region[50, 32]


def test_a_face_region_keeps_its_features_where_they_are_not_skin_and_reach_the_hair():
    """Dark eye make-up running out to dark hair at the temples: no hole filling closes that gap,
    yet the eyes are the face's and must be replaced with it."""
    skin, dark = (200, 150, 120), (40, 30, 20)
    image = np.full((64, 64, 3), dark, np.uint8)
    yy, xx = np.mgrid[:64, :64]
    image[((xx - 32) / 16) ** 2 + ((yy - 34) / 22) ** 2 <= 1] = skin
    image[26:31, 10:54] = dark  # a band across both eyes and out to the hair beside the face
    outline = _disc((32, 36), 16)
    core = np.array([[20.0, 24], [44, 24], [40, 46], [24, 46]])  # brows, eyes, nose and lips
    skin_weights = crop_weights(template_skin(TEMPLATE), 64)
    region = face_region(image, outline, core, skin_weights, side=64) >= 0.5
    assert region[28, 24] and region[28, 40], "the eyes are part of the face"
    assert not region[28, 12] and not region[28, 52], "the hair beside it is not"


def test_a_face_mask_is_the_intersection_of_the_regions():
    a = polygon_raster(_disc((30, 32), 20), 64)  # crop pixels, drawn on a 128 raster
    b = polygon_raster(_disc((35, 32), 20), 64)
    assert a[64, 24] == 1 and b[64, 106] == 1
    mask = face_mask([a, b], 64, 2.0)
    assert mask.raster.shape == (128, 128) and mask.raster.dtype == np.uint8
    assert mask.raster[64, 64] == 255
    assert mask.raster[64, 24] == 0 and mask.raster[64, 106] == 0  # inside one region only
    crop_xy = np.array([[32.0, 32.0], [1.0, 32.0]])
    assert mask.weights(crop_xy).tolist() == [1.0, 0.0]


def test_colours_are_matched_to_the_target_skin_and_the_edge_to_the_photo():
    rng = np.random.default_rng(0)
    rendered = np.clip(rng.normal(90, 10, (64, 64, 3)), 0, 255).astype(np.uint8)
    photo = np.clip(rng.normal(170, 10, (64, 64, 3)), 0, 255).astype(np.uint8)
    skin = crop_weights(template_skin(TEMPLATE), 64)
    target = lab_stats(photo, skin)
    matched = to_rgb(match_colours(rendered, target, skin))
    assert np.abs(lab_stats(matched, skin)[:3] - target[:3]).max() < 2
    mask = face_mask([polygon_raster(_disc((32, 34), 22), 64)], 64, 3.0)
    weights = crop_weights(mask, 64)
    lab = match_colours(rendered, lab_stats(rendered, skin), skin)  # a dark face in a light photo
    edged = to_rgb(EdgeMembrane.around(photo, weights, target).apply(lab)).astype(float)
    ring = (weights > 0) & (weights < 0.3)
    assert abs(edged[ring].mean() - photo[ring].mean()) < abs(rendered[ring].mean() - photo[ring].mean()) / 2
    centre = weights == 1
    assert abs(edged[centre].mean() - rendered[centre].mean()) < 15, "the face keeps its matched colour"


def test_only_skin_beside_the_mask_pulls_the_edge_so_a_dark_collar_leaves_no_shadow():
    """Skin above the mask, a black collar below it: the edge meets the skin up top, and the chin
    keeps the render's own colour instead of growing a beard of the collar's."""
    rng = np.random.default_rng(0)
    photo = np.clip(rng.normal((200, 150, 120), 4, (64, 64, 3)), 0, 255).astype(np.uint8)
    photo[48:] = (15, 15, 20)  # the collar
    skin_weights = crop_weights(template_skin(TEMPLATE), 64)
    target = lab_stats(photo[:40], skin_weights[:40])
    mask = face_mask([polygon_raster(_disc((32, 30), 16), 64)], 64, 3.0)
    weights = crop_weights(mask, 64)
    rendered = np.clip(rng.normal((190, 140, 110), 4, (64, 64, 3)), 0, 255).astype(np.uint8)
    lab = match_colours(rendered, lab_stats(rendered, skin_weights), skin_weights)
    edged = to_rgb(EdgeMembrane.around(photo, weights, target).apply(lab)).astype(float)
    chin = (weights > 0) & (weights < 0.5) & (np.mgrid[:64, :64][0] > 40)
    assert chin.any()
    assert abs(edged[chin].mean() - rendered[chin].mean()) < 8, "no shadow from the collar"
    brow = (weights > 0) & (weights < 0.5) & (np.mgrid[:64, :64][0] < 20)
    assert abs(edged[brow].mean() - photo[brow].mean()) < abs(rendered[brow].mean() - photo[brow].mean())


def test_a_stranger_in_a_black_and_white_photo_is_black_and_white():
    rng = np.random.default_rng(0)
    rendered = np.clip(rng.normal((170, 110, 90), 12, (64, 64, 3)), 0, 255).astype(np.uint8)  # rosy, blotchy
    grey = np.repeat(np.clip(rng.normal(140, 15, (64, 64, 1)), 0, 255), 3, axis=-1).astype(np.uint8)
    skin = crop_weights(template_skin(TEMPLATE), 64)
    matched = to_rgb(match_colours(rendered, lab_stats(grey, skin), skin)).astype(int)
    assert np.abs(matched - matched.mean(-1, keepdims=True)).max() <= 1, "no colour is left"
    coloured = to_rgb(match_colours(rendered, lab_stats(rendered, skin), skin)).astype(int)
    assert np.abs(coloured - coloured.mean(-1, keepdims=True)).max() > 20, "a colour photo keeps its colours"


def test_a_rosy_render_in_pale_light_keeps_its_greys_grey():
    """Skin moves to the photo's pale chroma; the render's eye whites must not turn teal with it."""
    rng = np.random.default_rng(0)
    rendered = np.clip(rng.normal((200, 120, 100), 4, (64, 64, 3)), 0, 255).astype(np.uint8)  # rosy skin
    rendered[28:34, 18:26] = (225, 225, 225)  # an eye white
    pale = np.clip(rng.normal((180, 170, 165), 4, (64, 64, 3)), 0, 255).astype(np.uint8)
    skin = crop_weights(template_skin(TEMPLATE), 64)
    target = lab_stats(pale, skin)
    lab = match_colours(rendered, target, skin)
    assert np.abs(lab_stats(to_rgb(lab), skin)[1:3] - target[1:3]).max() < 2, "the skin takes the photo's chroma"
    white = lab[28:34, 18:26, 1:].mean((0, 1)) - 128.0
    assert np.abs(white).max() < 4, f"the eye white is tinted {white}"


@pytest.mark.parametrize("kind", ["raster", "ellipse (version 1)"])
def test_mask_is_zero_outside_and_compositing_leaves_the_rest_untouched(kind: str):
    template = TEMPLATE
    mask: RasterMask | EllipseMask
    if kind == "raster":
        mask = face_mask([polygon_raster(_disc((31.5, 38), 18), 64)], 64, 2.0)
    else:
        mask = template_face(template)
    weights = crop_weights(mask, 64)
    assert weights[38, 31] == 1.0 and weights[0, 0] == 0.0
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
    latents = codec.encode(crops, landmarks, np.array([[0.28, 0.1, 0.0, 0.0, -8.0]] * 2))
    assert latents.identity.shape == (2, codec.identity_dim) and latents.attributes.shape == (2, codec.attribute_dim)
    first = codec.render(latents, typical=False)
    assert first.shape == (2, codec.crop_size, codec.crop_size, 3) and first.dtype == np.uint8
    assert np.array_equal(
        first, codec.render(Latents(latents.identity.copy(), latents.attributes.copy()), typical=False)
    )
    assert isinstance(Alignment(a.matrix, 64).inverse, np.ndarray)
