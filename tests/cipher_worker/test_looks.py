"""Strangers a person accepts: they stay on the face, keep what a viewer expects of it, and photos
made before face-shaped masks still come back."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest
import torch

from cipher_worker import cipher, envelope, looks, strangers
from cipher_worker.agegender import AgeGender, AgeGenderJudge
from cipher_worker.facemask import OUTLINE_GROWTH
from cipher_worker.imageio import encode_image
from cipher_worker.mesh import FaceMesh
from tests.helpers import DATA, decode

pytestmark = pytest.mark.slow
OLD = DATA / "envelope_v1"


@pytest.fixture(scope="module")
def mesh() -> FaceMesh:
    return FaceMesh()


def _cameraman() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(np.repeat(data.camera()[..., None], 3, axis=-1))


@pytest.mark.parametrize("photo", ["cameraman (head turned 25°, looking down)", "astronaut"])
def test_nothing_changes_beyond_the_face_and_its_rim_of_skin(pipeline, album_keys, mesh, photo, monkeypatch):
    """The mask reaches past the mesh's outline over the face's own skin by at most
    OUTLINE_GROWTH of its size (and up the forehead to the hairline): never further, even
    beside a turned head, where the mesh's outline overshoots into the background."""
    from skimage import data

    _fixed_keys(monkeypatch)
    pixels = _cameraman() if photo.startswith("cameraman") else np.ascontiguousarray(data.astronaut()[..., :3])
    faces = pipeline.detector.detect(pixels)
    assert len(faces) == 1
    anonymized = decode(pipeline.anonymize(encode_image(pixels, "PNG"), album_keys[1], fmt="PNG").image)
    outline = looks.face_outline(mesh.fit(pixels, faces[0].landmarks), OUTLINE_GROWTH)
    off, changed = looks.off_face_share(pixels, anonymized, [outline])
    assert changed > 500, "the face was replaced"
    # the pipeline draws the forehead in the crop's frame (fitted to five landmarks), the judge in the
    # eyes' frame: a seam of a pixel or two along the hairline may fall between them
    assert off <= 0.015 * changed, f"{off} of {changed} changed pixels lie beyond the face's outline"


def _fixed_keys(monkeypatch) -> None:
    """The same content keys and nonces on every run, so a test sees the same strangers every time."""
    counter = itertools.count()
    monkeypatch.setattr(cipher, "random_content_key", lambda: next(counter).to_bytes(32, "little"))
    monkeypatch.setattr(cipher, "random_nonce", lambda: next(counter).to_bytes(16, "little"))


