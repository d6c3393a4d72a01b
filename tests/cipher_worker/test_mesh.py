"""The face mesh on real photos: where its points land, what its measurements read."""

from __future__ import annotations

import functools
import importlib.util
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
from skimage import data as skdata

from cipher_worker.detect import FaceDetector
from cipher_worker.errors import VeilError
from cipher_worker.imageio import decode_image
from cipher_worker.mesh import FaceMesh, MeshResult, distinct, mesh_model_path
from tests.helpers import DATA

PHOTOS = ["person_a_1", "person_a_2", "person_b_1", "person_b_2", "impostor_1", "impostor_2", "astronaut"]


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector()


@pytest.fixture(scope="module")
def mesh() -> FaceMesh:
    return FaceMesh()


@functools.cache
def _pixels(name: str, flip: bool = False) -> np.ndarray:
    """Decoded once per session; callers must not write to it."""
    pixels = skdata.astronaut() if name == "astronaut" else decode_image((DATA / f"{name}.jpg").read_bytes()).pixels
    return np.ascontiguousarray(pixels[:, ::-1]) if flip else pixels


def _fit(name: str, detector: FaceDetector, mesh: FaceMesh, flip: bool = False) -> tuple[np.ndarray, MeshResult]:
    pixels = _pixels(name, flip)
    (face,) = detector.detect(pixels)
    return face.landmarks, mesh.fit(pixels, face.landmarks)


@pytest.mark.parametrize("name", PHOTOS)
def test_mesh_lands_on_the_detector_landmarks(name: str, detector: FaceDetector, mesh: FaceMesh) -> None:
    landmarks, result = _fit(name, detector, mesh)
    assert result.points.shape == (468, 3) and result.points.dtype == np.float64
    assert result.presence > 0.99
    iod = np.linalg.norm(landmarks[1] - landmarks[0])
    # eye centre = mean of the corners and mid-lids; YuNet's landmark 0 is the subject's right eye
    right = result.points[[33, 133, 159, 145], :2].mean(0)
    left = result.points[[263, 362, 386, 374], :2].mean(0)
    assert np.linalg.norm(right - landmarks[0]) < 0.15 * iod
    assert np.linalg.norm(left - landmarks[1]) < 0.15 * iod
    assert np.linalg.norm(result.points[4, :2] - landmarks[2]) < 0.2 * iod
    assert np.linalg.norm(result.points[61, :2] - landmarks[3]) < 0.25 * iod
    assert np.linalg.norm(result.points[291, :2] - landmarks[4]) < 0.25 * iod


@pytest.mark.parametrize("name", PHOTOS)
def test_face_oval_encloses_the_face(name: str, detector: FaceDetector, mesh: FaceMesh) -> None:
    landmarks, result = _fit(name, detector, mesh)
    oval = result.face_oval().astype(np.float32)
    assert oval.shape == (36, 2)
    for x, y in landmarks:
        assert cv2.pointPolygonTest(oval, (float(x), float(y)), True) > 0
    iod = np.linalg.norm(landmarks[1] - landmarks[0])
    # measured 3.9–5.5 on these photos: forehead to chin, cheek to cheek
    assert 3.0 < cv2.contourArea(oval) / iod**2 < 7.0
    # a simple polygon walked one way round: no self-crossing flips the sign of the area
    assert abs(cv2.contourArea(oval, oriented=True)) == pytest.approx(cv2.contourArea(oval))
    # forehead above the eyes, chin below the mouth
    assert oval[0, 1] < landmarks[:2, 1].min() and oval[18, 1] > landmarks[3:, 1].max()


@pytest.mark.parametrize("name", PHOTOS)
def test_open_eyes_and_mouth_read_plausibly(name: str, detector: FaceDetector, mesh: FaceMesh) -> None:
    _, result = _fit(name, detector, mesh)
    right, left = result.eye_openness()
    assert 0.15 < right < 0.45 and 0.15 < left < 0.45
    assert abs(right - left) < 0.08  # nobody here winks
    assert 0.0 <= result.mouth_openness() < 0.5
    assert -0.3 < result.smile() < 0.3


def test_a_smile_with_parted_lips_reads_higher_than_a_closed_mouth(detector: FaceDetector, mesh: FaceMesh) -> None:
    _, neutral = _fit("person_a_2", detector, mesh)  # lips closed, corners level
    _, smiling = _fit("person_b_1", detector, mesh)  # broad smile, teeth showing
    assert neutral.mouth_openness() < 0.1 < smiling.mouth_openness()
    assert smiling.smile() > neutral.smile() + 0.03


def test_head_pose_mirrors_with_the_photo(detector: FaceDetector, mesh: FaceMesh) -> None:
    for name in PHOTOS:
        _, result = _fit(name, detector, mesh)
        _, mirrored = _fit(name, detector, mesh, flip=True)
        yaw, pitch, roll = result.head_pose()
        m_yaw, m_pitch, m_roll = mirrored.head_pose()
        assert abs(pitch - m_pitch) < 5
        assert abs(roll + m_roll) < 3
        assert abs(yaw + m_yaw) < 5
        if abs(roll) > 2:
            assert np.sign(roll) == -np.sign(m_roll)
        # the mirror swaps the eyes
        assert mirrored.eye_openness() == pytest.approx(result.eye_openness()[::-1], abs=0.05)
    # the one clearly turned face: nose toward the image's left, so yaw < 0
    _, turned = _fit("person_a_2", detector, mesh)
    _, turned_back = _fit("person_a_2", detector, mesh, flip=True)
    assert turned.head_pose()[0] < -5 and turned_back.head_pose()[0] > 5


