"""Evaluation: the identity judges agree with people about real photos, and ``eval`` reports."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest

from cipher_worker.detect import Face, FaceDetector
from cipher_worker.imageio import decode_image
from lab.facemetrics import (
    DLIB_SAME_PERSON,
    SFACE_SAME_PERSON,
    DlibRecogniser,
    SFaceRecogniser,
    largest_face,
    match_faces,
    upright,
)
from tests.helpers import DATA


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector()


def _photo(name: str, detector: FaceDetector) -> tuple[np.ndarray, Face]:
    pixels = decode_image((DATA / name).read_bytes()).pixels
    face = largest_face(detector.detect(pixels))
    assert face is not None, f"no face found in {name}"
    return pixels, face


def test_sface_knows_the_same_person_across_years_and_tells_an_impostor(detector: FaceDetector) -> None:
    sface = SFaceRecogniser()
    young, old, impostor = (_photo(n, detector) for n in ("person_a_1.jpg", "person_a_2.jpg", "impostor_1.jpg"))
    assert sface.similarity(*young, *old) >= SFACE_SAME_PERSON
    assert sface.similarity(*young, *impostor) < SFACE_SAME_PERSON
    assert sface.similarity(*old, *impostor) < SFACE_SAME_PERSON


def test_dlib_second_opinion_agrees_or_says_it_is_unavailable(detector: FaceDetector) -> None:
    judge = DlibRecogniser()
    if not judge.available:
        assert judge.reason
        pytest.skip(judge.reason)
    a1, a2, impostor = (_photo(n, detector) for n in ("person_a_1.jpg", "person_a_2.jpg", "impostor_1.jpg"))
    same, other = judge.distance(*a1, *a2), judge.distance(*a1, *impostor)
    assert same is not None and other is not None
    assert same < DLIB_SAME_PERSON <= other


def test_faces_are_matched_by_overlap_not_by_order(detector: FaceDetector) -> None:
    _, face = _photo("person_b_1.jpg", detector)
    x, y, w, h = face.box
    shifted = dataclasses.replace(face, box=(x + 5, y, w, h))
    far = dataclasses.replace(face, box=(x + 10 * w, y, w, h))
    assert match_faces([face], [far, shifted]) == [1]
    assert match_faces([face], [far]) == [None]


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """A folder with one bundled photo (the evaluation adds the astronaut itself)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(DATA / "person_b_1.jpg", folder)
    return folder


@pytest.mark.slow
def test_run_evaluation_reports_every_metric_and_writes_markdown(images: Path, tmp_path: Path) -> None:
    from lab.evaluate import run_evaluation

    report = tmp_path / "eval.md"

    result = run_evaluation(images, report)

    assert result["photos"] == 2  # the astronaut and our photo
    assert result["faces"] >= 2
    for key in (
        "reidentification_rate_sface",
        "reidentification_rate_dlib",
        "detection_rate",
        "landmark_displacement",
        "diversity",
        "exact_recovery",
        "exact_max_abs_diff",
        "latent_psnr",
        "latent_ssim",
        "anonymized_psnr",
        "anonymized_ssim",
        "key_algebra",
        "summary",
        "gender_kept_rate",
        "age_gap_median",
        "eyes_flipped_rate",
        "mouth_flipped_rate",
        "skin_delta_e_median",
        "off_face_rate",
    ):
        assert key in result, key
    # what a viewer sees is measured, not assumed: rates in range, a positive age gap, and the
    # off-face share is a share of pixels that really changed
    for key in ("gender_kept_rate", "eyes_flipped_rate", "mouth_flipped_rate", "off_face_rate"):
        assert result[key] is not None and 0.0 <= result[key] <= 1.0, key
    assert result["gender_samples"] >= 1
    assert 0.0 < result["age_gap_median"] < 80 and 0.0 < result["skin_delta_e_median"] < 100
    sheet = tmp_path / "looks.png"
    assert result["contact_sheet"] == str(sheet) and sheet.stat().st_size > 10_000
    assert result["exact_recovery"] is True and result["exact_max_abs_diff"] == 0
    algebra = result["key_algebra"]
    assert algebra["p1_then_p2_bit_exact"] and algebra["p2_then_p1_bit_exact"] and algebra["combined_bit_exact"]
    text = report.read_text()
    assert "| metric | value | target | pass |" in text
    assert "person_b_1.jpg" in text
    assert "gender kept" in text and "looks.png" in text