def _generated_faces(pipeline, count: int, seed: int = 0) -> list[np.ndarray]:
    """Faces the generator drew, 3× upscaled on a grey photo: their attributes are the generator's own."""
    z = torch.randn(count, 100, generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        crops = ((pipeline.codec.generator(z * 0.9).permute(0, 2, 3, 1).numpy() + 1) * 127.5).clip(0, 255)
    photos = []
    for face in crops.astype(np.uint8):
        canvas = np.full((320, 320, 3), 128, np.uint8)
        canvas[64:256, 64:256] = cv2.resize(face, (192, 192), interpolation=cv2.INTER_CUBIC)
        photos.append(canvas)
    return photos


def test_gender_age_eyes_and_mouth_of_a_face_survive_encryption(pipeline, album_keys, mesh, monkeypatch):
    """Faces the generator drew (so a judge can read them) keep their judged gender, age band and
    eye and mouth state under encryption."""
    _fixed_keys(monkeypatch)
    judge = AgeGenderJudge()
    kept = {"gender": [], "age": [], "eyes": [], "mouth": []}
    for photo in _generated_faces(pipeline, 8):
        faces = pipeline.detector.detect(photo)
        if len(faces) != 1:
            continue
        for _ in range(2):
            anonymized = decode(pipeline.anonymize(encode_image(photo, "PNG"), album_keys[1], fmt="PNG").image)
            after = pipeline.detector.detect(anonymized)
            assert len(after) == 1
            before_ag = judge.judge([photo], faces[0].landmarks[None])
            after_ag = judge.judge([anonymized], after[0].landmarks[None])
            if max(before_ag.male[0], 1 - before_ag.male[0]) >= looks.GENDER_SURE:
                kept["gender"].append((before_ag.male[0] >= 0.5) == (after_ag.male[0] >= 0.5))
            kept["age"].append(abs(before_ag.age[0] - after_ag.age[0]))
            state = looks.face_state(mesh.fit(photo, faces[0].landmarks))
            new_state = looks.face_state(mesh.fit(anonymized, after[0].landmarks))
            kept["eyes"].append(state.eyes_closed == new_state.eyes_closed)
            kept["mouth"].append(state.mouth_open == new_state.mouth_open)
    assert len(kept["age"]) >= 10 and len(kept["gender"]) >= 6
    rates = {what: float(np.mean(kept[what])) for what in ("gender", "eyes", "mouth")}
    age_gap = float(np.median(kept["age"]))
    # the generator's faces span a narrow band of ages, which the judge reads loosely: 10 years
    assert rates["gender"] >= 0.8 and rates["eyes"] >= 0.9 and rates["mouth"] >= 0.8 and age_gap <= 10, (rates, age_gap)


def test_the_stranger_closest_in_gender_and_age_is_chosen():
    original = AgeGender(np.array([0.02, 0.97, 0.5], np.float32), np.array([30, 60, 8], np.float32))
    # per face, three candidates: the middle one matches
    male = np.array([[0.9, 0.05, 0.99], [0.1, 0.95, 0.4], [0.99, 0.55, 0.01]], np.float32)
    age = np.array([[30, 33, 30], [60, 55, 60], [8, 10, 8]], np.float32)
    cost = strangers._gender_cost(original, male) + np.abs(age - original.age[:, None]) / 8.0
    assert np.argmin(cost, axis=1).tolist() == [1, 1, 1]


def test_photos_anonymized_before_face_shaped_masks_still_recover(pipeline):
    """Version-1 envelopes (ellipse masks, the 8-dimensional attribute split) made by the earlier Veil."""
    original = decode((OLD / "original.png").read_bytes())
    private = (OLD / "album.key").read_bytes()
    for fidelity in ("exact", "latent"):
        image, data = (OLD / f"{fidelity}.png").read_bytes(), (OLD / f"{fidelity}.envelope").read_bytes()
        assert envelope.Envelope.from_bytes(data).version == 1
        recovered = pipeline.recover(image, data, album_private=private).pixels
        if fidelity == "exact":
            assert np.array_equal(recovered, original)
        else:  # the same render of the same latents as the earlier Veil's, up to colour rounding
            earlier = decode((OLD / "latent.recovered.png").read_bytes()).astype(float)
            changed = np.any(earlier != original, axis=-1)
            mse = ((recovered[changed] - earlier[changed]) ** 2).mean()
            assert changed.sum() > 1000 and 10 * np.log10(255**2 / max(mse, 1e-9)) > 40


def test_foreseen_looks_agree_with_what_the_judges_measure_on_the_render(pipeline, mesh):
    """The appearance model reads a stranger's expression, pose and skin off the latent, on
    latents it was not trained on, as the mesh and the colour measure find them on the render."""
    from cipher_worker.codecs.appearance import LOOKS
    from cipher_worker.codecs.base import Latents
    from cipher_worker.composite import lab_stats

    codec = pipeline.codec
    rng = np.random.default_rng(12345)
    latents = Latents(rng.standard_normal((120, codec.identity_dim)), rng.standard_normal((120, codec.attribute_dim)))
    foreseen = codec.foresee(latents)
    renders = codec.render(latents, typical=True)
    meshes = [mesh.fit(image, codec.template) for image in renders]
    measured = {
        "mouth openness": [m.mouth_openness() for m in meshes],
        "yaw": [m.head_pose()[0] for m in meshes],
        "L": [lab_stats(image, pipeline.skin_weights)[0] for image in renders],
    }
    for name, values in measured.items():
        r = np.corrcoef(foreseen[:, LOOKS.index(name)], values)[0, 1]
        assert r >= 0.8, f"{name}: foreseen and measured correlate only {r:.2f}"


def test_the_shortlist_keeps_the_candidates_that_will_look_like_the_original():
    """Of five candidates, the one foreseen with the original's gender, open mouth, pose, skin and
    bare face comes first; one with a closed mouth, one turned the other way, one of the other
    gender and one with glasses come after it."""
    from cipher_worker.codecs.appearance import LOOKS

    original = strangers.Original(
        judged=AgeGender(np.array([0.05], np.float32), np.array([35.0], np.float32)),
        skin=np.array([[150.0, 140.0, 145.0, 10.0, 3.0, 3.0]]),
        layout=np.zeros((1, 8, 8)),
        probes=np.zeros((1, 6)),
        expression=np.array([[0.28, 0.25, 0.1, 15.0, -5.0]]),  # eyes open, mouth open, turned right
    )
    assert LOOKS[-6:] == tuple(strangers._PROBES), "the appearance model foresees the chooser's probes"
    alike = np.array([0.05, 0.28, 0.25, 0.1, 15, -5, 150, 140, 145, 0, 0, 0, 0, 0, 0], float)
    closed_mouth, turned_away, other_gender, glasses = alike.copy(), alike.copy(), alike.copy(), alike.copy()
    closed_mouth[2] = 0.02
    turned_away[4] = -15
    other_gender[0] = 0.97
    glasses[LOOKS.index("bridge")] = glasses[LOOKS.index("left temple")] = -40
    foreseen = np.stack([closed_mouth, turned_away, alike, other_gender, glasses])[None]
    assert strangers.shortlist(original, foreseen, 1).tolist() == [[2]]
    assert strangers.shortlist(original, foreseen, 4).shape == (1, 4)


def test_a_mouth_barely_past_the_threshold_counts_as_half_flipped():
    """An original whose mouth is just open (0.085) is better served by a stranger's mouth clearly
    open (0.11) than by one barely past the threshold (0.081), which the photo may read closed;
    a stranger clearly closed costs the whole flip."""
    from cipher_worker.looks import MOUTH_OPEN

    original = strangers.Original(
        judged=AgeGender(np.array([0.05], np.float32), np.array([35.0], np.float32)),
        skin=np.zeros((1, 6)),
        layout=np.zeros((1, 8, 8)),
        probes=np.zeros((1, 6)),
        expression=np.array([[0.28, 0.085, 0.1, 0.0, 0.0]]),
    )
    mouths = np.array([MOUTH_OPEN + 0.001, 0.11, 0.02])
    expression = np.tile(original.expression[:, None], (1, 3, 1))
    expression[0, :, 1] = mouths
    cost = strangers._expression_cost(original, expression, flip=2.0)[0]
    continuous = np.abs(mouths - 0.085) / strangers._EXPRESSION_SCALE[1]
    assert np.argmin(cost) == 1
    assert cost[0] - continuous[0] == pytest.approx(2.0 * (0.5 - 0.001 / strangers._STATE_BAND))  # about half
    assert cost[2] - continuous[2] == pytest.approx(2.0)