def test_roll_follows_a_rotated_photo(detector: FaceDetector, mesh: FaceMesh) -> None:
    pixels = _pixels("astronaut")
    base = mesh.fit(pixels, detector.detect(pixels)[0].landmarks).head_pose()
    centre = (pixels.shape[1] / 2, pixels.shape[0] / 2)
    # +15° in OpenCV is counter-clockwise on screen: the eye line tilts the other way
    rotated = cv2.warpAffine(pixels, cv2.getRotationMatrix2D(centre, 15, 1.0), pixels.shape[1::-1])
    pose = mesh.fit(rotated, detector.detect(rotated)[0].landmarks).head_pose()
    assert pose[2] - base[2] == pytest.approx(-15, abs=3)
    assert abs(pose[0] - base[0]) < 5 and abs(pose[1] - base[1]) < 5


def test_astronaut_faces_the_camera(detector: FaceDetector, mesh: FaceMesh) -> None:
    yaw, pitch, roll = _fit("astronaut", detector, mesh)[1].head_pose()
    assert abs(yaw) < 20 and abs(pitch) < 20 and abs(roll) < 10


def test_presence_is_low_away_from_a_face(detector: FaceDetector, mesh: FaceMesh) -> None:
    pixels = _pixels("astronaut")
    landmarks = detector.detect(pixels)[0].landmarks
    assert mesh.fit(pixels, landmarks + np.array([200.0, 250.0])).presence < 0.1  # the helmet
    assert mesh.fit(np.full_like(pixels, 128), landmarks).presence < 0.1


def test_fit_is_deterministic_and_thread_safe(detector: FaceDetector, mesh: FaceMesh) -> None:
    inputs = [(_pixels(name), detector.detect(_pixels(name))[0].landmarks) for name in PHOTOS]
    once = [mesh.fit(p, lm).points for p, lm in inputs]
    with ThreadPoolExecutor(4) as pool:
        again = list(pool.map(lambda args: mesh.fit(*args).points, inputs * 3))
    for i, points in enumerate(again):
        np.testing.assert_array_equal(points, once[i % len(inputs)])


def test_a_batch_of_faces_fits_as_each_face_alone(detector: FaceDetector, mesh: FaceMesh) -> None:
    inputs = [(_pixels(name), detector.detect(_pixels(name))[0].landmarks) for name in PHOTOS]
    batch = mesh.fit_all([p for p, _ in inputs], np.stack([lm for _, lm in inputs]))
    for (pixels, landmarks), result in zip(inputs, batch, strict=True):
        alone = mesh.fit(pixels, landmarks)
        np.testing.assert_allclose(result.points, alone.points, atol=1e-3)
        assert abs(result.presence - alone.presence) < 1e-4
    assert mesh.fit_all([], np.zeros((0, 5, 2))) == []


def test_rejects_what_is_not_an_rgb_image(mesh: FaceMesh) -> None:
    with pytest.raises(ValueError):
        mesh.fit(np.zeros((64, 64), np.uint8), np.zeros((5, 2)))
    with pytest.raises(ValueError):
        mesh.fit(np.zeros((64, 64, 3), np.float32), np.zeros((5, 2)))


def test_missing_model_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    assert mesh_model_path().is_file()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(VeilError, match=r"pip install --no-deps mediapipe==0\.10\.21"):
        mesh_model_path()


def _quarter(points: np.ndarray, width: int) -> np.ndarray:
    """(K, 2) points of an image of ``width`` → where they land in ``np.rot90`` of it."""
    return np.stack([points[:, 1], width - 1 - points[:, 0]], -1)


def test_a_face_given_points_a_quarter_off_is_found_turned(detector: FaceDetector, mesh: FaceMesh) -> None:
    """On a photo turned on its side YuNet can put a face's eyes and mouth a quarter turn off (as
    on facetorch's test4): the mesh finds no face there, then finds it in a turned ROI, and its own
    five points are the face's."""
    for name in ("person_a_2", "astronaut"):
        upright = _pixels(name)
        truth = detector.detect(upright)[0].landmarks
        turned = np.ascontiguousarray(np.rot90(upright))
        points = _quarter(truth, upright.shape[1])  # the face's own points in the turned photo
        centre = points.mean(0)
        wrong = (points - centre) @ np.array([[0.0, 1.0], [-1.0, 0.0]]) + centre  # a quarter off
        assert mesh.fit(turned, points).turned == 0
        found = mesh.fit(turned, wrong)
        assert found.turned != 0 and found.presence > 0.95
        eye_gap = np.linalg.norm(points[1] - points[0])
        assert np.linalg.norm(found.landmarks5() - points, axis=1).mean() < 0.15 * eye_gap


def test_one_face_boxed_twice_is_drawn_once_and_two_faces_stay_two(detector: FaceDetector, mesh: FaceMesh) -> None:
    """On a photo on its side YuNet can box one face twice, both times with points a quarter off
    (facetorch's test4): both fits find the face, and only one stranger may be drawn there."""
    upright = _pixels("astronaut")
    truth = detector.detect(upright)[0].landmarks
    turned = np.ascontiguousarray(np.rot90(upright))
    points = _quarter(truth, upright.shape[1])
    centre = points.mean(0)
    wrong = (points - centre) @ np.array([[0.0, 1.0], [-1.0, 0.0]]) + centre
    gap = np.linalg.norm(points[1] - points[0])
    twice = mesh.fit_all([turned] * 2, np.stack([wrong, wrong + np.array([0.4, 0.2]) * gap]))
    assert all(f.found for f in twice)
    assert len(distinct(twice)) == 1
    pair = np.ascontiguousarray(np.concatenate([upright[:, ::-1], upright], axis=1))  # face to face
    faces = detector.detect(pair)
    assert len(faces) == 2
    assert distinct(mesh.fit_all([pair] * 2, np.stack([f.landmarks for f in faces]))) == [0, 1]