def test_dlib_reads_a_face_on_its_side_as_the_same_face(detector: FaceDetector) -> None:
    dlib = DlibRecogniser()
    if not dlib.available:
        pytest.skip(dlib.reason)
    pixels = decode_image((DATA / "person_a_2.jpg").read_bytes()).pixels
    face = detector.detect(pixels)[0]
    turned, points = pixels, face.landmarks
    corners = np.array([face.box[:2], np.add(face.box[:2], face.box[2:])])
    for _ in range(3):  # a quarter turn at a time, as np.rot90 turns
        width = turned.shape[1]
        points = np.stack([points[:, 1], width - 1 - points[:, 0]], -1)
        corners = np.stack([corners[:, 1], width - 1 - corners[:, 0]], -1)
        turned = np.ascontiguousarray(np.rot90(turned))
        lo, hi = corners.min(0), corners.max(0)
        on_side = Face((*lo, *(hi - lo)), points, face.score)
        _, level = upright(turned, on_side)
        assert abs(level.landmarks[1, 1] - level.landmarks[0, 1]) < abs(level.landmarks[1, 0] - level.landmarks[0, 0])
        distance = dlib.distance(pixels, face, turned, on_side)
        assert distance is not None and distance < 0.1


@pytest.mark.slow
def test_the_cipher_table_measures_every_cipher_on_the_same_photos(images: Path, tmp_path: Path) -> None:
    from lab.cipher_table import ROWS, run_table

    out = tmp_path / "ciphers.md"

    table = run_table(images, out, keys_per_face=2, seed=3, ciphers=("torus", "ifadit"))

    torus, ifadit = table["columns"]["torus"], table["columns"]["ifadit"]
    assert torus["faces"] == ifadit["faces"] >= 2 and torus["algebra"] == "exact-group"
    assert torus["key_algebra"]["combined_bit_exact"] and ifadit["key_algebra"]["combined_bit_exact"] is None
    assert torus["weights_bytes"] == 0 < ifadit["weights_bytes"]
    for column in (torus, ifadit):  # the right key brings back the codec's own face, and both are timed
        assert column["key_algebra"]["right_key_max_error"] < 1e-6
        assert column["key_algebra"]["right_key_sface_cosine_min"] > 0.99
        assert column["cipher_ms_per_face"] > 0 and column["anonymize_ms_per_face"] > 0
    # a learned cipher draws other strangers from the same keys than the torus cipher
    assert torus["sface_cosine_mean"] != ifadit["sface_cosine_mean"]
    text = out.read_text()
    assert all(label in text for label, _ in ROWS) and "| torus | ifadit |" in text


@pytest.mark.slow
def test_the_cipher_table_measures_fit_on_its_crops(images: Path, tmp_path: Path) -> None:
    """FIT is a pixel cipher: its right key is measured against the original crop (0–255
    units), it has no combined keys, and its column reads so."""
    from cipher_worker.ciphers.fit import ROUND_TRIP_TOLERANCE
    from lab.cipher_table import run_table

    out = tmp_path / "ciphers.md"
    fit = run_table(images, out, keys_per_face=2, seed=3, ciphers=("fit",))["columns"]["fit"]
    algebra = fit["key_algebra"]
    assert fit["algebra"] == "none" and algebra["space"] == "pixels" and fit["faces"] >= 2
    assert 0 < algebra["right_key_max_error"] <= ROUND_TRIP_TOLERANCE
    assert algebra["right_key_sface_cosine_min"] > 0.5 and algebra["combined_bit_exact"] is None
    assert fit["cipher_ms_per_face"] > 0 and fit["weights_bytes"] > 0
    text = out.read_text()
    assert "| fit |" in text and "crop error ≤" in text
